"""Image editing (hrv.editing): P2P and P2P-HRV on the tiny model, token alignment, bad input.

References are written here: plain sampling of a prompt, explicit attention with maps swapped by
hand, token positions read off the real CLIP tokenizer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hrv.control import CaptureMaps, Controller, Layout, UNetLayers, installed
from hrv.editing import align_pair, edit_pairs, get_method, save_edit_outputs
from hrv.editing.method import Plan
from hrv.errors import HRVInputError
from hrv.heads import HeadRegistry
from hrv.hrvfile import HRVSet
from hrv.models import initial_latents

SIZE = 64
STEPS = 4  # PNDM: 5 UNet evaluations; cross 0.8 -> t < 4, self 0.4 -> t < 1, self 0.9 -> t < 3
LADDER = ["p2p", "p2p_self09", "p2p_hrv_flat", "p2p_hrv"]


@pytest.fixture(scope="module")
def hrv(tiny_pipe) -> HRVSet:
    names = HeadRegistry.from_unet(tiny_pipe.unet).names()
    rng = np.random.default_rng(0)
    values = rng.uniform(0.0, 4.0, (2, len(names))).astype(np.float32)
    values[0, :5] = 0.0  # zero weights exist in the released HRVs
    empty = np.zeros((0, 2, len(names)))
    return HRVSet(values, ["Color", "Shape"], names, empty.astype(np.float32), empty.astype(np.int64), {})


def _plain(pipe, prompt: str, seed: int) -> np.ndarray:
    from hrv.determinism import make_batch_invariant

    make_batch_invariant(pipe)
    with torch.no_grad():
        image = pipe(
            prompt=[prompt],
            latents=initial_latents(pipe, [0], seed, SIZE, SIZE),
            num_inference_steps=STEPS,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
        ).images[0]
    return np.asarray(image)


def _edit(pipe, hrv, pairs, methods=LADDER, seeds=(1, 2), **kwargs):
    return edit_pairs(
        pipe,
        pairs,
        methods,
        list(seeds),
        hrv=hrv,
        concept="Color",
        steps=STEPS,
        height=SIZE,
        width=SIZE,
        **kwargs,
    )


def test_source_is_plain_sampling_and_empty_windows_give_plain_targets(tiny_pipe, hrv):
    pair = ("a blue car on a road", "a red car on a road")
    edited = _edit(tiny_pipe, hrv, [pair], batch_size=2)
    empty = _edit(tiny_pipe, hrv, [pair], cross_steps=0.0, self_steps=0.0, batch_size=2)
    for s, seed in enumerate((1, 2)):
        source, target = _plain(tiny_pipe, pair[0], seed), _plain(tiny_pipe, pair[1], seed)
        assert np.array_equal(np.asarray(edited.images["source"][0][s]), source)
        assert np.array_equal(np.asarray(empty.images["source"][0][s]), source)
        for method in LADDER:
            assert np.array_equal(np.asarray(empty.images[method][0][s]), target), method
            assert not np.array_equal(np.asarray(edited.images[method][0][s]), target), method
    # each method changes the target differently
    firsts = [np.asarray(edited.images[m][0][0]) for m in LADDER]
    assert all(not np.array_equal(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1 :])


def test_batched_pairs_and_seeds_equal_one_group_at_a_time(tiny_pipe, hrv):
    pairs = [
        ("a blue car", "a red car"),
        ("a shirt with a stripe pattern", "a shirt with a greek-key pattern"),
    ]
    batched = _edit(tiny_pipe, hrv, pairs, methods=["p2p", "p2p_hrv"], batch_size=4)
    for p, pair in enumerate(pairs):
        alone = _edit(tiny_pipe, hrv, [pair], methods=["p2p_hrv"], seeds=(2,))
        assert np.array_equal(
            np.asarray(batched.images["p2p_hrv"][p][1]), np.asarray(alone.images["p2p_hrv"][0][0])
        )
        assert np.array_equal(
            np.asarray(batched.images["source"][p][1]), np.asarray(alone.images["source"][0][0])
        )


def _run_with_captures(pipe, hrv, pair, method):
    """The method's edits between two captures: the maps before (own) and after the edits."""
    from hrv.accumulate import n_unet_evaluations

    aligned = align_pair(pipe.tokenizer, *pair)
    layers = UNetLayers.from_unet(pipe.unet)
    weights = torch.from_numpy(hrv.vector("Color"))
    plan = Plan(layers, (aligned,), 1, n_unet_evaluations(pipe, STEPS), STEPS, weights)
    before, after = {}, {}
    keep = lambda store: lambda site, t, p: store.__setitem__((site.ca.position, t), p.detach().clone())  # noqa: E731
    edits = [CaptureMaps(keep(before)), *get_method(method).edits(plan), CaptureMaps(keep(after))]
    ctl = Controller(edits, layout=Layout(guidance=True, group=2))
    with installed(pipe.unet, ctl), torch.no_grad():
        pipe(
            prompt=[pair[0], pair[1]],
            latents=initial_latents(pipe, [0], 3, SIZE, SIZE).expand(2, -1, -1, -1).clone(),
            num_inference_steps=STEPS,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
            output_type="latent",
        )
    return aligned, layers, before, after


