"""PnP, MasaCtrl and FPE on the tiny model, checked against the tensors themselves.

Each pair runs as one batch ``[u_src, u_tgt, c_src, c_tgt]`` from the seed's latent. Every
attention call's input and output are recorded with forward hooks (outside the mechanism), and
every row's output is recomputed by hand: ``softmax(q k^T * scale) v`` with q, k and v each taken
from the row the method's definition says (the target's own, or the source's of the same half),
in the layers and evaluations written out here by module name. ResBlock features are checked the
same way at ``conv2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from hrv.control import Controller, Layout, UNetLayers, installed
from hrv.determinism import make_batch_invariant
from hrv.editing.fpe import FPE
from hrv.editing.masactrl import MasaCtrl
from hrv.editing.pnp import PnP
from hrv.errors import HRVInputError
from hrv.models import initial_latents

SIZE = 128  # 16x16 latent: levels 0..3 are 16x16, 8x8, 4x4, 2x2 (a 1x1 map cannot change)
STEPS = 6  # PNDM: 7 UNet evaluations
N_EVAL = 7
SOURCE, TARGET, SEED = "a red car on a road", "a blue car on a road", 10
U_SRC, U_TGT, C_SRC, C_TGT = range(4)

# the official SD 1.x layer choices, by module name (the tiny UNet has SD 1.x's blocks)
UP_ALL = [f"up_blocks.{b}.attentions.{a}" for b in (1, 2, 3) for a in range(3)]
PNP_QK = UP_ALL[1:]  # output blocks 4-11
PNP_FEATURE = "up_blocks.1.resnets.1"  # output block 4
MASACTRL = UP_ALL[3:]  # the last six: 32x32 and 64x64 at 512 px
FPE_LAYERS = [
    *(f"down_blocks.{b}.attentions.{a}" for b in (1, 2) for a in (0, 1)),
    "mid_block.attentions.0",
    *UP_ALL[:6],
]  # query positions <= 32x32 at 512 px


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    make_batch_invariant(tiny_pipe)  # a branch's image must not depend on the batch it is in
    return tiny_pipe


@pytest.fixture(scope="module")
def layers(pipe) -> UNetLayers:
    return UNetLayers.from_unet(pipe.unet)


def _sample(pipe, prompts: list[str]) -> torch.Tensor:
    latent = initial_latents(pipe, [0], SEED, SIZE, SIZE)
    return pipe(
        prompts,
        latents=latent.repeat(len(prompts), 1, 1, 1),
        num_inference_steps=STEPS,
        height=SIZE,
        width=SIZE,
        output_type="latent",
    ).images


@dataclass
class Record:
    """Inputs and outputs of every attention and ResBlock call, by (module name, evaluation)."""

    attn: dict = field(default_factory=dict)
    conv: dict = field(default_factory=dict)
    step: int = 0


def run_pair(pipe, edits, record: Record | None = None, group: int = 2) -> torch.Tensor:
    """Final latents [source, target, ...] of the pair under ``edits`` (``group`` branches: the
    source and ``group - 1`` targets); ``record`` gets every call."""
    controller = Controller(edits, layout=Layout(guidance=True, group=group), batch_invariant=True)
    handles = []
    with installed(pipe.unet, controller, kinds={"self", "cross", "resnet"}):
        if record is not None:  # registered after the mechanism's hooks: they see its output
            for name, module in pipe.unet.named_modules():
                if name.endswith(("attn1", "attn2")):

                    def hook(_m, args, kwargs, out, name=name):
                        ctx = kwargs.get("encoder_hidden_states")
                        record.attn[name, record.step] = (args[0], args[0] if ctx is None else ctx, out)

                    handles.append(module.register_forward_hook(hook, with_kwargs=True))
                elif re.fullmatch(r"(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.resnets\.\d+", name):

                    def conv_hook(_m, args, out, name=name):
                        record.conv[name, record.step] = (args[0], out)

                    handles.append(module.conv2.register_forward_hook(conv_hook))
            handles.append(
                pipe.unet.register_forward_hook(lambda *_: setattr(record, "step", record.step + 1))
            )
        try:
            return _sample(pipe, [SOURCE] + [TARGET] * (group - 1))
        finally:
            for h in handles:
                h.remove()


@pytest.fixture(scope="module")
def plain(pipe) -> dict[str, torch.Tensor]:
    return {p: _sample(pipe, [p])[0] for p in (SOURCE, TARGET)}


def by_hand(attn, x, ctx, q_rows, k_rows, v_rows) -> torch.Tensor:
    """Row i's output: softmax(q[q_rows[i]] k[k_rows[i]]^T * scale) v[v_rows[i]], then to_out."""
    heads = attn.heads

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(attn.to_q(x[q_rows])), split(attn.to_k(ctx[k_rows])), split(attn.to_v(ctx[v_rows]))
    probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    return attn.to_out[1](attn.to_out[0](out))


