"""The attention-control mechanism (hrv.control): site registry, plain sampling, the moved tasks.

The moved tasks (ordered weakening, steering, HRV votes) are compared bit for bit with a plain
reference written here: diffusers' processors with, on the cross-attention modules only, explicit
softmax(QK^T/sqrt(d)) times the factors in the conditional half (heads whose factors are all 1
keep the fused kernel's output), and the conditional-half queries handed to the vote measure:
how the tasks ran before the mechanism existed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrv.control import (
    CaptureMaps,
    Controller,
    Edit,
    Layout,
    SourceMaps,
    UNetLayers,
    attention_probs,
    installed,
)
from hrv.heads import HeadRegistry
from hrv.models import initial_latents

SIZE = 64


class _Reference:
    """Cross attention by hand: SDPA output, explicit maps x factors on the conditional half."""

    def __init__(self, state: dict, layer):
        self.state, self.layer = state, layer

    def __call__(self, attn, x, encoder_hidden_states=None, attention_mask=None, **kwargs):
        n, hw, _ = x.shape
        heads = attn.heads
        q, k, v = attn.to_q(x), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        d = q.shape[-1] // heads
        q, k, v = (t.view(n, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        cond = slice(n // 2, n)
        if self.state.get("measure") is not None:
            self.state["measure"].record(attn, self.layer, q[cond])
        factors = self.state.get("factors")
        if factors is not None:
            f = factors[:, self.layer.head_slice]
            identity = (f == 1).all(dim=-1)
            if not bool(identity.all()):
                if self.state.get("per_element", True):  # hrv.weakening's batch-invariant path
                    per = lambda fn, a, b: torch.cat([fn(a[i : i + 1], b[i : i + 1]) for i in range(len(a))])  # noqa: E731
                else:
                    per = lambda fn, a, b: fn(a, b)  # noqa: E731
                probs = torch.softmax(
                    per(lambda a, b: a @ b.transpose(-1, -2), q[cond], k[cond]) * attn.scale, -1
                )
                steered = per(torch.matmul, probs * f[:, :, None, :], v[cond])
                out = out.clone()
                out[cond] = torch.where(identity[:, :, None, None], out[cond], steered)
        out = attn.to_out[0](out.transpose(1, 2).reshape(n, hw, heads * d))
        return attn.to_out[1](out)


class _referenced:
    """Install the reference on the cross-attention modules and an evaluation counter."""

    def __init__(self, pipe, state):
        self.pipe, self.state = pipe, state

    def __enter__(self):
        unet = self.pipe.unet
        self.originals = {}
        for layer in HeadRegistry.from_unet(unet).layers:
            module = unet.get_submodule(layer.module_name)
            self.originals[layer.module_name] = module.processor
            module.set_processor(_Reference(self.state, layer))
        self.state["step"] = 0

        def count(*_):
            if self.state.get("measure") is not None:
                self.state["measure"].end_evaluation(self.state["step"])
            self.state["step"] += 1

        self.handle = unet.register_forward_hook(count)

    def __exit__(self, *exc):
        self.handle.remove()
        for name, proc in self.originals.items():
            self.pipe.unet.get_submodule(name).set_processor(proc)


def test_sites_are_discovered_by_section_block_and_level(tiny_pipe):
    layers = UNetLayers.from_unet(tiny_pipe.unet)
    for kind in ("self", "cross"):
        sites = layers.of_kind(kind)
        assert len(sites) == 16  # SD v1 topology: 6 down, 1 mid, 9 up transformer blocks
        assert [s.section for s in sites] == ["down"] * 6 + ["mid"] + ["up"] * 9
        # resolution levels of SD v1: 64, 64, 32, 32, 16, 16 | 8 | 16 x3, 32 x3, 64 x3 at 512 px
        assert [s.level for s in sites] == [0, 0, 1, 1, 2, 2, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0]
        assert [s.block for s in sites if s.section == "up"] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [s.ca.position for s in layers.of_kind("cross")] == list(range(16))
    assert all(s.ca is None for s in layers.of_kind("self"))
    resnets = layers.of_kind("resnet")
    assert len(resnets) == 8 + 2 + 12  # 2 per down block, 2 in the mid block, 3 per up block
    pnp = [s for s in resnets if s.section == "up" and s.block == 1 and s.sub == 1]  # PnP's "decoder block 4"
    assert [s.module_name for s in pnp] == ["up_blocks.1.resnets.1"] and pnp[0].level == 2
    assert layers.of_kind("self")[0].query_positions(64, 64) == 4096
    assert layers.of_kind("self")[6].query_positions(64, 64) == 64
    chosen = layers.select("self", section="up", blocks=[2, 3])
    assert len(chosen) == 6 and all(
        ".attn1" in n and n.startswith(("up_blocks.2", "up_blocks.3")) for n in chosen
    )


@pytest.mark.parametrize("arch", ["sd21", "sdxl"])
def test_sites_of_other_architectures(arch):
    from hrv.archs import meta_unet

    layers = UNetLayers.from_unet(meta_unet(arch))
    n_cross = {"sd21": 16, "sdxl": 70}[arch]
    assert len(layers.of_kind("self")) == len(layers.of_kind("cross")) == n_cross
    levels = {s.level for s in layers.of_kind("cross")}
    assert levels == ({0, 1, 2, 3} if arch == "sd21" else {1, 2})


class _ReadEverything(Edit):
    kinds = frozenset({"self", "cross", "resnet"})
    halves = "both"

    def __init__(self):
        super().__init__()
        self.seen = {"qkv": 0, "maps": 0, "features": 0}

    def qkv(self, call, q, k, v):
        self.seen["qkv"] += 1

    def maps(self, call, probs):
        self.seen["maps"] += 1

    def features(self, call, hidden):
        self.seen["features"] += 1


def _sample(pipe, prompts, latents, steps=2, guidance=7.5):
    with torch.no_grad():
        return pipe(
            prompt=prompts,
            latents=latents.clone(),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=SIZE,
            width=SIZE,
            output_type="np",
        ).images


def test_reading_edits_everywhere_leave_sampling_bit_identical(tiny_pipe):
    latents = initial_latents(tiny_pipe, [0, 1], 5, SIZE, SIZE)
    prompts = ["a red car", "a cat on grass"]
    plain = _sample(tiny_pipe, prompts, latents)
    reader = _ReadEverything()
    ctl = Controller([reader])
    with installed(tiny_pipe.unet, ctl):
        same = _sample(tiny_pipe, prompts, latents)
    assert np.array_equal(plain, same)
    assert ctl.step == 3
    assert reader.seen == {"qkv": 3 * 32, "maps": 3 * 32, "features": 3 * 22}
    assert all(type(p).__module__.startswith("diffusers") for p in tiny_pipe.unet.attn_processors.values())


def test_weakening_is_bit_identical_to_the_plain_reference(tiny_pipe):
    from hrv.weakening import decode_each, head_order, prompt_word_count, sample_weakened, weakening_factors

    order = head_order(np.random.default_rng(0).random(128), "MoRHF")
    ks = [0, 3, 40]
    sampling = {"steps": 2, "guidance_scale": 7.5, "height": SIZE, "width": SIZE}
    prompt = "a photo of a red apple"
    images = sample_weakened(tiny_pipe, prompt, 7, order, ks, sampling=sampling)
    factors = weakening_factors(order, ks, prompt_word_count(tiny_pipe.tokenizer, prompt))
    with _referenced(tiny_pipe, {"factors": factors}), torch.no_grad():
        latent = initial_latents(tiny_pipe, [0], 7, SIZE, SIZE)
        out = tiny_pipe(
            prompt=[prompt] * 3,
            latents=latent.expand(3, -1, -1, -1).clone(),
            num_inference_steps=2,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
            output_type="latent",
        )
    expected = decode_each(tiny_pipe, out.images)
    for got, want in zip(images, expected, strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[2]))


def test_steering_is_bit_identical_to_the_plain_reference(tiny_pipe):
    from hrv.generate import render

    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    factors = torch.ones((1, registry.n_heads, 77))
    factors[0, :, 4] = torch.linspace(-1.0, 3.0, registry.n_heads)
    images = render(
        tiny_pipe, "A vase in lavender color", [3, 4], {"plain": None, "steered": factors},
        start=1, end=3, steps=3, height=SIZE, width=SIZE, batch_size=2, progress=False,
    )  # fmt: skip
    state = {"per_element": False}  # render's explicit maps are batched, as before the mechanism
    with _referenced(tiny_pipe, state), torch.no_grad():
        latents = torch.cat(
            [initial_latents(tiny_pipe, [0], s, SIZE, SIZE) for s in (3, 4) for _ in range(2)]
        )
        plain_rows = torch.ones_like(factors)
        per_step = []

        def switch(_m, args, kwargs):  # the reference's window: factors only at evaluations 1 and 2
            f = torch.cat([plain_rows, factors] * 2)
            state["factors"] = f if 1 <= state["step"] < 3 else None

        handle = tiny_pipe.unet.register_forward_pre_hook(switch, with_kwargs=True)
        try:
            per_step = tiny_pipe(
                prompt=["A vase in lavender color"] * 4,
                latents=latents,
                num_inference_steps=3,
                guidance_scale=7.5,
                height=SIZE,
                width=SIZE,
            ).images
        finally:
            handle.remove()
    got = [images["plain"][0], images["steered"][0], images["plain"][1], images["steered"][1]]
    for a, b in zip(got, per_step, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(got[0]), np.asarray(got[1]))


def test_votes_are_bit_identical_to_the_plain_reference(tiny_pipe, concepts):
    from hrv.accumulate import VoteMeasure, WordBank, accumulate, n_unet_evaluations
    from hrv.determinism import make_batch_invariant

    prompts = ["a red car", "a cat on grass", "a wooden table"]
    kwargs = dict(seed=2, steps=2, guidance_scale=7.5, height=SIZE, width=SIZE)
    votes = accumulate(tiny_pipe, concepts, prompts, [0, 1, 2], batch_size=3, progress=False, **kwargs)
    make_batch_invariant(tiny_pipe)
    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    n_evals = n_unet_evaluations(tiny_pipe, 2)
    measure = VoteMeasure(registry, WordBank.build(tiny_pipe, concepts), n_evals, "cpu")
    with _referenced(tiny_pipe, {"measure": measure}), torch.no_grad():
        measure.set_batch(2, [0, 1, 2])
        tiny_pipe(
            prompt=prompts,
            latents=initial_latents(tiny_pipe, [0, 1, 2], 2, SIZE, SIZE),
            num_inference_steps=2,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
            output_type="latent",
        )
        measure.flush()
    assert np.array_equal(votes, measure.counts.numpy())
    assert votes.sum() == n_evals * 3 * registry.n_heads


def test_explicit_maps_follow_the_modules_upcast_settings(tiny_pipe):
    layer = HeadRegistry.from_unet(tiny_pipe.unet).layers[0]
    attn = tiny_pipe.unet.get_submodule(layer.module_name)
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(2, 8, 16, 4, generator=g) * 8).to(torch.bfloat16)
    k = (torch.randn(2, 8, 77, 4, generator=g) * 8).to(torch.bfloat16)
    exact = torch.softmax(q.float() @ k.float().transpose(-1, -2) * attn.scale, dim=-1)
    low = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
    saved = attn.upcast_attention, attn.upcast_softmax
    try:
        attn.upcast_attention, attn.upcast_softmax = True, True
        up = attention_probs(attn, q, k)
        attn.upcast_attention, attn.upcast_softmax = False, False
        down = attention_probs(attn, q, k)
    finally:
        attn.upcast_attention, attn.upcast_softmax = saved
    assert up.dtype == down.dtype == torch.bfloat16
    assert torch.equal(up, exact.to(torch.bfloat16))
    assert torch.equal(down, low)
    assert not torch.equal(up, down)


def test_captured_maps_carry_gradients(tiny_pipe):
    """A capture edit under autograd: the maps' loss has a gradient on the latent, output unchanged."""
    maps = []
    capture = CaptureMaps(lambda site, step, p: maps.append(p), of=("cross",))
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)).requires_grad_()
    context = torch.randn((1, 77, tiny_pipe.text_encoder.config.hidden_size))
    ctl = Controller([capture], layout=Layout(guidance=False))
    with installed(tiny_pipe.unet, ctl), torch.enable_grad():
        out = tiny_pipe.unet(latents, 500, encoder_hidden_states=context).sample
        loss = sum(m[..., 3].mean() for m in maps)
        (grad,) = torch.autograd.grad(loss, latents)
    assert len(maps) == 16 and maps[0].requires_grad
    assert grad.abs().sum() > 0
    with torch.no_grad():
        plain = tiny_pipe.unet(latents, 500, encoder_hidden_states=context).sample
    assert torch.equal(out.detach(), plain)


