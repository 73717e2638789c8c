"""HRV vote accumulation (spec section 1): one vote per (prompt, UNet evaluation, head).

At every UNet evaluation and CA layer, each concept gets one of its words, drawn from the
table ``numpy.random.default_rng([seed, prompt_index]).integers(0, n_words, size=(T, L, N))``
(entry [evaluation, layer, concept]), so votes do not depend on sharding or batching. The words' token
embeddings (each word encoded alone; the SOT embedding kept at the front by default) are
projected with the layer's ``to_k``; the conditional-half queries attend over the concatenation
with one softmax; the result is averaged over pixels and over a word's tokens, and each head
votes for its argmax concept. Votes are reduced on the device into ``counts[t, c, h]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from hrv.attention import Controller, installed
from hrv.concepts import ConceptSet
from hrv.determinism import make_batch_invariant
from hrv.heads import CALayer, HeadRegistry
from hrv.models import initial_latents


@dataclass
class WordBank:
    """Token embeddings of every concept-word, each word encoded alone by the pipeline."""

    embeddings: torch.Tensor  # (1 + total tokens, D): row 0 = SOT, then each word's tokens
    word_tokens: np.ndarray  # (N, max_words, max_tokens) rows of `embeddings`, -1 = padding
    n_words: np.ndarray  # (N,)
    n_tokens: np.ndarray  # (N, max_words)

    @classmethod
    def build(cls, pipe, concepts: ConceptSet) -> WordBank:
        words = [w for ws in concepts.words for w in ws]
        with torch.no_grad():
            embeds = pipe.encode_prompt(
                prompt=words, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )[0]
        lengths = [len(pipe.tokenizer(w, add_special_tokens=False).input_ids) for w in words]
        limit = embeds.shape[1] - 2  # SOT and EOT take two positions
        rows, word_rows = [embeds[0, :1]], []
        next_row = 1
        for i, n in enumerate(lengths):
            n = max(1, min(n, limit))
            rows.append(embeds[i, 1 : 1 + n])
            word_rows.append(list(range(next_row, next_row + n)))
            next_row += n
        n_concepts = len(concepts)
        max_words = max(len(ws) for ws in concepts.words)
        max_tokens = max(len(r) for r in word_rows)
        table = np.full((n_concepts, max_words, max_tokens), -1, dtype=np.int64)
        n_tok = np.ones((n_concepts, max_words), dtype=np.int64)
        k = 0
        for c, ws in enumerate(concepts.words):
            for w in range(len(ws)):
                table[c, w, : len(word_rows[k])] = word_rows[k]
                n_tok[c, w] = len(word_rows[k])
                k += 1
        n_words = np.array([len(ws) for ws in concepts.words], dtype=np.int64)
        return cls(torch.cat(rows), table, n_words, n_tok)


def word_choices(
    seed: int, prompt_index: int, n_evals: int, n_layers: int, n_words: np.ndarray
) -> np.ndarray:
    """(T, L, N) word index per (evaluation, layer, concept): a pure function of its arguments.

    One generator per prompt, ``default_rng([seed, prompt_index])``, draws the table in C order
    (evaluation, layer, concept), so entry (t, l) never depends on ``n_evals`` or on batching.
    (One generator per (t, l) cost ~40 us each, 1.7% of the accumulation time on the tiny model.)
    """
    rng = np.random.default_rng([seed, prompt_index])
    return rng.integers(0, n_words, size=(n_evals, n_layers, len(n_words)))


class VoteMeasure:
    """Counts votes ``counts[t, c, h]`` on the device for the prompts of the current batch."""

    def __init__(self, registry: HeadRegistry, bank: WordBank, n_evals: int, device, keep_sot: bool = True):
        self.registry = registry
        self.bank = bank
        self.n_evals = n_evals
        self.keep_sot = keep_sot
        self.n_concepts = bank.word_tokens.shape[0]
        self.counts = torch.zeros(
            (n_evals, self.n_concepts, registry.n_heads), dtype=torch.int64, device=device
        )
        self._keys: dict[int, torch.Tensor] = {}
        self._head_base: dict[int, torch.Tensor] = {}
        self._ones = torch.ones(0, dtype=torch.int64, device=device)  # index_add_ increments, grown per batch
        self._max_heads = max(layer.heads for layer in registry.layers)
        self.device = device
        n, _, max_tok = bank.word_tokens.shape
        # before packing, slot s > 0 belongs to concept (s - 1) // max_tok; slot 0 is SOT (dummy concept n)
        self._slot_concept = np.array([n] + [c for c in range(n) for _ in range(max_tok)], dtype=np.int64)
        self._width = 1 + int(bank.n_tokens.max(axis=1).sum())

    def set_batch(self, seed: int, prompt_indices: Sequence[int]) -> None:
        """Build the token-slot tables of a batch: (T, L, B, slots) indices, weights and mask."""
        bank, n_layers = self.bank, len(self.registry.layers)
        choices = np.stack(
            [word_choices(seed, i, self.n_evals, n_layers, bank.n_words) for i in prompt_indices], axis=2
        )  # (T, L, B, N)
        n = self.n_concepts
        rows = bank.word_tokens[np.arange(n), choices]  # (T, L, B, N, max_tok)
        ntok = bank.n_tokens[np.arange(n), choices]  # (T, L, B, N)
        T, L, B = choices.shape[:3]
        rows = rows.reshape(T, L, B, -1)
        weights = np.where(rows >= 0, 1.0 / np.repeat(ntok, bank.word_tokens.shape[2], axis=-1), 0.0)
        sot = np.zeros((T, L, B, 1), dtype=np.int64)
        idx = np.concatenate([sot, np.maximum(rows, 0)], axis=-1)
        pad = np.concatenate([np.full((T, L, B, 1), not self.keep_sot), rows < 0], axis=-1)
        w = np.concatenate([np.zeros((T, L, B, 1)), weights], axis=-1)
        conc = np.broadcast_to(self._slot_concept, idx.shape)
        # pack the used slots first and keep a fixed width (SOT + each concept's longest word): fewer
        # columns than the global longest word times N, and the same for every batch composition,
        # so that results stay independent of batching
        take = np.argsort(pad, axis=-1, kind="stable")[..., : self._width]
        self._idx = torch.from_numpy(np.take_along_axis(idx, take, -1)).to(self.device)
        pad = np.take_along_axis(pad, take, -1)
        bias = np.where(pad, -np.inf, 0.0).astype(np.float32)[:, :, :, None, None, :]
        self._bias = torch.from_numpy(bias).to(self.device)  # (T, L, B, 1, 1, slots)
        self._w = torch.from_numpy(np.take_along_axis(w, take, -1).astype(np.float32)).to(self.device)
        if self._ones.numel() < B * self._max_heads:
            self._ones = torch.ones(B * self._max_heads, dtype=torch.int64, device=self.device)
        self._conc = torch.from_numpy(np.take_along_axis(conc, take, -1)).to(self.device)

    def _layer_keys(self, attn, layer: CALayer) -> torch.Tensor:
        """(rows, heads, d) float32 keys of every bank row, with the softmax scale folded in."""
        keys = self._keys.get(layer.position)
        if keys is None:
            with torch.no_grad():
                emb = self.bank.embeddings.to(device=self.device, dtype=attn.to_k.weight.dtype)
                if attn.norm_cross:
                    emb = attn.norm_encoder_hidden_states(emb)
                k = attn.to_k(emb)
                keys = k.view(k.shape[0], attn.heads, -1)
                if attn.norm_k is not None:
                    keys = attn.norm_k(keys.transpose(0, 1)).transpose(0, 1)
            keys = keys.float() * attn.scale
            self._keys[layer.position] = keys
            self._head_base[layer.position] = layer.offset + torch.arange(attn.heads, device=self.device)
        return keys

    def vote(self, attn, layer: CALayer, query: torch.Tensor, t: int) -> None:
        """query: (B, heads, HW, d) of the conditional half.

        The scale is folded into the cached keys and padding is an additive -inf bias, so the
        only full-size operations are the product, the bias, the softmax and the spatial sum
        (on the CPU ``masked_fill`` cost about as much as the softmax, a separate scaling a quarter).
        """
        pos = layer.position
        keys = self._layer_keys(attn, layer)
        k = keys[self._idx[t, pos]].permute(0, 2, 3, 1)  # (B, heads, d, slots)
        logits = torch.matmul(query.float(), k)  # (B, heads, HW, slots), already scaled
        logits += self._bias[t, pos]  # -inf on padding slots (and on SOT when it is left out)
        # sum over pixels (the spec's mean up to the constant 1/HW, which leaves the argmax alone)
        probs = torch.softmax(logits, dim=-1).sum(dim=2)  # (B, heads, slots)
        probs *= self._w[t, pos][:, None, :]
        B, heads, slots = probs.shape
        scores = torch.zeros((B, heads, self.n_concepts + 1), dtype=probs.dtype, device=probs.device)
        scores.scatter_add_(2, self._conc[t, pos][:, None, :].expand(B, heads, slots), probs)
        winner = scores[:, :, : self.n_concepts].argmax(dim=-1)  # (B, heads)
        # flat index of counts[t, winner, offset + head]
        flat = (
            winner.mul_(self.registry.n_heads)
            .add_(self._head_base[pos])
            .add_(t * self.n_concepts * self.registry.n_heads)
        )
        flat = flat.view(-1)
        self.counts.view(-1).index_add_(0, flat, self._ones[: flat.numel()])


def n_unet_evaluations(pipe, steps: int) -> int:
    """UNet evaluations for ``steps`` sampling steps (PNDM with skip_prk_steps: steps + 1)."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def accumulate(
    pipe,
    concepts: ConceptSet,
    prompts: Sequence[str],
    indices: Sequence[int],
    *,
    seed: int,
    steps: int,
    guidance_scale: float,
    height: int,
    width: int,
    batch_size: int = 1,
    keep_sot: bool = True,
    batch_invariant: bool = True,
    progress: bool = True,
    desc: str = "HRV votes",
    bank: WordBank | None = None,
) -> np.ndarray:
    """Votes of the prompts ``prompts[i]`` for ``i`` in ``indices``: int64 array (T, N, H).

    ``bank`` (``WordBank.build(pipe, concepts)``) can be passed to reuse the encoded
    concept-words across calls; building it is a one-off cost per call otherwise.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_invariant:
        make_batch_invariant(pipe)
    registry = HeadRegistry.from_unet(pipe.unet)
    bank = bank if bank is not None else WordBank.build(pipe, concepts)
    n_evals = n_unet_evaluations(pipe, steps)
    measure = VoteMeasure(registry, bank, n_evals, pipe.device, keep_sot=keep_sot)
    controller = Controller(registry, guidance=guidance_scale > 1.0, measure=measure)
    indices = list(indices)
    bar = tqdm(total=len(indices), desc=desc, unit="prompt", disable=not progress)
    with installed(pipe.unet, controller), torch.no_grad():
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            measure.set_batch(seed, batch)
            controller.step = 0
            pipe(
                prompt=[prompts[i] for i in batch],
                latents=initial_latents(pipe, batch, seed, height, width),
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
                output_type="latent",
            )
            if controller.step != n_evals:
                raise RuntimeError(f"expected {n_evals} UNet evaluations, counted {controller.step}")
            bar.update(len(batch))
    bar.close()
    return measure.counts.cpu().numpy()
