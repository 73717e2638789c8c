"""Attend-and-Excite and A&E-HRV on the tiny model: against diffusers' pipeline and plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrv.errors import HRVInputError
from hrv.multiconcept.aggregate import ae_kernel, blur_kernel_size, build_aggregation, gaussian_kernel
from hrv.multiconcept.sampler import ExciteSampler, ExciteSettings, ImageJob, map_sites

# a scale factor 1000x A&E's makes the excitation visible on the random tiny model (ae vs sd
# differ by up to ~100 grey levels), so agreeing with diffusers means something
STRONG = 20000.0


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


@pytest.fixture(scope="module")
def hrv(tiny_pipe):
    from hrv.heads import HeadRegistry
    from hrv.hrvfile import HRVSet

    names = HeadRegistry.from_unet(tiny_pipe.unet).names()
    counts = np.random.default_rng(0).integers(0, 5, (1, 2, len(names)))
    return HRVSet.from_counts(counts, ["Animals", "Color"], names)


def test_kernels():
    from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (
        GaussianSmoothing,
    )

    torch.testing.assert_close(ae_kernel(), GaussianSmoothing().weight[0, 0], rtol=0, atol=1e-7)
    assert float(ae_kernel()[1, 1]) == pytest.approx(0.3319, abs=1e-4)
    g = np.exp(-0.5 * (np.array([-1.0, 0.0, 1.0]) / 0.5) ** 2)
    g /= g.sum()  # [0.1065, 0.7870, 0.1065]
    np.testing.assert_allclose(gaussian_kernel().numpy(), np.outer(g, g), atol=1e-7)
    # the released blur before 8x8: k = side // 8 + 1, OpenCV's sigma
    assert blur_kernel_size(16, 8) == (3, pytest.approx(0.8))
    assert blur_kernel_size(32, 8) == (5, pytest.approx(1.1))
    assert blur_kernel_size(64, 8) == (9, pytest.approx(1.7))


def test_sd_is_plain_sampling(tiny_pipe):
    from hrv.models import initial_latents

    ours = ExciteSampler(tiny_pipe, "sd", steps=3).run([ImageJob("a cat and a frog", 5)])
    latents = initial_latents(tiny_pipe, [0], 5, 128, 128)
    ref = tiny_pipe("a cat and a frog", latents=latents, num_inference_steps=3, guidance_scale=7.5).images
    assert np.array_equal(_pixels(ours[0]), _pixels(ref[0]))


def test_ae_matches_diffusers_attend_and_excite(tiny_pipe):
    from diffusers import StableDiffusionAttendAndExcitePipeline

    from hrv.models import initial_latents

    # refinement at step 0 for both images; at step 2 (refined, but past the steps that take a
    # gradient step) for one image only, so both branches of that step are compared
    thresholds = {0: 0.0155, 2: 0.01632}
    settings = ExciteSettings(max_iter_to_alter=2, thresholds=thresholds, scale_factor=STRONG)
    sampler = ExciteSampler(tiny_pipe, "ae", settings=settings, steps=3)
    jobs = [ImageJob("a cat and a frog", seed, (2, 5), ("Animals", "Animals")) for seed in (1, 2)]
    ours = sampler.run(jobs)  # one batch
    assert min(e["refinement_steps"] for e in sampler.trace if e["step"] == 0) >= 1
    assert sorted(e["refinement_steps"] > 0 for e in sampler.trace if e["step"] == 2) == [False, True]
    components = {k: v for k, v in tiny_pipe.components.items() if k != "image_encoder"}
    reference = StableDiffusionAttendAndExcitePipeline(**components, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    plain = ExciteSampler(tiny_pipe, "sd", steps=3).run(jobs)
    for job, image, sd in zip(jobs, ours, plain, strict=True):
        ref = reference(
            job.prompt,
            token_indices=[2, 5],
            latents=initial_latents(tiny_pipe, [0], job.seed, 128, 128),
            num_inference_steps=3,
            max_iter_to_alter=2,
            thresholds=thresholds,
            scale_factor=STRONG,
            attn_res=(4, 4),  # 1/32 of 128 px
        ).images[0]
        assert np.abs(_pixels(image) - _pixels(ref)).max() <= 1
        assert np.abs(_pixels(sd) - _pixels(ref)).max() > 20  # the excitation changed the image


def test_batched_equals_one_at_a_time(tiny_pipe, hrv):
    # two prompts, different concepts per token, a threshold some images pass sooner than others
    settings = ExciteSettings(
        max_iter_to_alter=2, thresholds={0: 0.01355}, scale_factor=STRONG, max_refinement_steps=3
    )
    sampler = ExciteSampler(tiny_pipe, "ae_hrv", hrv=hrv, settings=settings, steps=2)
    jobs = [
        ImageJob("a cat and a frog", 1, (2, 5), ("Animals", "Color")),
        ImageJob("a cat and a frog", 2, (2, 5), ("Animals", "Color")),
        ImageJob("a dog and a bird", 3, (2, 5), ("Color", "Animals")),
    ]
    batched = sampler.run(jobs)
    counts = [e["refinement_steps"] for e in sampler.trace if e["step"] == 0]
    assert 0 in counts and max(counts) > 0  # some images were refined, others passed at once
    for job, image in zip(jobs, batched, strict=True):
        alone = sampler.run([job])[0]
        assert np.array_equal(_pixels(image), _pixels(alone))


def _capture(pipe, sites, latent_seed: int = 0):
    """One conditional UNet pass; every CA layer's maps of image 0 (heads, queries, 77)."""
    from hrv.control import CaptureMaps, Controller, Layout, installed

    maps = {}
    capture = CaptureMaps(lambda site, step, p: maps.__setitem__(site.module_name, p[0]))
    cond, _ = pipe.encode_prompt("a cat and a frog", "cpu", 1, False)
    x = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(latent_seed))
    with installed(pipe.unet, Controller([capture], layout=Layout(guidance=False))), torch.no_grad():
        pipe.unet(x, 500, encoder_hidden_states=cond)
    return maps