@pytest.mark.parametrize("method", ["p2p_hrv", "p2p_hrv_flat"])
def test_captured_maps_follow_the_p2p_hrv_rule(tiny_pipe, hrv, method):
    # stripe (1 token) -> greek-key (3 tokens): the target's columns 5, 6, 7 are edited, its
    # "pattern" (8) reads the source's "pattern" (6), EOT and padding shift by 2
    pair = ("a shirt with a stripe pattern", "a shirt with a greek-key pattern")
    aligned, layers, before, after = _run_with_captures(tiny_pipe, hrv, pair, method)
    assert aligned.edited == (5, 6, 7)
    source_of = {j: j for j in range(5)} | {8: 6} | {j: j - 2 for j in range(9, 77)}
    weights = np.ones(128) if method == "p2p_hrv_flat" else hrv.vector("Color")
    cross_end = int(0.8 * (STEPS + 1))
    for site in layers.of_kind("cross"):
        for t in range(STEPS + 1):
            pre, post = before[site.ca.position, t], after[site.ca.position, t]  # (2, heads, HW, 77)
            assert torch.equal(post[0], pre[0])  # the source is never changed
            if t >= cross_end:
                assert torch.equal(post[1], pre[1])
                continue
            for k in range(site.ca.heads):
                w = float(weights[site.ca.offset + k])
                for j in (5, 6, 7):
                    torch.testing.assert_close(post[1, k, :, j], pre[1, k, :, j] * w, rtol=1e-6, atol=0)
                for j, i in source_of.items():
                    assert torch.equal(post[1, k, :, j], pre[0, k, :, i])


