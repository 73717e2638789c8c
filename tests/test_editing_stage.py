"""The editing stage of the workflow: the job plan, partial re-runs, the toy-world measurement."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers_workflow import copy_workflow, planned_outputs

from hrv.editing.sets import read_set
from hrv.editing.stage import EditJob, chunk_pairs, parse_chunk, plan_jobs
from hrv.errors import HRVInputError


def test_plan_cuts_fixed_chunks_and_adds_a_source_job(root):
    pairs = read_set("weather_conditions", root / "resources/benchmarks/editing_weather_conditions.csv")
    jobs = plan_jobs({"weather_conditions": pairs}, ["p2p", "p2p_hrv"], [10], 10)
    assert [j.chunk for j in jobs if j.method == "source"] == ["p000-009", "p010-019", "p020-024"]
    assert len(jobs) == 3 * 3
    assert EditJob("weather_conditions", "p2p", 10, 20, 25) in jobs
    assert [p["index"] for p in chunk_pairs(pairs, "p020-024")] == [20, 21, 22, 23, 24]
    assert chunk_pairs(pairs, "p020-024")[0]["source_prompt"] == pairs[20].source_prompt
    with pytest.raises(HRVInputError, match="chunk of pairs"):
        parse_chunk("p9-1")
    with pytest.raises(HRVInputError, match="cannot be an editing method"):
        plan_jobs({"weather_conditions": pairs}, ["source"], [10], 10)
    with pytest.raises(HRVInputError, match="unknown editing method.*p2q.*p2p_hrv"):
        plan_jobs({"weather_conditions": pairs}, ["p2q"], [10], 10)


def test_planning_modules_do_not_import_torch(root):
    """What the Snakefile imports to plan the DAG leaves torch unloaded (parsing stays fast); the
    package's names still resolve on first use."""
    code = (
        "import sys; import hrv.editing.sets, hrv.editing.stage, hrv.polysemy, hrv.experiments, hrv.workflow, "
        "hrv.scores.tiny, hrv.config, hrv.multiconcept.benchmark; "
        "assert 'torch' not in sys.modules, 'torch loaded'; "
        "import hrv.editing as e; assert callable(e.edit_pairs) and e.METHODS[0] == 'p2p'; import hrv.multiconcept as m; assert callable(m.excite); "
        "assert 'torch' in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


PLANNED_EDIT = r"output: (results/t/editing/[^/\s]+/[^/\s]+/seed\d+/p[\d-]+)"


def test_dry_run_plans_only_new_jobs(tmp_path, root):
    """Adding a method, a seed and a set plans only the editing jobs that are new."""
    copy_workflow(tmp_path)
    (tmp_path / "hrv.npz").write_bytes(b"")  # stands in for an HRV file
    (tmp_path / "resources/models/tiny").mkdir(parents=True)  # stands in for the built model
    base = {
        "run": "t",
        "toy": {"enabled": False},
        "editing": {
            "hrv": "hrv.npz",
            "sets": ["color"],
            "max_pairs": 3,
            "pairs_per_job": 2,
            "methods": ["p2p"],
            "seeds": [10],
        },
    }
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(base))
    first = planned_outputs(tmp_path, "one.yaml", PLANNED_EDIT)
    assert first == {
        f"results/t/editing/color/{m}/seed10/{c}" for m in ("source", "p2p") for c in ("p000-001", "p002-002")
    }
    for job in first:  # pretend they ran
        (tmp_path / job).mkdir(parents=True)
        (tmp_path / job / "manifest.csv").write_text("set\n")
    grown = yaml.safe_load(yaml.safe_dump(base))
    grown["editing"].update({"methods": ["p2p", "p2p_hrv"], "seeds": [10, 20], "sets": ["color", "material"]})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(grown))
    second = planned_outputs(tmp_path, "two.yaml", PLANNED_EDIT)
    expected = {
        f"results/t/editing/{s}/{m}/seed{seed}/{c}"
        for s in ("color", "material")
        for m in ("source", "p2p", "p2p_hrv")
        for seed in (10, 20)
        for c in ("p000-001", "p002-002")
    } - first
    assert second == expected


# --- the toy world ----------------------------------------------------------------------------------


def test_toy_measure_against_planted_edits():
    """A stand-in engine draws the scenes with the world's own renderer: an exact edit (the target
    scene from the source's random stream), no edit (the source again), and an edit whose
    background noise is redrawn; the measures must read 1/1/0, 0/1/0 and 1/1/>0."""
    from hrv.toy.editing import PLAIN, edit_pairs_for, run_toy_edits, summarize
    from hrv.toy.world import parse_caption, render

    def draw(caption, stream):
        return (render(parse_caption(caption), np.random.default_rng(stream)) * 255).round().astype(np.uint8)

    def stand_in(prompts, concept, method, seed, windows):
        out = []
        for i, (src, tgt) in enumerate(prompts):
            source = draw(src, [seed, i])
            if windows:  # the plain-target row: an unrelated image of the target
                edited = draw(tgt, [seed, i, 99])
            elif method == "exact":
                edited = draw(tgt, [seed, i])
            elif method == "none":
                edited = source
            else:
                edited = draw(tgt, [seed, i, 7])
            out.append({"source": source, method: edited})
        return out

    pairs = edit_pairs_for("color", 6, 0)
    assert all(s.color != t.color and s.shape == t.shape and s.count == "one" for s, t in pairs)
    edits = run_toy_edits(stand_in, ["exact", "none", "redrawn"], captions=6, seeds=[0, 1])
    t = summarize(edits).set_index(["kind", "method"])
    for kind in ("color", "shape", "all"):
        assert t.loc[(kind, "exact"), "success"] == 1.0 and t.loc[(kind, "exact"), "kept"] == 1.0
        assert t.loc[(kind, "exact"), "background_moved"] < 0.5  # only the objects' anti-aliased rims differ
        assert t.loc[(kind, "none"), "success"] == 0.0 and t.loc[(kind, "none"), "background_moved"] == 0.0
        assert t.loc[(kind, "redrawn"), "success"] == 1.0 and t.loc[(kind, "redrawn"), "background_moved"] > 2
    assert t.loc[("all", "exact"), "n"] == 2 * 6 * 2 and ("all", PLAIN) in t.index


