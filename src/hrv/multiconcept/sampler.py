"""Attend-and-Excite sampling, batched: several seeds (and prompts) go through each UNet pass.

Per denoising step ``i`` (A&E's and diffusers' order): while ``i < max_iter_to_alter`` or ``i`` is
a threshold step, a conditional UNet pass with gradients gives each image's token maxima
(``hrv.multiconcept.aggregate``) and loss; at a threshold step every image whose loss is above
``1 - threshold`` is refined (up to ``max_refinement_steps`` gradient steps, each image stopping
once its own loss, measured before its update, is below that level); then each image takes one
gradient step ``latent -= step_size[i] * grad`` (``step_size = scale_factor * sqrt(linspace(1, 0.5,
len(timesteps)))``); then the ordinary classifier-free-guidance pass and scheduler step.

Each image's loss, threshold and refinement are its own; an image whose loss is 0 is not updated.
An image's result does not depend on its batch: the dense layers run per batch element
(``hrv.determinism``), the explicit attention maps are computed per element, the maps are
aggregated and the latents decoded one image at a time, and a gradient pass of one image runs
with a copy of itself, because CPU kernels for a batch of one round differently from larger
batches (measured on the tiny UNet: forward and backward agree bit for bit for batches of 2 and
more). On a GPU, the backward passes of bicubic interpolation and reflect padding have no
deterministic kernels (they accumulate with atomics), so A&E and A&E-HRV images are reproducible
there only approximately; CPU runs are reproducible bit for bit.

Seed ``s`` starts from ``randn(latent shape, generator=torch.Generator("cpu").manual_seed(s))``, the
project's rule, so every method starts from the same latent (the released scripts seed a CUDA
generator, whose stream differs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hrv.errors import HRVInputError
from hrv.multiconcept.aggregate import (
    EXCITING,
    METHODS,
    Aggregation,
    MapSite,
    attend_excite_loss,
    build_aggregation,
)

DEFAULT_THRESHOLDS = {0: 0.05, 10: 0.5, 20: 0.8}


@dataclass(frozen=True)
class ExciteSettings:
    """A&E's hyper-parameters (defaults: the paper's, diffusers' and the released scripts')."""

    max_iter_to_alter: int = 25  # denoising steps 0 .. 24 take a gradient step
    thresholds: Mapping[int, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    scale_factor: float = 20.0
    max_refinement_steps: int = 20
    smooth: bool = (
        True  # ae_released/ae_hrv/ae_uniform: smooth (the README's --smooth_attentions); ae always does
    )

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.thresholds.items() if not (0.0 <= float(v) <= 1.0)}
        if bad:
            raise HRVInputError(
                f"A&E thresholds must lie in [0, 1] (a token's attention maximum to reach), got {bad}"
            )
        if any(int(k) != k or k < 0 for k in self.thresholds):
            raise HRVInputError(f"A&E threshold steps must be step indices >= 0, got {list(self.thresholds)}")
        if self.max_iter_to_alter < 0 or self.max_refinement_steps < 0:
            raise HRVInputError("max_iter_to_alter and max_refinement_steps must be >= 0")


@dataclass(frozen=True)
class ImageJob:
    """One image: its prompt, seed, excited token positions (SOT = 0) and each token's concept."""

    prompt: str
    seed: int
    positions: tuple[int, ...] = ()
    concepts: tuple[str, ...] = ()


def map_sites(pipe, latent_hw: tuple[int, int]) -> list[MapSite]:
    """The UNet's CA layers (execution order) with each one's map size for this latent size."""
    from hrv.control import UNetLayers

    h, w = latent_hw
    out = []
    for site in UNetLayers.from_unet(pipe.unet).of_kind("cross"):
        side = 2**site.level
        out.append(
            MapSite(
                site.module_name,
                site.section,
                site.position,
                site.ca.offset,
                site.ca.heads,
                math.ceil(h / side),
                math.ceil(w / side),
            )
        )
    return out


def head_weights(
    method: str, concepts: Sequence[str], hrv, n_heads: int, heads: list[str]
) -> torch.Tensor | None:
    """(tokens, H) head weights of ``ae_hrv`` (the concept's HRV / H) or ``ae_uniform`` (1 / H)."""
    if method == "ae_uniform":
        return torch.full((len(concepts), n_heads), 1.0 / n_heads)
    if method != "ae_hrv":
        return None
    if hrv is None:
        raise HRVInputError("ae_hrv needs HRVs: give an hrv.npz (--hrv, multiconcept.hrv)")
    hrv.check_heads(heads)
    rows = np.stack([hrv.vector(c) for c in concepts]).astype(np.float32)
    return torch.from_numpy(rows) / n_heads  # the shipped HRVs sum to H: weights sum to 1


