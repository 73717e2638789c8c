"""SDEdit and the editing scheduler: where img2img starts, its images, its limit, its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrv.editing.schedulers import editing_scheduler, evaluations, with_scheduler
from hrv.editing.sdedit import SDEdit, sdedit
from hrv.errors import HRVInputError

SIZE = 64  # pixels: an 8x8 latent keeps the tiny model fast
STEPS = 10
SEEDS = [10, 20]
TARGETS = ["a red car", "a blue bowl"]


def betas_by_hand() -> torch.Tensor:
    """SD's scaled-linear betas, written out."""
    return torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2


def first_timestep_by_hand(scheduler: str, steps: int, strength: float) -> tuple[int, int]:
    """(timestep img2img starts at, UNet evaluations it runs) for SD's 'leading' spacing with
    offset 1: the DDIM schedule is (steps-1-i)*r+1; PNDM's repeats its second entry."""
    r = 1000 // steps
    k = int(steps * strength)
    start = steps - k  # index into the schedule (order 1)
    if scheduler == "ddim":
        return (steps - 1 - start) * r + 1, k
    schedule = [(steps - 1) * r + 1] + [(steps - 1 - j) * r + 1 for j in [1, 1, *range(2, steps)]]
    return schedule[start], len(schedule) - start


@pytest.fixture(scope="module")
def source_latents(tiny_pipe) -> torch.Tensor:
    """Two plain samples of source prompts, as latents (what the pair's branch 0 ends at)."""
    g = [torch.Generator("cpu").manual_seed(s) for s in SEEDS]
    return tiny_pipe(
        ["a green car", "a white bowl"],
        num_inference_steps=STEPS,
        height=SIZE,
        width=SIZE,
        generator=g,
        output_type="latent",
    ).images


def unet_inputs(pipe, run) -> list[tuple[torch.Tensor, int]]:
    """(latent batch, timestep) of every UNet call made by ``run()``."""
    seen = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args[0].clone(), int(args[1]))), with_kwargs=True
    )
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("scheduler", ["pndm", "ddim"])
@pytest.mark.parametrize("strength", [0.5, 0.7])
def test_sdedit_starts_from_the_source_noised_to_img2imgs_timestep(
    tiny_pipe, source_latents, scheduler, strength
):
    t0, n_evals = first_timestep_by_hand(scheduler, STEPS, strength)
    calls = unet_inputs(
        tiny_pipe,
        lambda: sdedit(
            tiny_pipe, source_latents, TARGETS, SEEDS, strength=strength, steps=STEPS, scheduler=scheduler
        ),
    )
    assert len(calls) == n_evals
    latents, t = calls[0]
    assert t == t0
    alpha_bar = torch.cumprod(1 - betas_by_hand(), 0)[t0]
    for i, seed in enumerate(SEEDS):
        noise = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator("cpu").manual_seed(seed))
        want = alpha_bar.sqrt() * source_latents[i : i + 1].double() + (1 - alpha_bar).sqrt() * noise.double()
        for half in (0, len(SEEDS)):  # unconditional and conditional copies
            torch.testing.assert_close(latents[half + i : half + i + 1].double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scheduler", ["pndm", "ddim"])
def test_sdedit_image_equals_diffusers_img2img(tiny_pipe, source_latents, scheduler):
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline

    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False)
    reference_scheduler = (
        DDIMScheduler(**common, clip_sample=False, steps_offset=1)
        if scheduler == "ddim"
        else PNDMScheduler(**common, skip_prk_steps=True, steps_offset=1)
    )
    c = tiny_pipe.components
    reference = StableDiffusionImg2ImgPipeline(
        vae=c["vae"],
        text_encoder=c["text_encoder"],
        tokenizer=c["tokenizer"],
        unet=c["unet"],
        scheduler=reference_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    reference.set_progress_bar_config(disable=True)
    want = reference(
        TARGETS,
        image=source_latents,
        strength=0.5,
        num_inference_steps=STEPS,
        generator=[torch.Generator("cpu").manual_seed(s) for s in SEEDS],
        output_type="np",
    ).images
    got = sdedit(
        tiny_pipe,
        source_latents,
        TARGETS,
        SEEDS,
        strength=0.5,
        steps=STEPS,
        scheduler=scheduler,
        output_type="np",
    )
    np.testing.assert_array_equal(got, want)


def test_sdedit_approaches_the_source_as_strength_falls(tiny_pipe, source_latents):
    steps = 50
    with torch.no_grad():
        source = tiny_pipe.vae.decode(source_latents / tiny_pipe.vae.config.scaling_factor).sample

    def distance(strength: float) -> float:
        edited = sdedit(
            tiny_pipe,
            source_latents,
            TARGETS,
            SEEDS,
            strength=strength,
            steps=steps,
            scheduler="ddim",
            output_type="pt",
        )
        return float((edited - (source / 2 + 0.5).clamp(0, 1)).abs().mean())

    near, far = distance(1 / steps), distance(0.7)
    print(f"mean |edit - source|: strength 0.02 {near:.5f}, 0.7 {far:.5f}")
    assert near < 1e-3  # one step from t=1: the source up to rounding and one tiny denoising step
    assert near < far / 10


def test_sdedit_settings_are_checked(tiny_pipe, source_latents):
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(HRVInputError, match=r"strength must be in \(0, 1\]"):
            SDEdit(bad)
    with pytest.raises(HRVInputError, match="runs no step"):
        sdedit(tiny_pipe, source_latents, TARGETS, SEEDS, strength=0.05, steps=STEPS)
    with pytest.raises(HRVInputError, match="unknown editing scheduler"):
        sdedit(tiny_pipe, source_latents, TARGETS, SEEDS, strength=0.5, steps=STEPS, scheduler="euler")
    with pytest.raises(HRVInputError, match="give one each"):
        sdedit(tiny_pipe, source_latents, TARGETS[:1], SEEDS, strength=0.5, steps=STEPS)


def test_editing_schedulers_share_the_model_and_count_evaluations(tiny_pipe):
    assert evaluations(tiny_pipe, "pndm", 50) == 51 and evaluations(tiny_pipe, "ddim", 50) == 50
    ddim = editing_scheduler(tiny_pipe, "ddim")
    assert not ddim.config.clip_sample and not ddim.config.set_alpha_to_one
    ddim.set_timesteps(50)
    assert ddim.timesteps[0] == 981 and ddim.timesteps[-1] == 1
    before = tiny_pipe.scheduler
    other = with_scheduler(tiny_pipe, "ddim")
    assert (
        other.unet is tiny_pipe.unet
        and other.vae is tiny_pipe.vae
        and other.text_encoder is tiny_pipe.text_encoder
    )
    assert type(other.scheduler).__name__ == "DDIMScheduler" and tiny_pipe.scheduler is before
