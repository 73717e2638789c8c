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
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from hrv.concepts import ConceptSet
from hrv.control import Call, Controller, Edit, Layout, installed
from hrv.determinism import make_batch_invariant
from hrv.errors import HRVInputError
from hrv.heads import CALayer, HeadRegistry
from hrv.models import initial_latents, unet_device


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


# the logits of one group of layers scored together stay below this many elements (256 MiB in float32)
_GROUP_ELEMENTS = 2**26
# the packed token-slot layout is as narrow as leaves at most this share of the word draws over
# (scored again in the full layout)
_OVERFLOW = 0.01


def packs_slots(device: torch.device) -> bool:
    """Whether votes on ``device`` use a packed layout narrower than the full one (see ``VoteMeasure``).

    Only on the CPU, where a narrower layout means less work and fewer padding slots, whose exp of
    -inf is slow there. On a GPU the pairs that overflow a packed layout would need their indices
    copied from the host per group of layers, which waits for the kernel queue to drain.
    """
    return device.type == "cpu"


def packed_width(bank: WordBank, overflow: float, multiple: int = 8) -> int:
    """The narrowest multiple of ``multiple`` slots that holds SOT and the chosen words' tokens of all
    but a fraction ``overflow`` of draws (each concept's word uniform, as ``word_choices`` draws), or
    the full layout's width if that is narrower. Exact: the distribution of the total token count is
    the convolution of the concepts' own."""
    pmf = np.ones(1)
    for c in range(len(bank.n_words)):
        pmf = np.convolve(pmf, np.bincount(bank.n_tokens[c, : bank.n_words[c]]) / bank.n_words[c])
    beyond = 1.0 - np.cumsum(pmf)  # beyond[k]: P(more than k tokens), i.e. more than k + 1 slots
    full = 1 + int(bank.n_tokens.max(axis=1).sum())
    for width in range(multiple, full, multiple):
        if beyond[width - 1] <= overflow:
            return width
    return full


@dataclass
class _Layout:
    """Token-slot tables of (layer, prompt) pairs: slot 0 is SOT, the chosen words' tokens follow."""

    width: int
    idx: torch.Tensor  # (P, width) bank rows; padding reads row 0
    bias: torch.Tensor  # (P, 1, width) 0 on SOT (if kept) and the words' tokens, -inf on padding
    weight: torch.Tensor  # (P, 1, width) 1 / tokens on each token of a word, else 0
    gather: torch.Tensor  # (P, span, N) slot of concept c's j-th token, or 0 (SOT, weight 0)

    @classmethod
    def build(
        cls, bank: WordBank, choices: np.ndarray, keep_sot: bool, width: int, start: np.ndarray, device
    ):
        """Tables for the words ``choices`` (P, N): concept c's word takes the slots from
        ``start[p, c]`` on; tokens beyond ``width`` are left out. Built token by token on flat arrays
        (fancy indexing of (P, N, tokens) arrays, one pass per token position, took 5x as long)."""
        n_pairs, n = choices.shape
        n_tokens = bank.n_tokens[np.arange(n), choices]  # (P, N)
        counts = n_tokens.ravel()
        ends = np.cumsum(counts)
        j = np.arange(ends[-1]) - np.repeat(ends - counts, counts)  # each token's place in its word
        word = np.repeat(np.arange(n_pairs * n), counts)  # each token's (pair, concept), flat
        rows = bank.word_tokens[word % n, choices.ravel()[word], j]
        slot = start.ravel()[word] + j
        fits = slot < width
        at = (word // n * width + slot)[fits]
        idx = np.zeros(n_pairs * width, dtype=np.int64)
        idx[at] = rows[fits]
        used = np.zeros(n_pairs * width, dtype=bool)
        used[at] = True
        used = used.reshape(n_pairs, width)
        used[:, 0] = keep_sot
        weight = np.zeros(n_pairs * width, dtype=np.float32)
        weight[at] = (1.0 / counts).astype(np.float32)[word][fits]  # a word's score: mean of its tokens
        span = np.arange(bank.word_tokens.shape[2])[None, :, None]
        slots = start[:, None, :] + span  # (P, span, N)
        gather = np.where((span < n_tokens[:, None, :]) & (slots < width), slots, 0)

        def to(a: np.ndarray, *shape: int) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a).reshape(n_pairs, *shape)).to(device)

        return cls(
            width=width,
            idx=to(idx, width),
            bias=to(np.where(used, 0.0, -np.inf).astype(np.float32), 1, width),
            weight=to(weight, 1, width),
            gather=to(gather, *gather.shape[1:]),
        )


