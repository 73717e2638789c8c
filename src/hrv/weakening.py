"""Ordered weakening (spec section 2): switch off the k most (MoRHF) or least (LeRHF) relevant heads.

A weakened head's cross-attention probabilities on every prompt-word token (positions 1..n of
the tokenized prompt; never SOT, EOT or padding) are multiplied by ``factor`` (-2 in the paper)
at every step, in the conditional half only, through :class:`hrv.control.HeadFactors`.

The images of one (prompt, seed, order) for several k differ only in their head masks, so the
sweep samples them as one batch: the same prompt and initial latent repeated once per k, with
per-element factors (B, H, S). The UNet is made batch-invariant first, so every batched image is
bit-identical to the image of a run with that k alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrv.control import Controller, HeadFactors, Layout, installed
from hrv.determinism import make_batch_invariant
from hrv.errors import HRVInputError
from hrv.experiments import ORDERS
from hrv.heads import HeadRegistry
from hrv.io import atomic_dir
from hrv.models import initial_latents


def head_order(values: np.ndarray, order: str, seed: int = 0) -> np.ndarray:
    """Head indices in the order they are weakened (the first k are weakened for a given k).

    LeRHF: smallest HRV first, ties to the lower head index; MoRHF: exactly LeRHF reversed, so ties
    go to the higher head index, as in the released head lists (``np.argsort(v)`` and
    ``np.argsort(v)[::-1]``). The released code used numpy's default sort, whose order among equal
    values depends on numpy's version and the CPU's SIMD sort; a stable sort is the same on every
    machine and agreed with more of the released lists' tie groups (benchmarks/README.md).
    ``random``: a permutation drawn from ``numpy.random.default_rng(seed)``, independent of the values.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise HRVInputError(f"an HRV must be a non-empty vector over heads, got shape {values.shape}")
    if order == "MoRHF":
        return np.argsort(values, kind="stable")[::-1].copy()
    if order == "LeRHF":
        return np.argsort(values, kind="stable")
    if order == "random":
        return np.random.default_rng(seed).permutation(values.size)
    raise HRVInputError(f"unknown head order {order!r}; choose from {', '.join(ORDERS)}")


def prompt_word_count(tokenizer, prompt: str) -> int:
    """Number of word tokens of ``prompt`` (without SOT/EOT), as truncated in the 77-token context."""
    limit = int(getattr(tokenizer, "model_max_length", 77)) - 2
    n = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    return min(n, limit)


def check_ks(ks: Sequence[int], n_heads: int) -> list[int]:
    out = [int(k) for k in ks]
    if not out:
        raise HRVInputError("the k grid is empty; give at least one head count (weakening.k)")
    bad = [k for k in out if k < 0 or k > n_heads]
    if bad:
        raise HRVInputError(
            f"head counts {bad} are outside 0..{n_heads} (this model has {n_heads} cross-attention heads);"
            " fix weakening.k"
        )
    return out


def weakening_factors(
    order: np.ndarray,
    ks: Sequence[int],
    n_words: int,
    *,
    factor: float = -2.0,
    n_tokens: int = 77,
) -> torch.Tensor:
    """(len(ks), H, n_tokens) factors: ``factor`` on tokens 1..n_words of the first k heads of ``order``."""
    n_heads = len(order)
    ks = check_ks(ks, n_heads)
    if not 0 <= n_words <= n_tokens - 2:
        raise HRVInputError(f"a prompt has 0..{n_tokens - 2} word tokens, got {n_words}")
    f = torch.ones((len(ks), n_heads, n_tokens), dtype=torch.float32)
    order_t = torch.as_tensor(np.asarray(order), dtype=torch.long)
    for b, k in enumerate(ks):
        f[b, order_t[:k], 1 : 1 + n_words] = factor
    return f


def sample_weakened(
    pipe,
    prompt: str,
    seed: int,
    order: np.ndarray,
    ks: Sequence[int],
    *,
    sampling: dict[str, Any],
    factor: float = -2.0,
    batch_invariant: bool = True,
) -> list:
    """PIL images of ``prompt`` from the initial latent of ``seed``, one per k, in one sampling batch."""
    if batch_invariant:
        make_batch_invariant(pipe)
    registry = HeadRegistry.from_unet(pipe.unet)
    if len(order) != registry.n_heads:
        raise HRVInputError(
            f"the head order has {len(order)} heads but the model has {registry.n_heads}; use this model's HRVs"
        )
    ks = check_ks(ks, registry.n_heads)
    height, width = int(sampling["height"]), int(sampling["width"])
    guidance = float(sampling["guidance_scale"])
    factors = weakening_factors(
        order,
        ks,
        prompt_word_count(pipe.tokenizer, prompt),
        factor=factor,
        n_tokens=pipe.tokenizer.model_max_length,
    ).to(pipe.device)
    ctl = Controller(
        [HeadFactors(factors)], layout=Layout(guidance=guidance > 1.0), batch_invariant=batch_invariant
    )
    latent = initial_latents(pipe, [0], seed, height, width)  # seed + 0: one latent per seed
    with installed(pipe.unet, ctl), torch.no_grad():
        out = pipe(
            prompt=[prompt] * len(ks),
            latents=latent.expand(len(ks), -1, -1, -1).clone(),
            num_inference_steps=int(sampling["steps"]),
            guidance_scale=guidance,
            height=height,
            width=width,
            output_type="latent",
        )
    return decode_each(pipe, out.images)