class _CopySourceFeatures(Edit):
    kinds = frozenset({"resnet"})
    halves = "both"

    def features(self, call, hidden):
        hidden = hidden.clone()
        hidden[call.rows(1)] = hidden[call.rows(0)]
        return hidden


class _SourceKeysValues(Edit):
    kinds = frozenset({"self"})

    def qkv(self, call, q, k, v):
        src, tgt = call.rows(0), call.rows(1)
        k, v = k.clone(), v.clone()
        k[tgt], v[tgt] = k[src], v[src]
        return q, k, v


@pytest.mark.parametrize("edit_cls", [_CopySourceFeatures, _SourceKeysValues])
def test_pair_edits_change_targets_and_never_sources(tiny_pipe, edit_cls):
    """[source, target] groups, two pairs: the sources equal plain sampling, the targets change."""
    latents = torch.cat([initial_latents(tiny_pipe, [0], s, SIZE, SIZE) for s in (1, 2) for _ in range(2)])
    prompts = ["a red car", "a blue car"] * 2
    plain = _sample(tiny_pipe, prompts, latents)
    site = UNetLayers.from_unet(tiny_pipe.unet).of_kind(next(iter(edit_cls.kinds)))[-1].module_name
    ctl = Controller([edit_cls(sites=frozenset({site}))], layout=Layout(guidance=True, group=2))
    with installed(tiny_pipe.unet, ctl):
        edited = _sample(tiny_pipe, prompts, latents)
    assert np.array_equal(edited[[0, 2]], plain[[0, 2]])
    assert not np.allclose(edited[[1, 3]], plain[[1, 3]])