def _explicit(attn, x, context, swap):
    """Attention by hand: softmax(QK^T/sqrt(d)), maps changed by ``swap(probs)``, times V."""
    lin = lambda m, z: z @ m.weight.T + (m.bias if m.bias is not None else 0)  # noqa: E731
    n, hw, _ = x.shape
    context = x if context is None else context
    q, k, v = lin(attn.to_q, x), lin(attn.to_k, context), lin(attn.to_v, context)
    d = q.shape[-1] // attn.heads
    q, k, v = (t.reshape(n, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
    probs = swap(torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1))
    out = (probs @ v).transpose(1, 2).reshape(n, hw, attn.heads * d)
    return lin(attn.to_out[0], out)


class _HandP2P:
    """P2P by hand for one pair [source, target] with one-to-one tokens: copy the source's maps."""

    def __init__(self, state, kind):
        self.state, self.kind = state, kind

    def __call__(self, attn, x, encoder_hidden_states=None, attention_mask=None, **kwargs):
        t = self.state["t"]
        on = t < (4 if self.kind == "cross" else 1) and (self.kind == "cross" or x.shape[1] <= 256)

        def swap(probs):  # rows: [u_src, u_tgt, c_src, c_tgt]
            if on:
                probs = probs.clone()
                probs[3] = probs[2]
            return probs

        return _explicit(attn, x, encoder_hidden_states, swap)


def _sample_pair(pipe, pair, seed):
    with torch.no_grad():
        return pipe(
            prompt=list(pair),
            latents=initial_latents(pipe, [0], seed, SIZE, SIZE).expand(2, -1, -1, -1).clone(),
            num_inference_steps=STEPS,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
            output_type="latent",
        ).images


def test_p2p_matches_a_hand_written_reference(tiny_pipe):
    """P2P's edits on [source, target] against attention by hand with the maps copied by hand."""
    from hrv.accumulate import n_unet_evaluations

    pair = ("a blue car", "a red car")  # one token per word: the mapper is the identity
    aligned = align_pair(tiny_pipe.tokenizer, *pair)
    plan = Plan(
        UNetLayers.from_unet(tiny_pipe.unet), (aligned,), 1, n_unet_evaluations(tiny_pipe, STEPS), STEPS, None
    )
    ctl = Controller(get_method("p2p").edits(plan), layout=Layout(guidance=True, group=2))
    with installed(tiny_pipe.unet, ctl):
        edited = _sample_pair(tiny_pipe, pair, 4)
    plain = _sample_pair(tiny_pipe, pair, 4)
    unet, state = tiny_pipe.unet, {"t": 0}
    originals = dict(unet.attn_processors)
    for name in originals:
        kind = "cross" if name.endswith("attn2.processor") else "self"
        unet.get_submodule(name.removesuffix(".processor")).set_processor(_HandP2P(state, kind))
    handle = unet.register_forward_hook(lambda *_: state.__setitem__("t", state["t"] + 1))
    try:
        expected = _sample_pair(tiny_pipe, pair, 4)
    finally:
        handle.remove()
        unet.set_attn_processor(originals)
    assert state["t"] == STEPS + 1
    gap = (expected[1] - plain[1]).abs().max()  # what the hand-made swap changes in the target
    assert gap > 1e-2
    assert (edited[1] - expected[1]).abs().max() < 1e-3 * gap  # explicit vs fused attention: rounding
    assert torch.equal(edited[0], plain[0])  # the source branch is plain sampling, bit for bit


def test_token_alignment_across_different_token_counts(tiny_pipe):
    tok = tiny_pipe.tokenizer
    # a(1) t(2) -(3) shirt(4) with(5) a(6) polka(7) -(8) dot(9) pattern(10) EOT(11)
    # a(1) t(2) -(3) shirt(4) with(5) a(6) leopard(7) pattern(8) EOT(9)
    a = align_pair(tok, "a T-shirt with a polka-dot pattern", "a T-shirt with a leopard pattern")
    assert a.edited == (7,) and a.word == "leopard"
    for j in range(7):
        assert a.mapper[j, j] == 1 and a.mapper[:, j].sum() == 1
    assert list(np.flatnonzero(a.mapper[:, 7])) == [7, 8, 9] and np.all(a.mapper[[7, 8, 9], 7] == 1)
    assert list(np.flatnonzero(a.mapper[:, 8])) == [10]  # "pattern" reads "pattern"
    assert list(np.flatnonzero(a.mapper[:, 9])) == [11]  # EOT reads EOT
    released = align_pair(
        tok, "a T-shirt with a polka-dot pattern", "a T-shirt with a leopard pattern", token_map="released"
    )
    assert list(np.flatnonzero(released.mapper[:, 8])) == [8]  # the released mapping: "pattern" reads "-"
    # stripe (1 token) -> greek-key (3): a(1) shirt(2) with(3) a(4) stripe(5) pattern(6) EOT(7)
    b = align_pair(tok, "a shirt with a stripe pattern", "a shirt with a greek-key pattern")
    assert b.edited == (5, 6, 7)
    assert all(
        b.mapper[5, j] == pytest.approx(1 / 3) and b.mapper[:, j].sum() == pytest.approx(1 / 3)
        for j in (5, 6, 7)
    )
    assert list(np.flatnonzero(b.mapper[:, 8])) == [6] and list(np.flatnonzero(b.mapper[:, 9])) == [7]
    rb = align_pair(
        tok, "a shirt with a stripe pattern", "a shirt with a greek-key pattern", token_map="released"
    )
    assert list(np.flatnonzero(rb.mapper[:, 8])) == [8]  # released: "pattern" reads padding
    # equal token counts: both mappings agree
    c = align_pair(tok, "a blue car", "a red car")
    d = align_pair(tok, "a blue car", "a red car", token_map="released")
    assert np.array_equal(c.mapper, np.eye(77, dtype=np.float32)) and np.array_equal(c.mapper, d.mapper)
    # a named word when several differ
    e = align_pair(tok, "a blue car on grass", "a red car on sand", word="red")
    assert e.edited == (2,) and e.swapped == (1, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pairs": [("a blue car on grass", "a red car on sand")]}, "differ in 2 words"),
        ({"pairs": [("a blue car", "a red sports car")]}, "as many words"),
        ({"pairs": [("a blue car", "a red car", "green")]}, "not a word of the target"),
        ({"methods": ["p2p", "no_such"]}, "unknown editing method"),
        ({"concept": "Flavour"}, "unknown concept"),
        ({"cross_steps": 1.5}, r"cross_steps must be a fraction of the steps in \[0, 1\]"),
        ({"self_steps": -0.1}, r"self_steps must be a fraction of the steps in \[0, 1\]"),
        ({"hrv": None}, "need HRVs and a concept"),
        ({"token_map": "google"}, "unknown token map"),
    ],
)
def test_bad_input_is_refused_before_sampling(tiny_pipe, hrv, kwargs, message):
    args = {"pairs": [("a blue car", "a red car")], "methods": ["p2p_hrv"], "hrv": hrv, "concept": "Color"}
    args.update(kwargs)
    pairs, methods = args.pop("pairs"), args.pop("methods")
    with pytest.raises(HRVInputError, match=message):
        edit_pairs(tiny_pipe, pairs, methods, [1], steps=STEPS, height=SIZE, width=SIZE, **args)


