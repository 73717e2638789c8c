"""Issue 14: the paper run samples every stage at the paper's settings, bad input is refused with one
line and nothing written, outputs land exactly where asked, and presets work from any folder."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers_workflow import copy_workflow, snakemake, write_config

from hrv.cli import main
from hrv.config import resolve, resolve_model, resolve_stage_sampling, validate
from hrv.errors import HRVInputError

PAPER_SAMPLING = {"steps": 50, "guidance_scale": 7.5, "height": 512, "width": 512}
# the paper's value of every key name that feeds a sampler (names a new stage might use included)
PAPER_VALUES = {**PAPER_SAMPLING, "num_inference_steps": 50, "n_inference_steps": 50, "resolution": 512}


def _resolved(root, capsys, *files: str) -> dict:
    assert main(["config", *(str(root / f) for f in files)]) == 0
    return json.loads(capsys.readouterr().out)


def _sampler_settings(node, path=()):
    """Every (path, value) of a key that feeds a sampler, in stages that are switched on."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _sampler_settings(item, (*path, str(i)))
    if isinstance(node, dict):
        if node.get("enabled") is False or path == ("model_spec",):
            return
        for key, value in node.items():
            if key in PAPER_VALUES and not isinstance(value, dict):
                yield (*path, key), value
            else:
                yield from _sampler_settings(value, (*path, key))


# --- the paper run must run the paper -----------------------------------------------------------


def test_paper_config_samples_every_stage_at_the_papers_settings(root, capsys):
    cfg = _resolved(root, capsys, "config/config.yaml", "config/paper.yaml")
    found = list(_sampler_settings(cfg))
    # found by walking the config, so a stage added later is checked without naming it here
    stages = {p[:-2] for p, _ in found if len(p) >= 2 and p[-2] == "sampling"}
    assert {("weakening",), ("polysemy",), ()} <= stages
    wrong = {".".join(p): v for p, v in found if v != PAPER_VALUES[p[-1]]}
    assert not wrong, f"keys that feed a sampler but are not the paper's: {wrong}"
    for stage in stages - {()}:
        node = cfg
        for key in stage:
            node = node[key]
        assert node["sampling"] == PAPER_SAMPLING, stage
    # the demo keeps its small stage overrides, completed by the top-level keys it does not set
    demo = _resolved(root, capsys, "config/config.yaml")
    assert demo["weakening"]["sampling"] == {"steps": 5, "guidance_scale": 7.5, "height": 64, "width": 64}


def test_a_new_stage_gets_the_full_sampling_settings():
    cfg = {
        "sampling": {"steps": 50, "guidance_scale": 7.5, "height": 512, "width": 512},
        "newstage": {"sampling": {"steps": 3}},
        "other": {"nested": {"sampling": None}},
    }
    out = resolve_stage_sampling(cfg)
    assert out["newstage"]["sampling"] == {"steps": 3, "guidance_scale": 7.5, "height": 512, "width": 512}
    assert out["other"]["nested"]["sampling"] == cfg["sampling"]


def test_every_sampling_override_accepts_every_sampler_key(root):
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())
    top = set(schema["properties"]["sampling"]["properties"])

    def overrides(node, path=()):
        if isinstance(node, dict):
            for key, value in (node.get("properties") or {}).items():
                if key == "sampling" and path:
                    yield path, value
                yield from overrides(value, (*path, key))
            if isinstance(node.get("items"), dict):
                yield from overrides(node["items"], path)

    found = dict(overrides(schema))
    assert {("weakening",), ("polysemy",)} <= set(found)
    for path, node in found.items():
        assert set(node["properties"]) == top, path
        assert node["additionalProperties"] is False, path