def test_ae_hrv_with_all_weight_on_one_head_reads_that_head(tiny_pipe):
    from torchvision.transforms.functional import gaussian_blur

    sites = map_sites(tiny_pipe, (16, 16))
    agg = build_aggregation("ae_hrv", sites, (16, 16))
    maps = _capture(tiny_pipe, sites)
    n_heads = sum(s.heads for s in sites)
    layer = next(s for s in sites if s.height == 16)  # a 16x16 layer: blurred and downsampled to 2x2
    head = layer.offset + 3
    weights = torch.zeros((2, n_heads))
    weights[:, head] = 1.0  # HRV row = H on one head, / H
    got = agg.maxima(maps, [2, 5], weights)
    # plain reference: that head's map, blur k = 16 // 2 + 1 = 9, sigma 0.3 * 3 + 0.8, bicubic to 2x2
    m = maps[layer.name][3].reshape(16, 16, 77).permute(2, 0, 1)[None]
    m = gaussian_blur(m, [9, 9], [1.7, 1.7])
    m = F.interpolate(m, size=(2, 2), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    probs = torch.softmax(m[:, :, 1:77] * 100, dim=-1)
    g = torch.tensor([0.10650698, 0.78698604, 0.10650698])
    for token, value in zip([2, 5], got, strict=True):
        padded = F.pad(probs[:, :, token - 1][None, None], (1, 1, 1, 1), mode="reflect")
        ref = F.conv2d(padded, torch.outer(g, g)[None, None]).max()
        assert float(value) == pytest.approx(float(ref), abs=1e-6)
    uniform = agg.maxima(maps, [2, 5], torch.full((2, n_heads), 1.0 / n_heads))
    assert abs(float(uniform[0]) - float(got[0])) > 1e-4


def test_ae_reads_the_layers_at_one_32nd_in_diffusers_order(tiny_pipe):
    sites = map_sites(tiny_pipe, (16, 16))
    agg = build_aggregation("ae", sites, (16, 16))
    assert [(s.section, s.height) for s in agg.sites] == [("up", 4)] * 3 + [("down", 4)] * 2
    maps = _capture(tiny_pipe, sites)
    stacked = torch.cat([maps[s.name] for s in agg.sites])  # (40, 16, 77)
    mean = stacked.mean(0).reshape(4, 4, 77)
    probs = torch.softmax(mean[:, :, 1:76] * 100, dim=-1)  # tokens 1..75
    padded = F.pad(probs[:, :, 4][None, None], (1, 1, 1, 1), mode="reflect")  # token 5
    ref = F.conv2d(padded, ae_kernel()[None, None]).max()
    assert float(agg.maxima(maps, [5])[0]) == pytest.approx(float(ref), abs=1e-6)
    # the released baseline: the same layers, tokens 1..76 and the correct Gaussian
    released = build_aggregation("ae_released", sites, (16, 16))
    assert released.names == agg.names
    probs = torch.softmax(mean[:, :, 1:77] * 100, dim=-1)
    g = torch.tensor([0.10650698, 0.78698604, 0.10650698])
    padded = F.pad(probs[:, :, 4][None, None], (1, 1, 1, 1), mode="reflect")
    ref = F.conv2d(padded, torch.outer(g, g)[None, None]).max()
    assert float(released.maxima(maps, [5])[0]) == pytest.approx(float(ref), abs=1e-6)


def test_head_weights_are_the_concept_hrv_over_h_or_uniform(hrv):
    from hrv.multiconcept.sampler import head_weights

    w = head_weights("ae_hrv", ["Color", "Animals"], hrv, 128, hrv.heads)
    np.testing.assert_allclose(w.numpy(), np.stack([hrv.vector("Color"), hrv.vector("Animals")]) / 128)
    np.testing.assert_allclose(w.sum(1).numpy(), 1.0, rtol=1e-5)  # HRV rows sum to H
    assert torch.equal(
        head_weights("ae_uniform", ["Animals"], None, 128, hrv.heads), torch.full((1, 128), 1 / 128)
    )
    assert head_weights("ae", ["Animals"], None, 128, hrv.heads) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"subjects": ["cat", "horse"]}, "'horse' is not a word of the prompt"),
        ({"concepts": ["Animals", "Vehicles"]}, "unknown concept 'Vehicles'"),
        ({"thresholds": {0: 1.5}}, r"thresholds must lie in \[0, 1\]"),
        ({"thresholds": {0: -0.1}}, r"thresholds must lie in \[0, 1\]"),
        ({"method": "ae_fast"}, "unknown method 'ae_fast'"),
        ({"hrv": None}, "ae_hrv needs HRVs"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_pipe, hrv, kwargs, match):
    from hrv.multiconcept import excite

    args = {"method": "ae_hrv", "hrv": hrv, "steps": 1, "progress": False} | kwargs
    with pytest.raises(HRVInputError, match=match):
        excite(tiny_pipe, "a cat and a frog", **args)


