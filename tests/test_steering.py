"""Concept strengthening/adjusting: rescaling vectors against the formulas, and where the factors land."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrv.attention import Controller, Intervention, installed
from hrv.errors import HRVInputError
from hrv.heads import HeadRegistry
from hrv.hrvfile import HRVSet
from hrv.steering import Steering, build_intervention, rescaling_vector, token_factors

CONCEPTS = ["Color", "Plants", "Animals", "Empty"]
SIZE = 64  # pixels: an 8x8 latent keeps the tiny model fast


@pytest.fixture(scope="module")
def registry(tiny_pipe) -> HeadRegistry:
    return HeadRegistry.from_unet(tiny_pipe.unet)


@pytest.fixture(scope="module")
def planted(registry) -> HRVSet:
    """HRVs with values up to 20 (some above the clamp 9), one all-zero concept."""
    rng = np.random.default_rng(7)
    n = registry.n_heads
    hrv = rng.uniform(0, 20, size=(len(CONCEPTS), n)).astype(np.float32)
    hrv[3] = 0.0
    return HRVSet(
        hrv, CONCEPTS, registry.names(), np.zeros((0, 4, n), np.float32), np.zeros((0, 4, n), np.int64)
    )


def expected_vector(d: np.ndarray, u: np.ndarray, b: float | None) -> list[float]:
    """The paper's formula written element by element."""
    out = []
    for dh, uh in zip(d.tolist(), u.tolist(), strict=True):
        if b is not None:
            dh, uh = min(dh, b), min(uh, b)
        out.append(2 * dh - uh)
    return out


@pytest.mark.parametrize("clamp", [None, 9.0, 2.5])
def test_adjusting_matches_the_formula(planted, clamp):
    got = rescaling_vector(planted, "Color", "Plants", clamp)
    want = expected_vector(planted.hrv[0], planted.hrv[1], clamp)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    assert got.dtype == np.float32 and got.shape == (planted.hrv.shape[1],)


@pytest.mark.parametrize("clamp", [None, 9.0])
def test_desired_equal_undesired_is_strengthening(planted, clamp):
    strengthening = rescaling_vector(planted, "Color", None, clamp)
    expected = planted.hrv[0] if clamp is None else np.minimum(planted.hrv[0], clamp)
    np.testing.assert_allclose(strengthening, expected, rtol=1e-6)
    np.testing.assert_allclose(rescaling_vector(planted, "Color", "color", clamp), strengthening, rtol=1e-6)
    assert Steering("Color").method == "strengthening" and Steering("Color", "Plants").method == "adjusting"


def test_clamp_limits_each_element(planted):
    d = planted.hrv[0]
    assert (d > 9).any() and (d < 9).any()  # the planted row exercises both sides of the clamp
    got = rescaling_vector(planted, "Color", None, 9.0)
    assert got.max() <= 9.0
    np.testing.assert_array_equal(got[d < 9], d[d < 9])
    for bad in (0.0, -1.0):
        with pytest.raises(HRVInputError, match="clamp"):
            rescaling_vector(planted, "Color", None, bad)


def test_unknown_and_undefined_concepts(planted):
    with pytest.raises(HRVInputError, match="unknown concept 'Colour'.*Color"):
        rescaling_vector(planted, "Colour", "Plants")
    with pytest.raises(HRVInputError, match="unknown concept 'Trees'"):
        rescaling_vector(planted, "Color", "Trees")
    with pytest.raises(HRVInputError, match="'Empty' has no defined HRV"):
        rescaling_vector(planted, "Empty", "Plants")
    with pytest.warns(UserWarning, match="'Empty' has no defined HRV"):
        got = rescaling_vector(planted, "Color", "Empty")
    np.testing.assert_allclose(got, 2 * planted.hrv[0], rtol=1e-6)


def test_token_factors_only_on_chosen_columns():
    vec = np.arange(1, 6, dtype=np.float32)
    f = token_factors(vec, [2, 3, 4], n_tokens=10)
    assert f.shape == (1, 5, 10)
    want = np.ones((5, 10), np.float32)
    for h in range(5):
        for p in (2, 3, 4):
            want[h, p] = vec[h]
    np.testing.assert_array_equal(f[0].numpy(), want)
    with pytest.raises(HRVInputError, match="outside"):
        token_factors(vec, [10], n_tokens=10)


