"""The head intervention (hrv.attention.Intervention) against explicit attention written here by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrv.attention import Controller, Intervention, installed
from hrv.heads import HeadRegistry

B = 2  # conditional batch elements; the UNet batch is [uncond x B, cond x B]


@pytest.fixture(scope="module")
def registry(tiny_pipe):
    return HeadRegistry.from_unet(tiny_pipe.unet)


def _unet_inputs(pipe, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((2 * B, 4, 8, 8), generator=g)
    context = torch.randn((2 * B, 77, pipe.text_encoder.config.hidden_size), generator=g)
    return latents, torch.tensor(500), context


def _run_capturing(pipe, controller, layer, n_calls: int = 1):
    """Call the UNet ``n_calls`` times under ``controller``; capture the layer's (x, context, out) per call."""
    module = pipe.unet.get_submodule(layer.module_name)
    seen = []

    def hook(_m, args, kwargs, out):
        seen.append(
            (args[0].detach().clone(), kwargs["encoder_hidden_states"].detach().clone(), out.detach().clone())
        )

    handle = module.register_forward_hook(hook, with_kwargs=True)
    latents, t, context = _unet_inputs(pipe)
    try:
        with installed(pipe.unet, controller), torch.no_grad():
            for _ in range(n_calls):
                pipe.unet(latents, t, encoder_hidden_states=context)
    finally:
        handle.remove()
    return seen


def _reference_attention(attn, x, context, factors_cond):
    """softmax(QK^T/sqrt(d)) with the conditional half's probabilities times factors, by hand."""
    lin = lambda m, z: z @ m.weight.T + (m.bias if m.bias is not None else 0)  # noqa: E731
    n, hw, _ = x.shape
    heads = attn.heads
    q, k, v = lin(attn.to_q, x), lin(attn.to_k, context), lin(attn.to_v, context)
    d = q.shape[-1] // heads
    split = lambda z: z.view(n, -1, heads, d).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # (n, heads, HW, S)
    probs = probs.clone()
    probs[n // 2 :] = probs[n // 2 :] * factors_cond[:, :, None, :]
    out = (probs @ v).transpose(1, 2).reshape(n, hw, heads * d)
    return lin(attn.to_out[0], out)


def test_factors_match_explicit_attention(tiny_pipe, registry):
    layer = registry.layers[0]  # first CA layer: its inputs do not depend on the intervention
    g = torch.Generator().manual_seed(1)
    factors = torch.ones((B, registry.n_heads, 77))
    sl = layer.head_slice
    # element 0: two heads weakened like ordered weakening; element 1: arbitrary factors, negatives included
    factors[0, sl.start, 1:4] = -2.0
    factors[0, sl.start + 5, 1:4] = -2.0
    factors[1, sl] = torch.empty((layer.heads, 77)).uniform_(-2.0, 2.0, generator=g)
    ctl = Controller(registry, guidance=True, intervention=Intervention(factors))
    ((x, context, out),) = _run_capturing(tiny_pipe, ctl, layer)
    attn = tiny_pipe.unet.get_submodule(layer.module_name)
    with torch.no_grad():
        expected = _reference_attention(attn, x, context, factors[:, sl])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # the plain layer output differs from the steered one: the factors did something
    ((_, _, plain),) = _run_capturing(tiny_pipe, Controller(registry, guidance=True), layer)
    assert not torch.allclose(out[B:], plain[B:], atol=1e-4)
    # the unconditional half is untouched, bit for bit
    assert torch.equal(out[:B], plain[:B])


def test_identity_factors_give_identical_images(tiny_pipe, registry):
    kwargs = dict(
        prompt=["a red car", "photo of a cat"],
        num_inference_steps=3,
        guidance_scale=7.5,
        height=64,
        width=64,
        output_type="np",
    )
    latents = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = tiny_pipe(latents=latents.clone(), **kwargs).images
    ctl = Controller(
        registry, guidance=True, intervention=Intervention(torch.ones((1, registry.n_heads, 77)))
    )
    with installed(tiny_pipe.unet, ctl), torch.no_grad():
        same = tiny_pipe(latents=latents.clone(), **kwargs).images
    assert ctl.step == 4  # PNDM: steps + 1 UNet evaluations, all with the intervention active
    assert np.array_equal(plain, same)
    # processors were restored: the UNet again has diffusers' processors
    assert all(type(p).__module__.startswith("diffusers") for p in tiny_pipe.unet.attn_processors.values())


def test_step_window(tiny_pipe, registry):
    layer = registry.layers[0]
    factors = torch.ones((1, registry.n_heads, 77))
    factors[0, layer.head_slice, 1:5] = -2.0
    plain = _run_capturing(tiny_pipe, Controller(registry), layer, n_calls=6)
    steered = _run_capturing(
        tiny_pipe, Controller(registry, intervention=Intervention(factors, start=2, end=4)), layer, 6
    )
    changed = [not torch.equal(p[2], s[2]) for p, s in zip(plain, steered, strict=True)]
    assert changed == [False, False, True, True, False, False]
    open_ended = _run_capturing(
        tiny_pipe, Controller(registry, intervention=Intervention(factors, start=4)), layer, 6
    )
    assert [not torch.equal(p[2], s[2]) for p, s in zip(plain, open_ended, strict=True)] == [False] * 4 + [
        True
    ] * 2


def test_per_element_factors_stay_with_their_element(tiny_pipe, registry):
    """Element 0 identity, element 1 weakened: element 0's output equals the plain run's."""
    layer = registry.layers[0]
    factors = torch.ones((B, registry.n_heads, 77))
    factors[1, layer.head_slice, 1:6] = -2.0
    ((_, _, out),) = _run_capturing(
        tiny_pipe, Controller(registry, intervention=Intervention(factors)), layer
    )
    ((_, _, plain),) = _run_capturing(tiny_pipe, Controller(registry), layer)
    assert torch.equal(out[B], plain[B])  # conditional element 0
    assert not torch.allclose(out[B + 1], plain[B + 1], atol=1e-4)


def test_swapping_factors_on_one_controller_uses_the_new_factors(tiny_pipe, registry):
    """A controller reused with new factor tensors (freed ones' ids may be reused) applies the new ones."""
    layer = registry.layers[0]
    ctl = Controller(registry)
    results = []
    for value in (1.0, -2.0, 1.0, 0.5):
        factors = torch.ones((1, registry.n_heads, 77))
        factors[0, layer.head_slice, 1:5] = value
        ctl.intervention = Intervention(factors)
        del factors
        ctl.step = 0
        ((_, _, out),) = _run_capturing(tiny_pipe, ctl, layer)
        fresh = Controller(registry, intervention=Intervention(ctl.intervention.factors.clone()))
        ((_, _, expected),) = _run_capturing(tiny_pipe, fresh, layer)
        assert torch.equal(out, expected)
        results.append(out)
    assert torch.equal(results[0], results[2]) and not torch.equal(results[0], results[1])
