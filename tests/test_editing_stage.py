"""The editing stage of the workflow: the job plan, partial re-runs, the toy-world measurement."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

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


def _planned_edit_jobs(workdir, configfile) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile), "--cores", "1"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return set(re.findall(r"output: (results/t/editing/[^/\s]+/[^/\s]+/seed\d+/p[\d-]+)", proc.stdout))


def test_dry_run_plans_only_new_jobs(tmp_path, root):
    """Adding a method, a seed and a set plans only the editing jobs that are new."""
    shutil.copy2(root / "Snakefile", tmp_path / "Snakefile")
    for folder in ("workflow", "config", "envs", "resources"):  # what the Snakefile reads at parse time
        shutil.copytree(
            root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "models")
        )
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
    first = _planned_edit_jobs(tmp_path, "one.yaml")
    assert first == {
        f"results/t/editing/color/{m}/seed10/{c}" for m in ("source", "p2p") for c in ("p000-001", "p002-002")
    }
    for job in first:  # pretend they ran
        (tmp_path / job).mkdir(parents=True)
        (tmp_path / job / "manifest.csv").write_text("set\n")
    grown = yaml.safe_load(yaml.safe_dump(base))
    grown["editing"].update({"methods": ["p2p", "p2p_hrv"], "seeds": [10, 20], "sets": ["color", "material"]})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(grown))
    second = _planned_edit_jobs(tmp_path, "two.yaml")
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