def test_mismatched_head_names_give_a_clear_error(planted, registry, tmp_path, root):
    from hrv.steps import import_official

    sdxl = import_official(
        "sdxl",
        tmp_path / "sdxl.npz",
        root / "resources/reference",
        root / "resources/concepts/concepts_34x10.csv",
    )
    with pytest.raises(HRVInputError, match="1300 heads.*128 heads"):
        build_intervention(sdxl, registry.names(), Steering("Color", "Plants"), [4])
    shifted = HRVSet(
        planted.hrv, CONCEPTS, registry.names()[1:] + ["up.9/h0"], planted.hrv_per_timestep, planted.counts
    )
    with pytest.raises(HRVInputError, match="names differ"):
        build_intervention(shifted, registry.names(), Steering("Color", "Plants"), [4])


def test_empty_step_window_is_refused(planted, registry):
    with pytest.raises(HRVInputError, match="step window"):
        build_intervention(planted, registry.names(), Steering("Color", "Plants", start=3, end=3), [4])


def _call_layer(module, hidden, context, controller):
    captured = []
    controller.capture = lambda layer, step, probs: captured.append(probs.detach().clone())
    with torch.no_grad():
        out = module(hidden, encoder_hidden_states=context)
    return out, captured[0]


def test_factor_lands_on_chosen_columns_of_every_head_and_only_in_the_conditional_half(
    tiny_pipe, planted, registry
):
    """Each CA layer called directly with the same inputs, plain and steered; every head checked."""
    positions = [4, 5]
    iv = build_intervention(planted, registry.names(), Steering("Color", "Plants"), positions)
    vector = expected_vector(planted.hrv[0], planted.hrv[1], None)
    gen = torch.Generator().manual_seed(0)
    cross = tiny_pipe.unet.config.cross_attention_dim
    plain_ctl, steered_ctl = Controller(registry), Controller(registry, intervention=iv)
    for layer in registry.layers:
        module = tiny_pipe.unet.get_submodule(layer.module_name)
        hidden = torch.randn(2, 16, module.to_q.in_features, generator=gen)
        context = torch.randn(2, 77, cross, generator=gen)  # [unconditional, conditional]
        with installed(tiny_pipe.unet, plain_ctl):
            plain_out, plain_probs = _call_layer(module, hidden, context, plain_ctl)
        with installed(tiny_pipe.unet, steered_ctl):
            steered_out, steered_probs = _call_layer(module, hidden, context, steered_ctl)
        # probabilities (conditional half): chosen columns scaled by the head's factor, the rest equal
        others = [s for s in range(77) if s not in positions]
        assert torch.equal(steered_probs[..., others], plain_probs[..., others])
        for k in range(layer.heads):
            h = layer.offset + k
            torch.testing.assert_close(
                steered_probs[0, k][:, positions],
                plain_probs[0, k][:, positions] * vector[h],
                rtol=1e-5,
                atol=1e-7,
            )
        # the unconditional half's output is bit-identical, the conditional half's changed
        assert torch.equal(steered_out[0], plain_out[0])
        assert not torch.allclose(steered_out[1], plain_out[1])


def _pipeline_capture(pipe, registry, prompt, intervention, steps=2):
    ctl = Controller(registry, intervention=intervention)
    probs: dict = {}
    ctl.capture = lambda layer, step, p: probs.__setitem__((layer.position, step), p.detach().clone())
    first = pipe.unet.get_submodule(registry.layers[0].module_name)
    outputs: dict = {}
    hook = first.register_forward_hook(lambda m, a, o: outputs.setdefault(ctl.step, o.detach().clone()))
    from hrv.models import initial_latents

    try:
        with installed(pipe.unet, ctl), torch.no_grad():
            pipe(
                prompt=prompt,
                latents=initial_latents(pipe, [0], 3, SIZE, SIZE),
                num_inference_steps=steps,
                guidance_scale=7.5,
                height=SIZE,
                width=SIZE,
                output_type="latent",
            )
    finally:
        hook.remove()
    return probs, outputs