def test_hrv_of_another_model_is_refused(tiny_pipe):
    from hrv.hrvfile import HRVSet
    from hrv.multiconcept import excite

    other = HRVSet.from_counts(
        np.ones((1, 1, 10), dtype=int), ["Animals"], [f"down.0/h{h}" for h in range(10)]
    )
    with pytest.raises(HRVInputError, match="heads"):
        excite(tiny_pipe, "a cat and a frog", method="ae_hrv", hrv=other, steps=1, progress=False)


def test_excite_command_writes_a_and_e_s_layout(tiny_model_dir, hrv, tmp_path):
    import json

    from hrv.cli import main

    hrv.save(tmp_path / "hrv.npz")
    argv = ["excite", "--model", str(tiny_model_dir), "--hrv", str(tmp_path / "hrv.npz"), "--prompt"]
    argv += ["a cat and a dog", "--method", "ae_hrv", "--seeds", "1", "2", "--out", str(tmp_path / "out")]
    argv += ["--steps", "1", "--thresholds", "--device", "cpu"]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "out/a cat and a dog").iterdir()) == ["1.png", "2.png"]
    meta = json.loads((tmp_path / "out/excite.json").read_text())
    assert [s["positions"] for s in meta["subjects"]] == [[2], [5]]
    assert meta["settings"]["thresholds"] == {}
    assert [e["step"] for e in meta["trace"]] == [0, 0]
    assert main([*argv[:3], "--prompt", "a cat and a dog", "--method", "ae_hrv", "--out", "x"]) == 2


def test_sd_needs_no_subjects(tiny_pipe):
    from hrv.multiconcept import excite

    result = excite(tiny_pipe, "a cat on a mat", method="sd", steps=1, progress=False)
    assert result.subjects == [] and len(result.images) == 1