def check_attention(pipe, record: Record, rule) -> int:
    """Every recorded attention call against ``by_hand`` with the rows ``rule(block, kind, step)``
    gives (q_rows, k_rows, v_rows; None = every row its own); returns how many calls were edited,
    each checked also to differ from the unedited attention."""
    edited = 0
    own = [0, 1, 2, 3]
    for (name, step), (x, ctx, out) in record.attn.items():
        block = name.split(".transformer_blocks")[0]
        kind = "self" if name.endswith("attn1") else "cross"
        rows = rule(block, kind, step) or (own, own, own)
        attn = pipe.unet.get_submodule(name)
        with torch.no_grad():
            want = by_hand(attn, x, ctx, *rows)
            torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4, msg=f"{name} at evaluation {step}")
            if rows != (own, own, own):
                edited += 1
                unedited = by_hand(attn, x, ctx, own, own, own)
                assert not torch.allclose(out, unedited, atol=1e-4), (
                    f"{name} at {step}: the edit changed nothing"
                )
            assert torch.equal(out[[U_SRC, C_SRC]], out[[U_SRC, C_SRC]])
    return edited


def test_defaults_are_the_official_sd1_layers(layers):
    from hrv.archs import meta_unet

    sd14, sd21 = (UNetLayers.from_unet(meta_unet(arch)) for arch in ("sd14", "sd21"))
    for ly in (layers, sd14, sd21):  # SD 2.x has SD 1.x's blocks: the same modules
        features, qk = PnP().build(ly, 51)
        assert features.sites == {PNP_FEATURE} and (features.start, features.end) == (0, 40)
        assert {n.split(".transformer_blocks")[0] for n in qk.sites} == set(PNP_QK) and qk.end == 25
        (masa,) = MasaCtrl().build(ly, 51)
        assert {n.split(".transformer_blocks")[0] for n in masa.sites} == set(MASACTRL)
        assert (masa.start, masa.end) == (4, None)
        (fpe,) = FPE().build(ly, 51)
        assert {n.split(".transformer_blocks")[0] for n in fpe.sites} == set(FPE_LAYERS) and fpe.end == 40
    assert all(n.endswith("attn1") for n in qk.sites | masa.sites | fpe.sites)


def test_sdxl_reading_of_the_defaults():
    from hrv.archs import meta_unet

    xl = UNetLayers.from_unet(meta_unet("sdxl"))
    features, qk = PnP().build(xl, 50)
    assert features.sites == {"up_blocks.0.resnets.1"}
    assert {n.split(".transformer_blocks")[0] for n in qk.sites} == {
        "up_blocks.0.attentions.1",
        "up_blocks.0.attentions.2",
        *(f"up_blocks.1.attentions.{a}" for a in range(3)),
    } and len(qk.sites) == 26
    (masa,) = MasaCtrl().build(xl, 50)
    assert {n.split(".transformer_blocks")[0] for n in masa.sites} == {
        f"up_blocks.1.attentions.{a}" for a in range(3)
    }
    assert len(masa.sites) == 6  # MasaCtrl's SDXL start layer 64 of 70
    assert len(FPE().build(xl, 50)[0].sites) == 70 and len(FPE(min_level=2).build(xl, 50)[0].sites) == 60


@pytest.mark.parametrize("method", [PnP(), MasaCtrl(), FPE()], ids=["pnp", "masactrl", "fpe"])
def test_source_branch_is_plain_sampling_and_only_the_methods_slot_changes(pipe, layers, plain, method):
    # one group [source, a target no method edits, this method's target (slot 2)]
    out = run_pair(pipe, method.build(layers, N_EVAL, slot=2), group=3)
    assert torch.equal(out[0], plain[SOURCE])
    assert torch.equal(out[1], plain[TARGET])
    assert not torch.allclose(out[2], plain[TARGET], atol=1e-3)  # and the method did edit its target


@pytest.mark.parametrize(
    "method",
    [PnP(feature_steps=0.0, qk_steps=0.0), MasaCtrl(start_step=N_EVAL), FPE(steps=0.0)],
    ids=["pnp", "masactrl", "fpe"],
)
def test_an_empty_window_gives_plain_sampling_of_the_target(pipe, layers, plain, method):
    out = run_pair(pipe, method.build(layers, N_EVAL))
    assert torch.equal(out[0], plain[SOURCE]) and torch.equal(out[1], plain[TARGET])