def test_sdxl_preset_samples_with_pndm_and_sd15_points_at_the_mirror(tiny_model_dir, monkeypatch):
    from diffusers import EulerDiscreteScheduler

    import hrv.models
    from hrv.models import load_pipeline, model_preset, set_scheduler

    assert resolve_model("sdxl")["scheduler"] == "PNDMScheduler"
    assert model_preset("stabilityai/stable-diffusion-xl-base-1.0")["scheduler"] == "PNDMScheduler"
    assert resolve_model("sd14")["scheduler"] is None
    assert resolve_model("sd15")["source"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    pipe = load_pipeline(tiny_model_dir, device="cpu", dtype="float32")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    set_scheduler(pipe, "PNDMScheduler")
    pipe.scheduler.set_timesteps(50)
    assert type(pipe.scheduler).__name__ == "PNDMScheduler" and len(pipe.scheduler.timesteps) == 51
    # loading a preset that names a scheduler gives that scheduler
    preset = {"source": str(tiny_model_dir), "build": None, "scheduler": "EulerDiscreteScheduler"}
    monkeypatch.setattr(hrv.models, "model_preset", lambda source: preset if source == "mine" else None)
    assert type(load_pipeline("mine", device="cpu").scheduler).__name__ == "EulerDiscreteScheduler"


def test_only_selected_experiments_and_cases_need_their_concepts(root):
    from hrv.experiments import load_experiments
    from hrv.polysemy import read_cases
    from hrv.workflow import check_case_concepts

    mine = ["Animals", "Color", "Mood"]
    path = root / "resources/benchmarks/weakening_experiments.yaml"
    assert [e.name for e in load_experiments(path, select=["animals", "color"], concepts=mine)] == [
        "animals",
        "color",
    ]
    with pytest.raises(HRVInputError, match="'furniture' weakens concept 'Furniture'.*switch it off"):
        load_experiments(path, select=["furniture"], concepts=mine, missing_hint="switch it off")
    cases = read_cases(root / "resources/polysemy_cases.csv", ["lavender"])
    check_case_concepts(cases, ["color", "plants"], "")
    with pytest.raises(HRVInputError, match="'lavender' steers with concept.*Plants.*polysemy: "):
        check_case_concepts(cases, mine, "`polysemy: {enabled: false}`")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = copy_workflow(tmp_path_factory.mktemp("wf14"))
    rows = ["concept,word"] + [
        f"{c},{w}"
        for c, ws in {
            "Animals": ["dog", "cat"],
            "Color": ["red", "blue"],
            "Plants": ["fern", "moss"],
            "Fruits and Vegetables": ["pear", "kiwi"],
            "Image Style": ["cubist", "baroque"],
            "Mood": ["happy", "sad"],
        }.items()
        for w in ws
    ]
    (work / "mine.csv").write_text("\n".join(rows) + "\n")
    write_config(work, {"run": "t", "hrv": {"concepts": "mine.csv", "max_prompts": 12}}, "mine.yaml")
    return work


def test_a_custom_concept_set_plans_the_hrv_stage(workdir):
    # the demo's experiments and cases use concepts of this set; the unselected ones need others
    out = snakemake(workdir, "-n", "--configfile", "config/config.yaml", "mine.yaml").stdout
    assert "rule hrv_merge:" in out and "rule weaken:" in out and "rule polysemy_images:" in out
    write_config(workdir, {"weakening": {"experiments": ["furniture"]}}, "furniture.yaml")
    proc = snakemake(
        workdir, "-n", "--configfile", "config/config.yaml", "mine.yaml", "furniture.yaml", check=False
    )
    assert proc.returncode != 0 and "`weakening: {enabled: false}`" in proc.stdout + proc.stderr
    write_config(workdir, {"editing": {"sets": ["material"]}}, "material.yaml")
    proc = snakemake(
        workdir, "-n", "--configfile", "config/config.yaml", "mine.yaml", "material.yaml", check=False
    )
    assert proc.returncode != 0 and "`editing: {enabled: false}`" in proc.stdout + proc.stderr
    off = {stage: {"enabled": False} for stage in ("weakening", "polysemy", "editing")}
    write_config(workdir, off, "off.yaml")
    args = ("-n", "--configfile", "config/config.yaml", "mine.yaml", "furniture.yaml", "material.yaml")
    out = snakemake(workdir, *args, "off.yaml").stdout
    assert "rule hrv_merge:" in out
    assert not any(f"rule {r}" in out for r in ("weaken", "polysemy", "editing")), out


def test_a_missing_model_is_refused_when_planning(workdir):
    write_config(workdir, {"model": "./no-such-model"}, "nomodel.yaml")
    proc = snakemake(workdir, "-n", "--configfile", "config/config.yaml", "nomodel.yaml", check=False)
    assert proc.returncode != 0 and "model folder ./no-such-model does not exist" in proc.stdout + proc.stderr
    from hrv.config import check_model_available

    with pytest.raises(HRVInputError, match="not in the Hugging Face cache.*`hf download someone/absent`"):
        check_model_available(resolve_model("someone/absent"))
    check_model_available(resolve_model("tiny"))  # built by the workflow


def test_clip_weights_must_be_cached_when_planning(tmp_path):
    from hrv.config import check_clip_available

    clip = {"model": "ViT-H-14", "pretrained": "laion2b_s32b_b79k"}
    repo = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    with pytest.raises(HRVInputError, match=f"`hf download {repo} open_clip_pytorch_model.bin`"):
        check_clip_available(clip, cache_dir=tmp_path)
    # the Hugging Face cache's layout, planted: refs/main names the snapshot that holds the file
    folder = tmp_path / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs/main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    check_clip_available(clip, cache_dir=tmp_path)
    with pytest.raises(HRVInputError, match="neither a checkpoint file nor a weights tag"):
        check_clip_available({"model": "ViT-H-14", "pretrained": "laion2b_typo"})
    check_clip_available({"model": "tiny", "pretrained": None})


# --- config input that must be refused -----------------------------------------------------------


def test_every_schema_object_refuses_unknown_keys(root):
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())
    open_objects = []

    def visit(node, path):
        if not isinstance(node, dict):
            return
        if node.get("properties") and node.get("additionalProperties") is not False:
            open_objects.append(path or "(top level)")
        for key, value in (node.get("properties") or {}).items():
            visit(value, f"{path}.{key}".strip("."))
        visit(node.get("items"), f"{path}[]")

    visit(schema, "")
    assert not open_objects


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ({"modle": "sd14"}, r"config key \(top level\): Additional properties .*'modle'"),
        ({"plots": {"heatmapp": {}}}, "config key plots: Additional properties"),
        ({"weakening": {"extra_experiments": [{"nam": "x"}]}}, "config key weakening.extra_experiments.0"),
        ({"sampling": {"height": 100}}, "config key sampling.height: 100 is not a multiple of 8"),
        ({"sampling": {"width": 0}}, "config key sampling.width: 0 is less than the minimum"),
        ({"sampling": {"steps": 0}}, "config key sampling.steps: 0 is less than the minimum"),
        ({"weakening": {"sampling": {"height": 60}}}, "weakening.sampling.height: 60 is not a multiple"),
        ({"device": "gpu"}, "config key device: 'gpu' does not match"),
        ({"weakening": {"seeds": [-1]}}, "config key weakening.seeds.0: -1 is less than the minimum"),
    ],
)
def test_bad_config_is_refused_naming_the_key(root, overlay, message):
    from hrv.config import overlay as merged

    cfg = merged(yaml.safe_load((root / "config/config.yaml").read_text()), overlay)
    with pytest.raises(HRVInputError, match=message):
        validate(resolve(cfg))