class ExciteSampler:
    """Samples images of one method; ``run`` takes a batch of ``ImageJob``s."""

    def __init__(
        self,
        pipe,
        method: str,
        *,
        hrv=None,
        settings: ExciteSettings | None = None,
        steps: int = 50,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
    ):
        from hrv.control import CaptureMaps, Controller, Layout
        from hrv.determinism import make_batch_invariant
        from hrv.heads import HeadRegistry

        if method not in METHODS:
            raise HRVInputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        self.pipe, self.method = pipe, method
        self.settings = settings or ExciteSettings()
        self.steps, self.guidance_scale = steps, guidance_scale
        native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self.height, self.width = height or native, width or native
        f = pipe.vae_scale_factor
        if self.height % f or self.width % f:
            raise HRVInputError(f"height and width must be multiples of {f}; got {self.height}x{self.width}")
        self.latent_hw = (self.height // f, self.width // f)
        self.hrv = hrv
        self.registry = HeadRegistry.from_unet(pipe.unet)
        make_batch_invariant(pipe)
        self.aggregation: Aggregation | None = None
        self.store: dict[str, torch.Tensor] = {}
        self.trace: list[dict] = []  # per image and excited step: loss, refinement steps
        if method in EXCITING:
            self.aggregation = build_aggregation(
                method, map_sites(pipe, self.latent_hw), self.latent_hw, self.settings.smooth
            )
            self.capture = CaptureMaps(fn=self._keep, sites=self.aggregation.names)
            self.controller = Controller([self.capture], layout=Layout(guidance=False), batch_invariant=True)
        if method == "ae_hrv" and hrv is None:
            raise HRVInputError("ae_hrv needs HRVs: give an hrv.npz (--hrv, multiconcept.hrv)")

    def _keep(self, site, step, probs) -> None:
        self.store[site.module_name] = probs

    def check_job(self, job: ImageJob) -> None:
        if self.method == "sd":
            return
        if not job.positions:
            raise HRVInputError(f"{self.method} needs subject tokens for {job.prompt!r}")
        if len(job.concepts) != len(job.positions):
            raise HRVInputError(f"{len(job.concepts)} concepts for {len(job.positions)} excited tokens")
        if self.method == "ae_hrv":
            for c in job.concepts:
                self.hrv.index(c)  # unknown concept: a clear error before any sampling

    # --- the gradient passes -------------------------------------------------------------------
    def _losses(self, x: torch.Tensor, t, cond: torch.Tensor, jobs: Sequence[ImageJob], weights) -> list:
        """A conditional UNet pass with gradients; each image's A&E loss (None = 0)."""
        rows, emb = x, cond
        if len(x) == 1:  # a lone image runs with a copy of itself (see the module docstring)
            rows, emb = torch.cat([x, x.detach()]), torch.cat([cond, cond])
        self.store.clear()
        self.controller.edits = [self.capture]
        self.pipe.unet(rows, t, encoder_hidden_states=emb)
        self.controller.edits = []
        losses = []
        for b, job in enumerate(jobs):
            maps = {name: probs[b] for name, probs in self.store.items()}
            maxima = self.aggregation.maxima(maps, job.positions, weights[b])
            losses.append(attend_excite_loss(maxima))
        self.store.clear()
        return losses

    @staticmethod
    def _stepped(x: torch.Tensor, losses: list, step_size: float) -> torch.Tensor:
        """``x`` with a gradient step for every image whose loss is not 0 (each its own loss)."""
        todo = [b for b, loss in enumerate(losses) if loss is not None]
        out = x.detach().clone()
        if todo:
            (grad,) = torch.autograd.grad(sum(losses[b] for b in todo), [x])
            for b in todo:
                out[b] = (x[b] - step_size * grad[b]).detach()
        return out

    def _excite(self, latents, i: int, t, cond, jobs, weights, step_size: float) -> torch.Tensor:
        s = self.settings
        x = latents.detach().requires_grad_(True)
        losses = self._losses(x, t, cond, jobs, weights)
        refine, target = [], 0.0
        if i in s.thresholds:
            target = max(0.0, 1.0 - s.thresholds[i])
            refine = [b for b, loss in enumerate(losses) if loss is not None and loss > target]
        rest = [b for b in range(len(jobs)) if b not in refine]
        trace = [self._trace_entry(jobs[b], i, losses[b]) for b in range(len(jobs))]
        out = x.detach().clone()
        if i < s.max_iter_to_alter and rest:
            stepped = self._stepped(
                x, [losses[b] if b in rest else None for b in range(len(jobs))], step_size
            )
            out[rest] = stepped[rest]
        if refine:
            sub = [jobs[b] for b in refine]
            sub_weights = [weights[b] for b in refine]
            xr, final, counts = self._refine(
                out[refine], t, cond[refine], sub, sub_weights, target, step_size
            )
            out[refine] = self._stepped(xr, final, step_size) if i < s.max_iter_to_alter else xr.detach()
            for k, b in enumerate(refine):
                trace[b]["refinement_steps"] = counts[k]
                trace[b]["loss_after_refinement"] = _value(final[k])
        self.trace.extend(trace)
        return out

    @staticmethod
    def _trace_entry(job: ImageJob, i: int, loss) -> dict:
        return {
            "prompt": job.prompt,
            "seed": job.seed,
            "step": i,
            "loss": _value(loss),
            "refinement_steps": 0,
        }

    def _refine(self, latents, t, cond, jobs, weights, target: float, step_size: float):
        """A&E's iterative refinement: the refined latents (a leaf), their final losses and each
        image's number of refinement steps. An image stops once its loss is at most ``target``."""
        latents = latents.detach().clone()
        active, iteration, counts = list(range(len(jobs))), 0, [0] * len(jobs)
        while active:
            iteration += 1
            x = latents[active].detach().requires_grad_(True)
            losses = self._losses(x, t, cond[active], [jobs[b] for b in active], [weights[b] for b in active])
            latents[active] = self._stepped(x, losses, step_size)
            for b in active:
                counts[b] += 1
            if iteration >= self.settings.max_refinement_steps:
                break
            active = [b for b, loss in zip(active, losses, strict=True) if loss is not None and loss > target]
        x = latents.detach().requires_grad_(True)
        return x, self._losses(x, t, cond, jobs, weights), counts

    # --- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, jobs: Sequence[ImageJob]) -> list:
        """The images of ``jobs`` (PIL), sampled in one batch."""
        from hrv.control import installed
        from hrv.models import initial_latents, unet_device

        pipe, s = self.pipe, self.settings
        for job in jobs:
            self.check_job(job)
        device = unet_device(pipe)
        guidance = self.guidance_scale > 1.0
        embeds: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for job in jobs:
            if job.prompt not in embeds:
                cond, uncond = pipe.encode_prompt(job.prompt, device, 1, guidance, negative_prompt=None)
                embeds[job.prompt] = (cond, uncond)
        cond = torch.cat([embeds[j.prompt][0] for j in jobs])
        uncond = torch.cat([embeds[j.prompt][1] for j in jobs]) if guidance else None
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(self.steps, device=device)
        timesteps = scheduler.timesteps
        step_sizes = s.scale_factor * np.sqrt(np.linspace(1.0, 0.5, len(timesteps)))
        latents = torch.cat([initial_latents(pipe, [0], j.seed, self.height, self.width) for j in jobs])
        latents = latents * scheduler.init_noise_sigma
        names = self.registry.names()
        weights = [head_weights(self.method, j.concepts, self.hrv, len(names), names) for j in jobs]
        context = (
            installed(pipe.unet, self.controller, kinds={"cross"})
            if self.aggregation is not None
            else contextlib.nullcontext()
        )
        with context:
            for i, t in enumerate(timesteps):
                if self.aggregation is not None and (i < s.max_iter_to_alter or i in s.thresholds):
                    with torch.enable_grad():
                        latents = self._excite(latents, i, t, cond, jobs, weights, float(step_sizes[i]))
                model_in = torch.cat([latents] * 2) if guidance else latents
                model_in = scheduler.scale_model_input(model_in, t)
                emb = torch.cat([uncond, cond]) if guidance else cond
                noise = pipe.unet(model_in, t, encoder_hidden_states=emb).sample
                if guidance:
                    noise_uncond, noise_text = noise.chunk(2)
                    noise = noise_uncond + self.guidance_scale * (noise_text - noise_uncond)
                latents = scheduler.step(noise, t, latents).prev_sample
        images = []
        for latent in latents:  # one at a time: the VAE's result must not depend on the batch
            decoded = pipe.vae.decode(latent[None] / pipe.vae.config.scaling_factor, return_dict=False)[0]
            images.extend(pipe.image_processor.postprocess(decoded, output_type="pil"))
        return images


def _value(loss) -> float:
    return 0.0 if loss is None else float(loss.detach())