def test_pnp_injects_features_and_queries_keys_of_the_same_half(pipe, layers):
    record = Record()
    run_pair(pipe, PnP().build(layers, N_EVAL), record)
    qk_end, feature_end = int(0.5 * N_EVAL), int(0.8 * N_EVAL)  # 3 and 5
    src = [U_SRC, U_SRC, C_SRC, C_SRC]  # each row's source row: the same half
    own = [0, 1, 2, 3]

    def rule(block, kind, step):
        if kind == "self" and block in PNP_QK and step < qk_end:
            return src, src, own  # the source's q and k, the target's own v
        return None

    assert check_attention(pipe, record, rule) == len(PNP_QK) * qk_end
    injected = 0
    for (name, step), (x, out) in record.conv.items():
        with torch.no_grad():
            computed = pipe.unet.get_submodule(name).conv2(x)  # the ResBlock's own residual output
        if name == PNP_FEATURE and step < feature_end:
            injected += 1
            assert torch.equal(out[[U_TGT, C_TGT]], computed[[U_SRC, C_SRC]]), step
            assert not torch.allclose(computed[[U_TGT, C_TGT]], computed[[U_SRC, C_SRC]], atol=1e-4)
            assert torch.equal(out[[U_SRC, C_SRC]], computed[[U_SRC, C_SRC]])
        else:
            assert torch.equal(out, computed), (name, step)
    assert injected == feature_end


def test_masactrl_queries_attend_to_the_sources_keys_and_values(pipe, layers):
    record = Record()
    run_pair(pipe, MasaCtrl().build(layers, N_EVAL), record)
    src = [U_SRC, U_SRC, C_SRC, C_SRC]
    own = [0, 1, 2, 3]

    def rule(block, kind, step):
        if kind == "self" and block in MASACTRL and step >= 4:
            return own, src, src  # every row's own queries over the source's keys and values
        return None

    assert check_attention(pipe, record, rule) == len(MASACTRL) * (N_EVAL - 4)


def test_fpe_target_self_maps_are_the_sources_and_cross_attention_its_own(pipe, layers):
    record = Record()
    run_pair(pipe, FPE().build(layers, N_EVAL), record)
    own = [0, 1, 2, 3]
    maps_from = [U_SRC, U_TGT, C_SRC, C_SRC]  # conditional half only

    def rule(block, kind, step):
        if kind == "self" and block in FPE_LAYERS and step < int(0.8 * N_EVAL):
            return maps_from, maps_from, own  # the source's maps times the target's values
        return None  # cross attention, other layers and evaluations: every row its own

    assert check_attention(pipe, record, rule) == len(FPE_LAYERS) * int(0.8 * N_EVAL)


def test_bad_settings_are_clear_errors(layers):
    with pytest.raises(HRVInputError, match=r"pnp feature_steps must be a fraction of the steps in \[0, 1\]"):
        PnP(feature_steps=1.2).build(layers, N_EVAL)
    with pytest.raises(HRVInputError, match="pnp qk_steps"):
        PnP(qk_steps=-0.1).build(layers, N_EVAL)
    with pytest.raises(
        HRVInputError, match="pnp level 5: this UNet's decoder has self-attention at levels 2, 1, 0"
    ):
        PnP(level=5).build(layers, N_EVAL)
    with pytest.raises(HRVInputError, match="pnp unit 3: decoder level 2 has units 0, 1, 2"):
        PnP(unit=3).build(layers, N_EVAL)
    with pytest.raises(HRVInputError, match="fpe steps"):
        FPE(steps=2.0).build(layers, N_EVAL)
    with pytest.raises(HRVInputError, match="fpe min_level 4 selects no self layer"):
        FPE(min_level=4).build(layers, N_EVAL)
    with pytest.raises(HRVInputError, match="masactrl start_step"):
        MasaCtrl(start_step=-1).build(layers, N_EVAL)
    with pytest.raises(HRVInputError, match="masactrl max_level"):
        MasaCtrl(max_level=-1).build(layers, N_EVAL)


def _decoded(pipe, latents: torch.Tensor) -> list:
    from hrv.weakening import decode_each

    return [np.asarray(im) for im in decode_each(pipe, latents)]


def test_edit_pairs_runs_every_baseline_on_one_source(pipe, layers, plain):
    from hrv.editing import edit_pairs
    from hrv.editing.sdedit import sdedit

    methods = ["sdedit_0.5", "pnp", "masactrl", "fpe", "sdedit_0.7"]
    result = edit_pairs(pipe, [(SOURCE, TARGET)], methods, [SEED], steps=STEPS, height=SIZE, width=SIZE)
    got = {name: np.asarray(result.images[name][0][0]) for name in ["source", *methods]}
    assert np.array_equal(got["source"], _decoded(pipe, plain[SOURCE][None])[0])
    for name, method in (("pnp", PnP()), ("masactrl", MasaCtrl()), ("fpe", FPE())):
        alone = run_pair(pipe, method.build(layers, N_EVAL))  # the method's pair without the others
        assert np.array_equal(got[name], _decoded(pipe, alone[1:])[0]), name
    for name, strength in (("sdedit_0.5", 0.5), ("sdedit_0.7", 0.7)):
        want = sdedit(
            pipe,
            plain[SOURCE][None],
            [TARGET],
            [SEED],
            strength=strength,
            steps=STEPS,
            scheduler=None,
            output_type="latent",
        )
        assert np.array_equal(got[name], _decoded(pipe, want)[0]), name
    assert result.settings["methods"]["sdedit_0.7"] == {"strength": 0.7, "denoising_steps": 4}
    assert result.settings["methods"]["pnp"]["feature_evaluations"] == 5