# --- jobs, manifest, grid and scores with a stand-in engine -----------------------------------------


def _stand_in_render(pipe, prompts, methods, seed, **kwargs):
    """Images that encode (prompt, seed): the source from the source prompt, an edit from the
    target prompt and the method; ``bad`` renders its source branch one grey level off."""
    from PIL import Image

    def image(text, shift=0):
        v = (sum(map(ord, text)) + seed + shift) % 200
        return Image.fromarray(np.full((8, 8, 3), v, np.uint8))

    out = []
    for src, tgt in prompts:
        row = {"source": image(src, 1 if "bad" in methods else 0)}
        row.update({m: image(tgt + m) for m in methods})
        out.append(row)
    return out


@pytest.fixture()
def stage_run(tmp_path, root, monkeypatch):
    """Source and edit jobs of 3 colour pairs (chunks of 2), two methods and a bad one, seed 10."""
    from hrv.editing import stage

    monkeypatch.setattr(stage, "render_pairs", _stand_in_render)
    pairs = read_set("color", root / "resources/benchmarks/editing_color.csv")[:3]
    monkeypatch.setitem(sys.modules["hrv.editing.methods"].MODULES, "bad", "hrv.editing.p2p")
    jobs = plan_jobs({"color": pairs}, ["p2p", "p2p_hrv", "bad"], [10], 2)
    out = tmp_path / "run"
    for j in jobs:
        stage.run_job(
            "unused", None, chunk_pairs(pairs, j.chunk), j.method, j.seed, j.path(out),
            sampling={"steps": 2}, pipe=object(),
        )  # fmt: skip
    return out, jobs, pairs


def test_jobs_manifest_and_source_check(stage_run):
    from PIL import Image

    from hrv.editing.scores import read_manifests
    from hrv.editing.stage import combine

    out, jobs, pairs = stage_run
    with pytest.warns(UserWarning, match="differs from the source image: color/bad/seed10"):
        combine([j.path(out) for j in jobs], out / "editing/manifest.csv")
    m = read_manifests([out / "editing/manifest.csv"])
    assert len(m) == 3 * 3 and set(m["method"]) == {"p2p", "p2p_hrv", "bad"}
    assert m.set_index("method")["source_identical"].groupby(level=0).all().to_dict() == {
        "bad": False,
        "p2p": True,
        "p2p_hrv": True,
    }
    for r in m.itertuples():
        pair = pairs[r.pair]
        assert (r.source_prompt, r.target_prompt, r.object) == (
            pair.source_prompt,
            pair.target_prompt,
            pair.object,
        )
        assert r.source_image == str(
            out
            / f"editing/color/source/seed10/{'p000-001' if r.pair < 2 else 'p002-002'}/pair{r.pair:03d}.png"
        )
        want = _stand_in_render(None, [(pair.source_prompt, pair.target_prompt)], [r.method], 10)[0]
        assert np.array_equal(np.asarray(Image.open(r.edited_image)), np.asarray(want[r.method]))
        source = _stand_in_render(None, [(pair.source_prompt, pair.target_prompt)], [], 10)[0]["source"]
        assert np.array_equal(np.asarray(Image.open(r.source_image)), np.asarray(source))
    text = (out / "editing/manifest.csv").read_text()
    assert str(out) not in text  # relative paths


def test_grid_and_clip_tables(stage_run):
    import pandas as pd
    from PIL import Image

    from hrv.editing.scores import write_scores
    from hrv.editing.stage import combine, set_grid

    out, jobs, _ = stage_run
    manifest = out / "editing/manifest.csv"
    with pytest.warns(UserWarning):
        combine([j.path(out) for j in jobs], manifest)
    grid = set_grid(manifest, "color", out / "grid.png")
    w, h = Image.open(grid).size
    assert w > 4 * 8 and h > 3 * 8  # 4 columns (source + 3 methods) of 8 px, 3 rows
    files = [out / f for f in ("s.csv", "sum.csv", "t.csv", "t.html", "bars.png")]
    write_scores([manifest], *files, clip={"model": "tiny", "batch_size": 4}, device="cpu")
    summary = pd.read_csv(files[1])
    assert set(summary["method"]) == {"source", "p2p", "p2p_hrv", "bad"} and set(summary["n"]) == {3}
    assert "CLIP color" in files[2].read_text() and files[4].read_bytes()[:4] == b"\x89PNG"