@torch.no_grad()
def decode_each(pipe, latents: torch.Tensor) -> list:
    """Decode latents to PIL images one at a time.

    Convolutions on CPU round differently for a batch of 1 than for larger batches, so decoding
    image by image keeps an image independent of how many others were sampled beside it. A
    float16 VAE that asks for it (``force_upcast``, SDXL) decodes in float32, as diffusers does.
    """
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    if upcast:
        vae.to(torch.float32)
    try:
        dtype = next(iter(vae.post_quant_conv.parameters())).dtype
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        images = []
        for z in latents:
            z = z[None].to(dtype)
            if mean is not None and std is not None:
                m = torch.tensor(mean).view(1, -1, 1, 1).to(z)
                sd = torch.tensor(std).view(1, -1, 1, 1).to(z)
                z = z * sd / vae.config.scaling_factor + m
            else:
                z = z / vae.config.scaling_factor
            image = vae.decode(z, return_dict=False)[0]
            images.extend(pipe.image_processor.postprocess(image, output_type="pil"))
        return images
    finally:
        if upcast:
            vae.to(torch.float16)


def parse_chunk_label(label: str) -> list[int]:
    if not re.fullmatch(r"ks\d+(-\d+)*", label):
        raise HRVInputError(f"{label!r} is not a head-count batch name like 'ks0-1-32'")
    return [int(k) for k in label[2:].split("-")]


def image_path(root: str | Path, k: int, slug: str) -> Path:
    return Path(root) / f"k{int(k)}" / f"{slug}.png"


def run_job(
    model: str,
    hrv_path: str | Path,
    experiment: dict[str, Any],
    order: str,
    seed: int,
    ks: Sequence[int],
    out_dir: str | Path,
    *,
    sampling: dict[str, Any],
    factor: float = -2.0,
    random_seed: int = 0,
    max_items: int | None = None,
    batch_invariant: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
    owner: str | None = None,
) -> Path:
    """Sample one (experiment, order, seed, k batch) job: ``out_dir/k<k>/<prompt slug>.png`` + manifest.

    The directory is filled beside its final name and renamed when complete (atomic). ``owner``:
    the command, for a folder the user named (``hrv.io.atomic_dir``); None = a workflow output.
    """

    import pandas as pd
    from tqdm.auto import tqdm

    from hrv.experiments import parse_experiment
    from hrv.hrvfile import load_hrv
    from hrv.models import load_pipeline

    exp = parse_experiment(experiment, {})
    hrv = load_hrv(hrv_path)
    values = hrv.vector(exp.concept)
    pipe = load_pipeline(model, device=device, dtype=dtype)
    registry = HeadRegistry.from_unet(pipe.unet)
    hrv.check_heads(registry.names())
    ks = check_ks(ks, registry.n_heads)
    heads = head_order(values, order, random_seed)
    prompts = exp.prompts(max_items)
    out_dir = Path(out_dir)
    rows = []
    with atomic_dir(out_dir, owner=owner) as tmp:
        for prompt in tqdm(
            prompts, desc=f"{exp.name}/{order}/seed{seed}", unit="prompt", disable=not progress
        ):
            images = sample_weakened(
                pipe,
                prompt.text,
                seed,
                heads,
                ks,
                sampling=sampling,
                factor=factor,
                batch_invariant=batch_invariant,
            )
            for k, image in zip(ks, images, strict=True):
                path = image_path(tmp, k, prompt.slug)
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                rows.append(
                    {
                        "experiment": exp.name,
                        "concept": exp.concept,
                        "order": order,
                        "seed": seed,
                        "k": k,
                        "prompt_index": prompt.index,
                        "prompt": prompt.text,
                        "scored_text": prompt.scored_text,
                        "image": str(image_path(".", k, prompt.slug)),
                    }
                )
        pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)
        (tmp / "heads.txt").write_text(
            "\n".join(registry.names()[h] for h in heads[: max(ks)]) + "\n", encoding="utf-8"
        )
    return out_dir