# --- command-line input that must be refused ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["accumulate", "--model", "tiny", "--prompts", "p", "--out", "o.npz", "--steps", "0"], "--steps"),
        (["accumulate", "--model", "tiny", "--prompts", "p", "--out", "o.npz", "--steps", "-3"], "--steps"),
        (["accumulate", "--model", "tiny", "--prompts", "p", "--out", "o.npz", "--height", "0"], "--height"),
        (["accumulate", "--model", "tiny", "--prompts", "p", "--out", "o", "--max-prompts", "-1"], "--max"),
        (["accumulate", "--model", "tiny", "--prompts", "p", "--out", "o.npz", "--shards", "0"], "--shards"),
        (["weaken", "--model", "tiny", "--hrv", "h", "--experiment", "e", "--out", "o", "--k-batch", "0"], "--k-batch"),
        (["weaken", "--model", "tiny", "--hrv", "h", "--experiment", "e", "--out", "o", "--factor", "nan"], "--factor"),
        (["generate", "--model", "tiny", "--hrv", "h", "--prompt", "p", "--desired", "C", "--out", "o", "--width", "36"], "--width"),
        (["excite", "--model", "tiny", "--prompt", "a cat and a dog", "--out", "o", "--steps", "0"], "--steps"),
        (["excite", "--model", "tiny", "--prompt", "a cat and a dog", "--out", "o", "--height", "36"], "--height"),
        (["excite", "--model", "tiny", "--prompt", "a cat and a dog", "--out", "o", "--scale-factor", "nan"], "--scale"),
    ],
)  # fmt: skip
def test_bad_numbers_are_one_line_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_devices_and_missing_files_are_one_line_errors(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    common = ["generate", "--model", "tiny", "--hrv", "h.npz", "--prompt", "p", "--token", "p"]
    for device, message in (("cuda", "CUDA is not available"), ("tpu", "unknown device 'tpu'")):
        assert main([*common, "--desired", "Color", "--out", "o", "--device", device]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["heads", "sd99"]) == 2
    assert "unknown model preset 'sd99'; presets: sd14, sd15" in capsys.readouterr().err
    assert main(["heads", "someone/absent"]) == 2
    assert "`hf download someone/absent`" in capsys.readouterr().err
    assert main(["config", "missing.yaml"]) == 2
    assert "config file missing.yaml does not exist" in capsys.readouterr().err
    (tmp_path / "answers.csv").write_text("item,answer_a,answer_b\n")
    assert main(["polysemy-rate", "answers.csv", "--key", "nokey.csv"]) == 2
    err = capsys.readouterr().err
    assert "nokey.csv" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.csv"]


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
    import hrv.commands.core as core

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "_config", interrupted)
    assert main(["config", "x.yaml"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and err.count("\n") == 1


def test_a_closed_pipe_is_quiet(root):
    code = "import sys; from hrv.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        f"{sys.executable} -c '{code}' config {root}/config/config.yaml | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout == "{\n" and proc.stderr == ""


def test_concept_words_must_be_unique(tmp_path):
    from hrv.concepts import read_concepts

    path = tmp_path / "c.csv"
    path.write_text("concept,word\nColor,red\nColor,blue\nColor,Red\n")
    with pytest.raises(HRVInputError, match="'Red' is in line 2 \\(Color\\) and line 4 \\(Color\\)"):
        read_concepts(path)
    path.write_text("concept,word\nColor,orange\nFruits,apple\nFruits,orange\n")
    with pytest.raises(HRVInputError, match="line 2 \\(Color\\) and line 4 \\(Fruits\\)"):
        read_concepts(path)


# --- merge: shards of other prompts, missing shards -------------------------------------------------


def _shard(path: Path, indices: list[int], texts: list[str]) -> Path:
    """A shard as run_shard writes it, with the sha256 of its (index, prompt) pairs in its meta."""
    pairs = json.dumps([[i, texts[k]] for k, i in enumerate(indices)], ensure_ascii=False)
    meta = {"model": "m", "seed": 0, "prompts_sha256": hashlib.sha256(pairs.encode()).hexdigest()}
    np.savez(
        path,
        counts=np.ones((2, 1, 3), np.int64),
        indices=np.array(indices),
        concepts=np.array(["A"]),
        heads=np.array(["down.0/h0", "down.0/h1", "down.0/h2"]),
        meta=np.array(json.dumps(meta)),
    )
    return path


def test_merge_refuses_shards_of_other_prompts_and_missing_shards(tmp_path):
    from hrv.steps import merge_shards

    prompts = ["a cat", "a dog", "a hat", "a bat", "a rat", "a mat"]
    shards = [
        _shard(tmp_path / f"s{k}.npz", [2 * k, 2 * k + 1], prompts[2 * k : 2 * k + 2]) for k in range(3)
    ]
    assert merge_shards(shards, prompts=prompts).meta["n_prompts"] == 6
    other = [*prompts[:3], "a cap", *prompts[4:]]
    with pytest.raises(
        HRVInputError, match=r"shard .*s1\.npz \(prompts 2-3\) was computed from other prompts"
    ):
        merge_shards(shards, prompts=other)
    # the last shard missing leaves no gap in the indices: only the prompt list shows it
    with pytest.raises(HRVInputError, match="leave out prompt indices 4-5 \\(2 of 6 prompts\\)"):
        merge_shards(shards[:2], prompts=prompts)
    with pytest.raises(HRVInputError, match="leave out prompt indices 2-3"):
        merge_shards([shards[0], shards[2]])


# --- outputs and files -------------------------------------------------------------------------------


def test_npz_outputs_are_exactly_at_their_path(tmp_path, root, capsys, monkeypatch):
    from hrv.io import write_npz

    write_npz(tmp_path / "counts", a=np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["counts"]
    with np.load(tmp_path / "counts") as z:
        assert z["a"].tolist() == [0, 1, 2]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    for out in ("imported", "folder", "folder.npz"):
        code = main(["import-official", "sd14", "--out", out])
        err = capsys.readouterr().err
        assert (code == 2) == (out != "folder.npz"), err
        assert err.count("\n") <= 1
    with pytest.raises(HRVInputError, match="is a folder"):
        from hrv.io import atomic_path

        with atomic_path(tmp_path / "folder"):
            pass
    # import-official ran from a folder without resources/: its defaults name the shipped files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts", "folder", "folder.npz"]
    # an earlier output of the command is replaced; another file is not overwritten
    assert main(["import-official", "sdxl", "--out", "folder.npz"]) == 0
    np.savez(tmp_path / "mine.npz", data=np.arange(2))
    assert main(["import-official", "sd14", "--out", "mine.npz"]) == 2
    assert "is not an earlier output" in capsys.readouterr().err
    with np.load(tmp_path / "mine.npz") as z:
        assert z.files == ["data"]
    assert main(["heatmap", "folder.npz", "--out", "heatmap"]) == 2
    assert main(["merge", "folder.npz", "--out", "mine.npz"]) == 2
    err = capsys.readouterr().err
    assert "give a .png, .pdf or .svg file" in err and "merge writes a folder" in err


def test_output_folders_are_replaced_only_if_the_same_command_wrote_them(tmp_path, capsys):
    from hrv.io import MARKER, atomic_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["build-tiny", str(mine)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    out = tmp_path / "out"
    with atomic_dir(out, owner="hrv generate") as tmp:
        (tmp / "seed_0001.png").write_text("1")
        (tmp / "seed_0002.png").write_text("2")
    with atomic_dir(out, owner="hrv generate") as tmp:  # a new run replaces the old one whole
        (tmp / "seed_0003.png").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "seed_0003.png"]
    with (
        pytest.raises(HRVInputError, match="not an earlier output of `hrv weaken`"),
        atomic_dir(out, owner="hrv weaken"),
    ):
        pass
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "seed_0003.png"]


def test_job_logs_hold_the_error(tmp_path):
    from hrv.logs import log_to

    with pytest.raises(RuntimeError), log_to(tmp_path / "job.log"):
        print("progress")
        raise RuntimeError("the GPU caught fire")
    text = (tmp_path / "job.log").read_text()
    assert "progress" in text and "RuntimeError: the GPU caught fire" in text
    with pytest.raises(HRVInputError), log_to(tmp_path / "bad.log"):
        raise HRVInputError("prompt file p.txt does not exist")
    assert (tmp_path / "bad.log").read_text() == "error: prompt file p.txt does not exist\n"


# --- working outside the checkout ----------------------------------------------------------------------


def test_presets_and_shipped_defaults_work_from_any_folder(tmp_path, monkeypatch, capsys, tiny_model_dir):
    import torch

    from hrv.models import load_pipeline

    monkeypatch.chdir(tmp_path)
    assert main(["heads", "toy"]) == 0
    assert "16 cross-attention layers, 128 heads" in capsys.readouterr().out
    # tiny: built in memory when resources/models/tiny is not there, equal to the built folder
    pipe = load_pipeline("tiny", device="cpu")
    built = load_pipeline(tiny_model_dir, device="cpu", dtype="float32").unet.state_dict()
    assert all(torch.equal(v, built[k]) for k, v in pipe.unet.state_dict().items())
    assert list(tmp_path.iterdir()) == []


def test_one_seed_syntax_for_every_command():
    from hrv.cli import build_parser
    from hrv.commands import seed_list

    weaken = ["weaken", "--model", "m", "--hrv", "h", "--experiment", "e", "--out", "o"]
    generate = ["generate", "--model", "m", "--hrv", "h", "--prompt", "p", "--desired", "C", "--out", "o"]
    edit = [
        "edit",
        "--model",
        "m",
        "--source",
        "a red car",
        "--target",
        "a blue car",
        "--method",
        "p2p",
        "--out",
        "o",
    ]
    excite = ["excite", "--model", "m", "--prompt", "a cat and a dog", "--out", "o"]
    for command in (weaken, generate, edit, excite):
        for given, seeds in (("1-3", [1, 2, 3]), ("10 20 30", [10, 20, 30]), ("1,3 7-8", [1, 3, 7, 8])):
            args = build_parser().parse_args([*command, "--seeds", *given.split()])
            assert seed_list(args.seeds) == seeds
    assert seed_list(build_parser().parse_args(weaken).seeds) == [10, 20, 30]
    assert seed_list(build_parser().parse_args(generate).seeds) == [1]