def test_command_line_writes_every_output_and_refuses_bad_input(tiny_model_dir, hrv, tmp_path, capsys):
    from hrv.cli import main

    hrv.save(tmp_path / "hrv.npz")
    base = ["edit", "--model", str(tiny_model_dir), "--hrv", str(tmp_path / "hrv.npz"), "--concept", "Color"]
    base += [
        "--source",
        "a blue car",
        "--target",
        "a red car",
        "--steps",
        "2",
        "--height",
        "64",
        "--width",
        "64",
    ]
    out = tmp_path / "edit"
    assert (
        main([*base, "--method", "p2p", "--method", "p2p_hrv", "--seeds", "3", "7-7", "--out", str(out)]) == 0
    )
    for folder in ("source", "p2p", "p2p_hrv"):
        assert sorted(p.name for p in (out / folder).iterdir()) == ["seed0003.png", "seed0007.png"]
    assert (out / "grid.png").is_file()
    meta = json.loads((out / "edit.json").read_text())
    assert meta["methods"]["p2p_hrv"]["cross_evaluations"] == int(0.8 * 3)
    assert meta["methods"]["p2p"]["self_steps"] == 0.4 and meta["pairs"][0]["word"] == "red"
    for bad, message in [
        (["--method", "p2p", "--seeds", "1", "--cross-steps", "2"], "--cross-steps must be a fraction"),
        (["--method", "nope", "--seeds", "1"], "unknown editing method"),
        (["--method", "p2p_hrv", "--seeds", "1", "--concept", "Flavour"], "unknown concept"),
    ]:
        capsys.readouterr()
        assert main([*base, *bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bars
        assert err.startswith("hrv edit: error:") and message in err
        assert not (tmp_path / "bad").exists()
    capsys.readouterr()
    # a multi-word difference without --word
    assert main([*base[:-10], "--source", "a blue car on grass", "--target", "a red car on sand", "--steps", "2",
                 "--method", "p2p", "--seeds", "1", "--out", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "differ in 2 words" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    # a folder someone else wrote is not replaced
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep")
    assert main([*base, "--method", "p2p", "--seeds", "1", "--out", str(tmp_path / "theirs")]) == 2
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "keep"


def test_save_edit_outputs_of_several_pairs(tiny_pipe, hrv, tmp_path):
    pairs = [("a blue car", "a red car"), ("a blue bowl", "a green bowl")]
    result = _edit(tiny_pipe, hrv, pairs, methods=["p2p"], seeds=(5,), batch_size=2)
    out = save_edit_outputs(result, tmp_path / "two")
    assert (out / "pair000" / "p2p" / "seed0005.png").is_file() and (out / "pair001" / "grid.png").is_file()
    assert [p["target"] for p in json.loads((out / "edit.json").read_text())["pairs"]] == [
        "a red car",
        "a green bowl",
    ]


def test_released_hrvs_by_name(tiny_pipe):
    from hrv.editing import resolve_hrv

    released = resolve_hrv("sd14")
    released.check_heads(HeadRegistry.from_unet(tiny_pipe.unet).names())  # SD v1.4's 128 heads
    assert released.vector("Color").shape == (128,) and released.vector("Color").sum() == pytest.approx(
        128, abs=1e-2
    )