def test_in_a_pipeline_run_and_step_window(tiny_pipe, planted, registry):
    """Captured probabilities of a real sampling run: the window holds, the first layer sees the factors."""
    from hrv.tokens import select_tokens

    prompt = "A vase in lavender color"
    positions = select_tokens(tiny_pipe.tokenizer, prompt, "lavender")
    assert positions == [4]
    factors = build_intervention(planted, registry.names(), Steering("Color", "Plants"), positions).factors
    plain, plain_out = _pipeline_capture(tiny_pipe, registry, prompt, None)
    steered, steered_out = _pipeline_capture(
        tiny_pipe, registry, prompt, Intervention(factors, start=1, end=2)
    )
    n_layers = len(registry.layers)
    # before the window nothing changes, in any layer
    for pos in range(n_layers):
        assert torch.equal(steered[(pos, 0)], plain[(pos, 0)])
    # step 0 had no steering, so layer 0 at step 1 sees the same inputs: exactly factor x plain
    layer0 = registry.layers[0]
    f = factors[0, layer0.head_slice]  # (heads, 77)
    torch.testing.assert_close(steered[(0, 1)], plain[(0, 1)] * f[None, :, None, :], rtol=0, atol=0)
    assert not torch.equal(steered[(0, 1)], plain[(0, 1)])
    # the unconditional half of layer 0's output at step 1 is untouched, the conditional half is not
    batch = steered_out[1].shape[0]
    assert torch.equal(steered_out[1][: batch // 2], plain_out[1][: batch // 2])
    assert not torch.allclose(steered_out[1][batch // 2 :], plain_out[1][batch // 2 :])


def test_steer_writes_steered_baseline_and_grid(tiny_pipe, planted, tmp_path):
    from PIL import Image

    from hrv.generate import steer

    result = steer(
        tiny_pipe,
        planted,
        "A vase in lavender color",
        "lavender",
        "Color",
        "Plants",
        seeds="1-2",
        steps=2,
        height=SIZE,
        width=SIZE,
        batch_size=2,
        progress=False,
    )
    assert result.positions == [4] and result.seeds == [1, 2]
    # the baseline is the plain image of that seed's latent, randn(generator(2)) (identity factors
    # keep the fused kernel)
    from helpers_reference import readme_latent

    with torch.no_grad():
        plain = tiny_pipe(
            "A vase in lavender color",
            latents=readme_latent(tiny_pipe, 2, SIZE, SIZE),
            num_inference_steps=2,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
        ).images[0]
    assert np.array_equal(np.asarray(plain), np.asarray(result.baseline[1]))
    for s, b in zip(result.steered, result.baseline, strict=True):
        assert not np.array_equal(np.asarray(s), np.asarray(b))
    out = result.save(tmp_path / "lavender")
    for name in (
        "steered/seed_0001.png",
        "steered/seed_0002.png",
        "baseline/seed_0002.png",
        "grid.png",
        "steering.json",
    ):
        assert (out / name).is_file(), name
    grid = Image.open(out / "grid.png")
    assert grid.width >= 2 * SIZE and grid.height >= 2 * SIZE


def test_a_seed_gives_the_same_images_in_any_batch(tiny_pipe, planted, registry):
    """Chunks of unequal size (2 + 1 seeds) and a seed alone: identical images per (seed, variant)."""
    from hrv.generate import render

    prompt = "A vase in lavender color"
    factors = build_intervention(planted, registry.names(), Steering("Color", "Plants"), [4]).factors
    variants = {"sd": None, "adjusting": factors}
    kw = {"steps": 1, "height": SIZE, "width": SIZE, "progress": False}
    batched = render(tiny_pipe, prompt, [1, 2, 3], variants, batch_size=2, **kw)
    alone = render(tiny_pipe, prompt, [3], variants, batch_size=1, **kw)
    for name in variants:
        assert np.array_equal(np.asarray(batched[name][2]), np.asarray(alone[name][0])), name
    assert not np.array_equal(np.asarray(batched["sd"][2]), np.asarray(batched["adjusting"][2]))