class _SourceMapsByHand:
    """Self attention of [source, target] groups by hand, as the maps path computed it: SDPA output;
    in the conditional half explicit maps one row at a time, and each target head whose maps
    differ from its source's takes ``source maps @ target values``."""

    def __call__(self, attn, x, encoder_hidden_states=None, attention_mask=None, **kwargs):
        n, hw, _ = x.shape
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        d = q.shape[-1] // attn.heads
        q, k, v = (t.view(n, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        maps = [
            torch.softmax((q[i : i + 1] @ k[i : i + 1].transpose(-1, -2)) * attn.scale, -1) for i in range(n)
        ]
        for src in range(n // 2, n, 2):
            changed = (maps[src] != maps[src + 1]).flatten(2).any(dim=-1)[0]  # (heads,)
            steered = (maps[src] @ v[src + 1 : src + 2])[0]
            out[src + 1] = torch.where(changed[:, None, None], steered, out[src + 1])
        out = out.transpose(1, 2).reshape(n, hw, -1)
        return attn.to_out[1](attn.to_out[0](out))


def test_source_maps_equal_the_maps_copied_by_hand(tiny_pipe):
    """SourceMaps computes only the sources' maps; the images are those of copying maps by hand
    (bit for bit: at the first evaluation the first layer's source and target maps are equal,
    and the target keeps the fused output there)."""
    latents = torch.cat([initial_latents(tiny_pipe, [0], s, SIZE, SIZE) for s in (1, 2) for _ in range(2)])
    prompts = ["a red car", "a blue car"] * 2
    plain = _sample(tiny_pipe, prompts, latents)
    ctl = Controller([SourceMaps()], layout=Layout(guidance=True, group=2), batch_invariant=True)
    with installed(tiny_pipe.unet, ctl):
        edited = _sample(tiny_pipe, prompts, latents)
    originals = dict(tiny_pipe.unet.attn_processors)
    for name in originals:
        if name.endswith("attn1.processor"):
            tiny_pipe.unet.get_submodule(name.removesuffix(".processor")).set_processor(_SourceMapsByHand())
    try:
        expected = _sample(tiny_pipe, prompts, latents)
    finally:
        tiny_pipe.unet.set_attn_processor(originals)
    assert np.array_equal(edited, expected)
    assert np.array_equal(edited[[0, 2]], plain[[0, 2]])
    assert not np.allclose(edited[[1, 3]], plain[[1, 3]])


def test_unet_rows_do_not_depend_on_a_batch_of_16_or_more(tiny_pipe):
    """1x1 convolutions round differently from 16 batch elements on (CPU): chunked by determinism."""
    from hrv.determinism import make_batch_invariant

    make_batch_invariant(tiny_pipe)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((18, 4, 8, 8), generator=g)
    emb = torch.randn((18, 77, tiny_pipe.text_encoder.config.hidden_size), generator=g)
    with torch.no_grad():
        whole = tiny_pipe.unet(x, 500, encoder_hidden_states=emb).sample
        two = tiny_pipe.unet(x[[0, 17]], 500, encoder_hidden_states=emb[[0, 17]]).sample
    assert torch.equal(whole[[0, 17]], two)
