"""Generating toy images from captions and scoring them with the exact classifiers.

Image ``i`` of a call starts from ``hrv.models.initial_latents`` with index ``i`` (seed + i), so
a caption's image depends only on (seed, its position), never on the batch it was sampled in
once the pipeline is batch-invariant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hrv.control import Controller, HeadFactors, Layout, installed
from hrv.models import initial_latents
from hrv.toy.classifiers import accuracy
from hrv.toy.world import IMAGE_SIZE, Scene

DEFAULT_STEPS = 10
DEFAULT_GUIDANCE = 5.0


@torch.no_grad()
def generate(
    pipe,
    captions: Sequence[str],
    seed: int,
    *,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    factors: torch.Tensor | None = None,
    batch_size: int = 16,
    first_index: int = 0,
    same_latent: bool = False,
    latent_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """(N, 32, 32, 3) float images in [0, 1]; ``factors`` (N or 1, H, 77) is a CA intervention.

    Image i starts from latent index ``first_index + i`` (``first_index`` for every image when
    ``same_latent``: one prompt under several interventions); ``latent_indices`` gives each
    image's latent index explicitly instead.
    """
    if latent_indices is None:
        latent_indices = [first_index + (0 if same_latent else i) for i in range(len(captions))]
    if len(latent_indices) != len(captions):
        raise ValueError(f"{len(captions)} captions but {len(latent_indices)} latent indices")
    size = IMAGE_SIZE
    out = []
    ctl = Controller(layout=Layout(guidance=guidance_scale > 1.0))
    for start in range(0, len(captions), batch_size):
        idx = list(range(start, min(start + batch_size, len(captions))))
        latents = initial_latents(
            pipe, [first_index + (0 if same_latent else i) for i in idx], seed, size, size
        )
        if factors is not None:
            f = factors if factors.shape[0] == 1 else factors[idx[0] : idx[-1] + 1]
            ctl.edits = [HeadFactors(f.to(pipe.device))]
        ctl.step = 0
        with installed(pipe.unet, ctl):
            images = pipe(
                prompt=[captions[i] for i in idx],
                latents=latents,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=size,
                width=size,
                output_type="np",
            ).images
        out.append(np.asarray(images, dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), dtype=np.float32)


def generation_accuracy(
    pipe,
    scenes: Sequence[Scene],
    seed: int,
    *,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    batch_size: int = 16,
) -> dict[str, float]:
    """Per-attribute accuracy of images generated from the scenes' captions."""
    images = generate(
        pipe,
        [s.caption() for s in scenes],
        seed,
        steps=steps,
        guidance_scale=guidance_scale,
        batch_size=batch_size,
    )
    return accuracy(images, scenes)