def test_the_scheduler_setting_reaches_every_method(pipe):
    from hrv.editing import edit_pairs
    from hrv.editing.schedulers import with_scheduler

    ddim = edit_pairs(
        pipe,
        [(SOURCE, TARGET)],
        ["sdedit_0.5"],
        [SEED],
        steps=STEPS,
        height=SIZE,
        width=SIZE,
        scheduler="ddim",
    )
    assert (
        ddim.settings["sampling"]["scheduler"] == "DDIMScheduler"
        and ddim.settings["sampling"]["unet_evaluations"] == STEPS
    )
    plain_ddim = _sample(with_scheduler(pipe, "ddim"), [SOURCE])
    assert np.array_equal(np.asarray(ddim.images["source"][0][0]), _decoded(pipe, plain_ddim)[0])
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"  # the caller's pipeline is left as it was
    with pytest.raises(HRVInputError, match="unknown editing scheduler 'euler'"):
        edit_pairs(pipe, [(SOURCE, TARGET)], ["pnp"], [SEED], steps=STEPS, scheduler="euler")
    with pytest.raises(HRVInputError, match="SDEdit strength 0.5 runs no step of 1"):
        edit_pairs(pipe, [(SOURCE, TARGET)], ["sdedit_0.5"], [SEED], steps=1, height=SIZE, width=SIZE)


def test_hrv_edit_runs_the_baselines(tiny_model_dir, tmp_path):
    import json

    from hrv.cli import main

    out = tmp_path / "edit"
    args = ["edit", "--model", str(tiny_model_dir), "--source", SOURCE, "--target", TARGET, "--seeds", "3"]
    args += ["--steps", "3", "--height", "64", "--width", "64", "--device", "cpu", "--dtype", "float32"]
    methods = ["pnp", "masactrl", "fpe", "sdedit_0.7"]
    assert (
        main(
            [*args, *(x for m in methods for x in ("--method", m)), "--scheduler", "ddim", "--out", str(out)]
        )
        == 0
    )
    assert all((out / m / "seed0003.png").is_file() for m in ["source", *methods])
    meta = json.loads((out / "edit.json").read_text())
    assert meta["sampling"]["scheduler_setting"] == "ddim" and set(meta["methods"]) == set(methods)


@pytest.mark.parametrize("method", [PnP(), MasaCtrl(), FPE()], ids=["pnp", "masactrl", "fpe"])
def test_the_defaults_run_on_an_sdxl_shaped_unet(method):
    """A small random UNet with SDXL's structure (no attention at level 0, transformers of depth 2,
    added text/time conditioning): one evaluation inside each method's window edits the target's
    rows and leaves the source's as a run of the source alone gives them."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        attention_head_dim=(2, 4, 4),
        transformer_layers_per_block=(1, 2, 2),
        cross_attention_dim=16,
        norm_num_groups=8,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=16 + 6 * 4,
    ).eval()
    layers = UNetLayers.from_unet(unet)
    x = torch.randn(1, 4, 8, 8).repeat(4, 1, 1, 1)  # [u_src, u_tgt, c_src, c_tgt] share the latent
    text, pooled = torch.randn(4, 7, 16), torch.randn(4, 16)
    text[0], pooled[0] = text[1], pooled[1]  # one unconditional embedding for both branches

    def forward(rows, edits=(), step=0):
        cond = {"text_embeds": pooled[rows], "time_ids": torch.zeros(len(rows), 6)}
        controller = Controller(list(edits), layout=Layout(guidance=True, group=len(rows) // 2))
        controller.step = step
        with installed(unet, controller, kinds={"self", "cross", "resnet"}), torch.no_grad():
            return unet(x[rows], 500, encoder_hidden_states=text[rows], added_cond_kwargs=cond).sample

    step = 5  # inside every default window (PnP q/k < 25, FPE < 40, MasaCtrl >= 4 of 50)
    edited = forward([0, 1, 2, 3], method.build(layers, 50), step)
    plain = forward([0, 1, 2, 3])
    torch.testing.assert_close(edited[[0, 2]], forward([0, 2]), atol=1e-5, rtol=1e-5)
    assert (edited[3] - plain[3]).abs().max() > 1e-3  # the conditional target changed