@dataclass
class _Recorded:
    """The conditional-half queries (B, heads, HW, d) of one CA layer at UNet evaluation ``t``."""

    t: int
    layer: CALayer
    attn: object
    query: torch.Tensor


@dataclass
class _Group:
    """Recorded layers of one shape, scored together: rows of the tables, keys, vote targets."""

    rows: np.ndarray  # (G * B,) layout rows of its (layer, prompt) pairs, in (member, prompt) order
    pairs: torch.Tensor  # the same on the device
    offsets: torch.Tensor  # (G * B,): where each pair's layer starts in ``keys``
    keys: torch.Tensor  # (layers * bank rows, heads, d) float32, softmax scale folded in
    targets: torch.Tensor  # (G, B, heads): each pair's heads in the flattened (T, B, H) winners


class VoteMeasure:
    """Counts votes ``counts[t, c, h]`` on the device for the prompts of the current batch.

    The CA processors hand over their conditional-half queries (``record``); when a UNet
    evaluation ends (``end_evaluation``) they are scored in groups of equal shape: a few batched
    operations per group instead of per layer (on the CPU each operation has a fixed cost of tens
    of microseconds between the UNet's large kernels). Each head's winner goes
    to a preallocated (T, B, H) tensor on the device, counted into ``counts`` by ``flush`` after
    the batch; nothing is copied to the host. Every (evaluation, layer, prompt, head) is scored
    on its own row of these operations, so its vote does not depend on what it was grouped with.

    Token slots: slot 0 is SOT, then the chosen words' tokens, packed in concept order, then
    padding up to a width that holds all but ``_OVERFLOW`` of the draws (on the CPU 48 slots for the
    paper's concepts, where a fixed slot range per concept needs 64; on a GPU the full width, see
    ``packs_slots``). The few (layer, prompt) pairs whose words need more are scored again in the
    full layout, where each concept owns as many slots as its longest word has tokens. Which layout
    a pair takes depends on its own words only, so its votes never depend on its batch. Scores are
    the exact softmax over the used slots (padding at -inf), on every device.

    ``strict``: on a GPU each batch element's product and pixel sums run on their own, so the same
    kernels run whatever the batch (cuBLAS and the reduction kernels choose by shape; on an H200 the
    batched product at 4096 pixels rounded differently in a batch than alone).
    """

    def __init__(
        self,
        registry: HeadRegistry,
        bank: WordBank,
        n_evals: int,
        device,
        keep_sot: bool = True,
        strict: bool = False,
    ):
        self.registry = registry
        self.bank = bank
        self.n_evals = n_evals
        self.keep_sot = keep_sot
        self.strict = strict
        self.n_concepts = bank.word_tokens.shape[0]
        self.counts = torch.zeros(
            (n_evals, self.n_concepts, registry.n_heads), dtype=torch.int64, device=device
        )
        self.device = device
        span = bank.n_tokens.max(axis=1)  # full layout: slots per concept, its longest word
        self._full_start = 1 + np.concatenate([[0], np.cumsum(span)[:-1]])
        self._full_width = 1 + int(span.sum())
        self._packed_width = (
            packed_width(bank, _OVERFLOW) if packs_slots(torch.device(device)) else self._full_width
        )
        self._keys: dict[int, torch.Tensor] = {}
        self._layer_stacks: dict[tuple[int, ...], torch.Tensor] = {}
        self._groups: dict[tuple, _Group] = {}
        self._pending: list[_Recorded] = []  # this evaluation's layers
        self._winners = torch.empty(0, dtype=torch.int64, device=device)

    def set_batch(self, seed: int, prompt_indices: Sequence[int]) -> None:
        """Build the token-slot tables of a batch: packed for every (evaluation, layer, prompt), full
        for those whose words overflow it. Table row (t * L + l) * B + b."""
        if self._pending or bool((self._winners >= 0).any()):
            raise RuntimeError("a new batch began before the last one's votes were flushed")
        bank, n_layers = self.bank, len(self.registry.layers)
        choices = np.stack(
            [word_choices(seed, i, self.n_evals, n_layers, bank.n_words) for i in prompt_indices], axis=2
        )  # (T, L, B, N)
        T, L, B, n = choices.shape
        choices = choices.reshape(-1, n)
        n_tokens = bank.n_tokens[np.arange(n), choices]  # (P, N)
        packed_start = 1 + np.cumsum(n_tokens, axis=1) - n_tokens  # each word right after the previous
        self._packed = _Layout.build(
            bank, choices, self.keep_sot, self._packed_width, packed_start, self.device
        )
        over = 1 + n_tokens.sum(axis=1) > self._packed_width
        # row of each overflowing pair in the full layout's tables (built for those pairs only)
        self._full_row = np.where(over, np.cumsum(over) - 1, -1)
        self._full = None
        if over.any():
            full_start = np.broadcast_to(self._full_start, (int(over.sum()), n))
            self._full = _Layout.build(
                bank, choices[over], self.keep_sot, self._full_width, full_start, self.device
            )
        self._winners = torch.full((T, B, self.registry.n_heads), -1, dtype=torch.int64, device=self.device)

    def _layer_keys(self, attn, layer: CALayer) -> torch.Tensor:
        """(rows, heads, d) float32 keys of every bank row, softmax scale folded in."""
        cached = self._keys.get(layer.position)
        if cached is None:
            with torch.no_grad():
                # as one sequence of a batch of one, like the processor's encoder states (and one
                # product instead of one per row under make_batch_invariant's per-sample linear layers)
                emb = self.bank.embeddings.to(device=self.device, dtype=attn.to_k.weight.dtype)[None]
                if attn.norm_cross:
                    emb = attn.norm_encoder_hidden_states(emb)
                k = attn.to_k(emb)[0]
                keys = k.view(k.shape[0], attn.heads, -1)
                if attn.norm_k is not None:
                    keys = attn.norm_k(keys.transpose(0, 1)).transpose(0, 1)
            cached = self._keys[layer.position] = keys.float() * attn.scale
        return cached

    def _group(self, members: list[_Recorded]) -> _Group:
        """Keys and table rows of recorded layers of one shape, cached per (batch size, members): the
        same groups come back every batch, and on a GPU building their index tensors is a copy from
        the host that waits for the kernel queue to drain."""
        B = self._winners.shape[1]
        key = (B, tuple((m.t, m.layer.position) for m in members))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = self._new_group(members)
        return group

    def _new_group(self, members: list[_Recorded]) -> _Group:
        positions = tuple(dict.fromkeys(m.layer.position for m in members))  # unique, in order
        keys = self._layer_stacks.get(positions)
        if keys is None:
            attns = {m.layer.position: (m.layer, m.attn) for m in members}
            keys = torch.cat([self._layer_keys(attn, layer) for layer, attn in attns.values()])
            self._layer_stacks[positions] = keys
        bank_rows = self.bank.embeddings.shape[0]
        n_layers, B, H = len(self.registry.layers), self._winners.shape[1], self.registry.n_heads
        rows = (
            np.array([m.t * n_layers + m.layer.position for m in members])[:, None] * B + np.arange(B)
        ).ravel()
        which = torch.tensor([positions.index(m.layer.position) for m in members], device=self.device)
        first = torch.tensor(
            [m.t * B * H + m.layer.offset for m in members], device=self.device
        )  # winners[t, 0, offset] in the flattened (T, B, H) tensor
        heads = members[0].layer.heads
        return _Group(
            rows=rows,
            pairs=torch.from_numpy(rows).to(self.device),
            offsets=(which * bank_rows).repeat_interleave(B),
            keys=keys,
            targets=first[:, None, None]
            + (torch.arange(B, device=self.device) * H)[None, :, None]
            + torch.arange(heads, device=self.device)[None, None, :],
        )

    def record(self, attn, layer: CALayer, query: torch.Tensor) -> None:
        """Called by the CA processor: query (B, heads, HW, d) of the conditional half."""
        self._pending.append(_Recorded(-1, layer, attn, query))

    def end_evaluation(self, t: int) -> None:
        """Score the layers recorded during UNet evaluation ``t``."""
        pending, self._pending = self._pending, []
        if not 0 <= t < self.n_evals:
            raise RuntimeError(
                f"UNet evaluation {t} is beyond the {self.n_evals} this sampling was expected to make: "
                "the scheduler's step count differs from hrv.accumulate.n_unet_evaluations"
            )
        for member in pending:
            member.t = t
        for members in self._same_shaped(pending):
            self._vote(members)

    def _same_shaped(self, members: list[_Recorded]) -> list[list[_Recorded]]:
        """The recorded layers in groups of equal query shape, each below ``_GROUP_ELEMENTS`` logits."""
        shapes: dict[tuple, list[_Recorded]] = {}
        for member in members:
            shapes.setdefault((tuple(member.query.shape), member.query.dtype), []).append(member)
        groups = []
        for (shape, _), same in shapes.items():
            size = max(1, _GROUP_ELEMENTS // (math.prod(shape[:3]) * self._packed_width))
            groups += [same[i : i + size] for i in range(0, len(same), size)]
        return groups

    def _vote(self, members: list[_Recorded]) -> None:
        """Each head's argmax concept for a group of same-shaped recorded layers, into ``_winners``."""
        group = self._group(members)
        winners = self._group_scores(members, group).argmax(dim=-1)  # (G, B, heads)
        self._winners.view(-1).index_copy_(0, group.targets.view(-1), winners.view(-1))

    def _group_scores(self, members: list[_Recorded], group: _Group) -> torch.Tensor:
        """(G, B, heads, N) concept scores of a group of same-shaped recorded layers: the packed layout,
        then the full one for the pairs whose words overflow it."""
        q = torch.stack([m.query for m in members]).float()  # (G, B, heads, HW, d)
        G, B = q.shape[:2]
        q = q.flatten(0, 1)
        scores = self._scores(q, group.pairs, group.offsets, group.keys, self._packed)
        full_rows = self._full_row[group.rows]
        over = np.flatnonzero(full_rows >= 0)
        if len(over):
            sel = torch.from_numpy(over).to(self.device)
            again = self._scores(
                q.index_select(0, sel),
                torch.from_numpy(full_rows[over]).to(self.device),
                group.offsets.index_select(0, sel),
                group.keys,
                self._full,
            )
            scores.index_copy_(0, sel, again)
        return scores.view(G, B, *scores.shape[1:])

    def _scores(
        self, q: torch.Tensor, pairs: torch.Tensor, offsets: torch.Tensor, keys: torch.Tensor, layout: _Layout
    ) -> torch.Tensor:
        """(n, heads, N) concept scores of n (layer, prompt) pairs: queries (n, heads, HW, d), their
        rows ``pairs`` of ``layout``, where their layer's keys start in ``keys``."""
        n, heads, _, d = q.shape
        width = layout.width
        idx = layout.idx.index_select(0, pairs)  # (n, slots)
        # index_select, not advanced indexing: the same gather at a fraction of the fixed cost
        k = keys.index_select(0, (idx + offsets[:, None]).view(-1))
        k = k.view(n, width, heads, d).permute(0, 2, 3, 1).contiguous()  # (n, heads, d, slots)
        bias = layout.bias.index_select(0, pairs).view(n, 1, 1, width)
        if self.strict:
            probs = torch.cat([_softmax_sums(q[i : i + 1], k[i : i + 1], bias[i : i + 1]) for i in range(n)])
        else:
            probs = _softmax_sums(q, k, bias)
        probs = probs * layout.weight.index_select(0, pairs)
        # a concept's score: its slots added in a fixed order (bitwise the same on every device and
        # batch, unlike a product with a 0/1 matrix whose kernel depends on the row count)
        gather = layout.gather.index_select(0, pairs)  # (n, span, N)
        n_concepts = gather.shape[-1]
        scores = probs.gather(-1, gather[:, None, 0].expand(n, heads, n_concepts))
        for j in range(1, gather.shape[1]):
            scores = scores + probs.gather(-1, gather[:, None, j].expand(n, heads, n_concepts))
        return scores

    def flush(self) -> None:
        """Add the batch's votes to ``counts`` (on the device, one scatter for the whole batch)."""
        if self._pending:
            raise RuntimeError("queries were recorded after the last UNet evaluation ended")
        T, B, H = self._winners.shape
        if bool((self._winners < 0).any()):
            raise RuntimeError("a cross-attention layer did not vote at some UNet evaluation")
        n = self.n_concepts
        heads = torch.arange(H, device=self.device)
        base = (torch.arange(T, device=self.device) * (n * H))[:, None, None]
        flat = (self._winners * H + heads + base).view(-1)
        self.counts.view(-1).index_add_(0, flat, torch.ones_like(flat))
        self._winners.fill_(-1)


def _softmax_sums(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(n, heads, slots): the softmax over the slots (padding at -inf by ``bias``) summed over pixels,
    the spec's mean up to the constant 1/HW, which leaves the argmax alone. Every product keeps the
    heads in its batch dimension: CPU BLAS rounds a batch of one differently."""
    return torch.softmax(torch.matmul(q, k) + bias, dim=-1).sum(dim=-2)


@dataclass(eq=False)
class RecordQueries(Edit):
    """Hands every cross-attention site's conditional-half queries to a ``VoteMeasure`` (``record``)
    and tells it when each UNet evaluation ends; changes nothing."""

    measure: VoteMeasure

    def qkv(self, call: Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.measure.record(call.attn, call.site.ca, q)

    def end_evaluation(self, step: int) -> None:
        self.measure.end_evaluation(step)


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
    batch_invariant: bool | str = True,
    progress: bool = True,
    desc: str = "HRV votes",
    bank: WordBank | None = None,
) -> np.ndarray:
    """Votes of the prompts ``prompts[i]`` for ``i`` in ``indices``: int64 array (T, N, H).

    ``batch_invariant``: True makes a prompt's votes independent of its batch bit for bit on the
    CPU (on a GPU up to rare near-ties); "strict" on a GPU too, at a cost (every linear layer,
    convolution and vote product one batch element at a time); False leaves the model as loaded.
    ``bank`` (``WordBank.build(pipe, concepts)``) can be passed to reuse the encoded
    concept-words across calls; building it is a one-off cost per call otherwise.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_invariant not in (True, False, "strict"):
        raise HRVInputError(f"hrv.batch_invariant must be true, false or strict, got {batch_invariant!r}")
    strict = batch_invariant == "strict"
    if batch_invariant:
        make_batch_invariant(pipe, strict=strict)
    registry = HeadRegistry.from_unet(pipe.unet)
    bank = bank if bank is not None else WordBank.build(pipe, concepts)
    n_evals = n_unet_evaluations(pipe, steps)
    measure = VoteMeasure(registry, bank, n_evals, unet_device(pipe), keep_sot=keep_sot, strict=strict)
    controller = Controller([RecordQueries(measure)], layout=Layout(guidance=guidance_scale > 1.0))
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
            measure.flush()
            bar.update(len(batch))
    bar.close()
    return measure.counts.cpu().numpy()
