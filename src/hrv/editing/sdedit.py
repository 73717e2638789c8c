"""SDEdit (Meng et al., ICLR 2022): the source noised part of the way and denoised with the target prompt.

Run by diffusers' image-to-image pipeline, assembled from the loaded pipeline's components (the
same modules, no second copy of the weights). The source is the pair's source latent (branch 0
of the pair's batch, before the VAE decodes it), so a strength near 0 gives back the source
itself rather than a VAE round trip of its PNG; decoded images can be given instead.

What diffusers' img2img does with ``strength`` s and n steps (``get_timesteps``): k = int(n * s)
steps are run, the last k of the scheduler's n-step schedule, so denoising starts at
``timesteps[(n - k) * order]``; the source latent is noised to that timestep with
``scheduler.add_noise`` and noise drawn from the generator. The generator is the pair's seed's
``torch.Generator("cpu")``, so this noise is the seed's initial latent, the same noise the pair
started from. With ``pndm`` the slice drops PNDM's repeated warm-up timestep (the 51-entry
schedule repeats 961 at its start), so PNDM's warm-up runs one timestep off on the slice: that is
diffusers' img2img as it is, kept so that the images equal it; ``ddim`` has no such quirk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from hrv.editing.schedulers import assemble, editing_scheduler
from hrv.errors import HRVInputError

_IMG2IMG = {
    "StableDiffusionPipeline": "StableDiffusionImg2ImgPipeline",
    "StableDiffusionImg2ImgPipeline": "StableDiffusionImg2ImgPipeline",
    "StableDiffusionXLPipeline": "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLImg2ImgPipeline": "StableDiffusionXLImg2ImgPipeline",
}


@dataclass(frozen=True)
class SDEdit:
    """SDEdit at noise strength ``strength`` in (0, 1]: the fraction of the steps that are run."""

    strength: float

    def __post_init__(self):
        if not 0.0 < self.strength <= 1.0:
            raise HRVInputError(
                f"SDEdit strength must be in (0, 1] (the fraction of the steps run), got {self.strength}"
            )

    def denoising_steps(self, steps: int) -> int:
        """How many of ``steps`` sampling steps run (diffusers' ``int(steps * strength)``)."""
        k = min(int(steps * self.strength), steps)
        if k < 1:
            raise HRVInputError(
                f"SDEdit strength {self.strength} runs no step of {steps}; raise the strength to at"
                f" least {1 / steps:g} or the number of steps"
            )
        return k


def img2img_pipeline(pipe, scheduler: str | None):
    """diffusers' image-to-image pipeline on ``pipe``'s components with a fresh scheduler of kind
    ``scheduler`` (None: of the pipeline's own kind and configuration)."""
    import diffusers

    name = _IMG2IMG.get(type(pipe).__name__)
    if name is None:
        raise HRVInputError(
            f"SDEdit needs a Stable Diffusion (1.x, 2.x or XL) pipeline, got {type(pipe).__name__}"
        )
    fresh = (
        type(pipe.scheduler).from_config(pipe.scheduler.config)
        if scheduler is None
        else editing_scheduler(pipe, scheduler)
    )
    return assemble(getattr(diffusers, name), pipe, scheduler=fresh)


@torch.no_grad()
def sdedit(
    pipe,
    source: torch.Tensor | Sequence,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    strength: float,
    steps: int = 50,
    guidance_scale: float = 7.5,
    scheduler: str | None = "pndm",
    output_type: str = "pil",
) -> list:
    """Edit each source with its target prompt; element i uses ``Generator("cpu").manual_seed(seeds[i])``.

    ``source``: the source latents (B, C, h, w) in the UNet's latent space, or B decoded images.
    ``scheduler``: ``pndm``, ``ddim`` or None (the pipeline's own). Returns the B edited images
    (``output_type`` as diffusers': "pil", "np", "pt" or "latent").
    """
    edit = SDEdit(float(strength))
    edit.denoising_steps(steps)
    n = len(source)
    if len(prompts) != n or len(seeds) != n:
        raise HRVInputError(
            f"SDEdit: {n} sources, {len(prompts)} prompts and {len(seeds)} seeds; give one each"
        )
    i2i = img2img_pipeline(pipe, scheduler)
    if isinstance(source, torch.Tensor):
        source = source.to(device=i2i.unet.device, dtype=i2i.unet.dtype)
    return i2i(
        prompt=list(prompts),
        image=source,
        strength=edit.strength,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
        output_type=output_type,
    ).images


@dataclass(frozen=True)
class SDEditMethod:
    """SDEdit as an editing method (``hrv.editing.methods``). It is not a branch of the pairs'
    joint batch (``joint`` False): it edits each finished source latent with the target prompt."""

    name: str
    strength: float
    uses_hrv: ClassVar[bool] = False
    joint: ClassVar[bool] = False

    def __post_init__(self):
        SDEdit(self.strength)

    def settings(self, plan) -> dict:
        """The effective settings (``plan``: ``hrv.editing.method.Plan``)."""
        return {
            "strength": self.strength,
            "denoising_steps": SDEdit(self.strength).denoising_steps(plan.steps),
        }

    def edits(self, plan) -> list:
        return []  # nothing in the joint batch

    def edit_sources(
        self,
        pipe,
        source_latents: torch.Tensor,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        steps: int,
        guidance_scale: float,
    ) -> torch.Tensor:
        """The edited latents of the sources (with the pipeline's scheduler kind, fresh)."""
        return sdedit(
            pipe,
            source_latents,
            prompts,
            seeds,
            strength=self.strength,
            steps=steps,
            guidance_scale=guidance_scale,
            scheduler=None,
            output_type="latent",
        )
