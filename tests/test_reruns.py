"""Partial re-runs: after one change, Snakemake plans only the jobs that depend on it.

The HRV part of the demo (model, shards, merge, heat map, provenance) runs once in a temp copy of
the workflow with a tiny config; each case then changes one thing through a config overlay (or a
copied Snakefile) and reads the jobs that a dry run plans. Shards have a fixed size
(``hrv.shard_size``): shard k always holds prompts [k*size, (k+1)*size), so appending prompts
changes the last shard and adds new ones, and every earlier shard's params stay identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers_workflow import SNAKEMAKE, TINY_CONFIG, copy_workflow, snakemake, write_config

pytestmark = pytest.mark.slow

TARGETS = ("hrv_heatmap", "provenance")  # the HRV part; the other experiments are not run here
RUN = "rerun"
PROMPTS = ["a photo of a cat", "a red car", "a wooden house", "a dog in the snow", "a glass vase"]
EXTRA = ["a stone bridge", "a blue bird", "a silver spoon"]


def _overlay(**changes) -> dict:
    cfg = {
        **TINY_CONFIG,
        "run": RUN,
        "hrv": {**TINY_CONFIG["hrv"], "prompts": ["prompts.txt"], "max_prompts": None},
    }
    for key, value in changes.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """The workflow copy after one complete run of the HRV part (3 shards of 2, 2, 1 prompts)."""
    wd = copy_workflow(tmp_path_factory.mktemp("reruns") / "wf")
    (wd / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (wd / "extra.txt").write_text("\n".join(EXTRA) + "\n")
    cfg = write_config(wd, _overlay(), "base.yaml")
    snakemake(wd, *TARGETS, "--cores", "2", "--configfile", str(cfg))
    assert sorted(p.name for p in (wd / f"results/{RUN}/hrv/shards").glob("*.npz")) == [
        "shard_000.npz",
        "shard_001.npz",
        "shard_002.npz",
    ]
    return wd


def planned(wd: Path, overlay: dict, *extra: str) -> tuple[Counter, set[str]]:
    """(jobs per rule, output files) that a dry run plans with ``overlay`` as the config."""
    cfg = write_config(wd, overlay, "case.yaml")
    proc = snakemake(wd, *TARGETS, "-n", "--configfile", str(cfg), *extra)
    text = proc.stdout + proc.stderr
    jobs: Counter = Counter()
    outputs: set[str] = set()
    for block in re.split(r"\n(?=\[|(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        jobs[m.group(1)] += 1
        out = re.search(r"^\s+output: (.+)$", block, flags=re.MULTILINE)
        if out:
            outputs.update(o.strip() for o in out.group(1).split(","))
    return jobs, outputs


def shards_of(outputs: set[str]) -> set[str]:
    return {re.search(r"shard_(\d{3})", o).group(1) for o in outputs if "/shards/shard_" in o}


def test_nothing_to_do_after_a_complete_run(done):
    jobs, _ = planned(done, _overlay())
    assert jobs == Counter(), jobs


def test_adding_a_concept_reruns_accumulation_not_the_model(done):
    base = (done / "resources/concepts/concepts_34x10.csv").read_text()
    (done / "concepts_plus.csv").write_text(base.rstrip("\n") + "\nVehicles,Tram\nVehicles,Ferry\n")
    jobs, outputs = planned(done, _overlay(hrv={"concepts": "concepts_plus.csv"}))
    assert jobs["hrv_shard"] == 3  # every prompt's votes change: a new concept competes for them
    assert {"hrv_merge", "hrv_heatmap", "provenance"} <= set(jobs)
    assert "build_tiny_model" not in jobs


def test_changing_a_plot_setting_reruns_only_plots_and_the_record(done):
    jobs, _ = planned(done, _overlay(plots={"heatmap": {"cmap": "magma", "dpi": 150, "vmax": None}}))
    assert set(jobs) == {"hrv_heatmap", "provenance"}, jobs


def test_appending_prompts_reruns_only_the_affected_shards(done):
    # 5 + 3 prompts in shards of 2: shard 002 gets a second prompt, shard 003 is new
    jobs, outputs = planned(done, _overlay(hrv={"prompts": ["prompts.txt", "extra.txt"]}))
    assert shards_of(outputs) == {"002", "003"}
    assert jobs["hrv_shard"] == 2
    assert "build_tiny_model" not in jobs
    # the same append with a fixed number of shards moves every boundary: all shards re-run
    jobs, outputs = planned(
        done, _overlay(hrv={"prompts": ["prompts.txt", "extra.txt"], "shard_size": None, "shards": 3})
    )
    assert shards_of(outputs) == {"000", "001", "002"}


def test_a_new_package_version_marks_every_result_stale(done):
    snakefile = (done / "Snakefile").read_text()
    assert "VERSION = code_version()" in snakefile
    bumped = done / "Snakefile.bumped"
    bumped.write_text(snakefile.replace("VERSION = code_version()", 'VERSION = "9.9.9"'))
    cfg = write_config(done, _overlay(), "case.yaml")
    proc = snakemake(done, "--list-changes", "params", "-s", str(bumped), "--configfile", str(cfg))
    changed = set(proc.stdout.split())
    expected = {
        "resources/models/tiny",
        *(f"results/{RUN}/hrv/shards/shard_{k:03d}.npz" for k in range(3)),
        f"results/{RUN}/hrv/hrv.npz",
        f"results/{RUN}/hrv/heatmap.png",
        f"results/{RUN}/provenance.json",
    }
    assert expected <= changed, proc.stdout
    jobs, _ = planned(done, _overlay(), "-s", str(bumped))
    assert {"build_tiny_model", "hrv_shard", "hrv_merge", "hrv_heatmap", "provenance"} <= set(jobs)


def test_rerun_incomplete_finishes_only_the_interrupted_shard(done):
    """A first run killed while shard 001 runs (000 and 002 done, nothing merged yet)."""
    cfg = write_config(done, _overlay(), "case.yaml")
    out = done / f"results/{RUN}"
    before = {k: v.copy() for k, v in np.load(out / "hrv/hrv.npz").items()}
    shard = out / "hrv/shards/shard_001.npz"
    for path in (shard, *(out / "hrv").glob("*.*"), out / "provenance.json"):
        path.unlink()
    log = out / "logs/hrv_shard_001.log"
    log.unlink()
    proc = subprocess.Popen(
        [*SNAKEMAKE, *TARGETS, "--cores", "1", "--configfile", str(cfg)],
        cwd=done,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:  # kill the run (Snakemake and its job) once the shard job has started
        deadline = time.monotonic() + 300
        while not (log.exists() and log.stat().st_size > 0) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.2)
        assert log.exists(), "the shard job never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    snakemake(done, "--unlock", "--configfile", str(cfg))  # what a user does after a crash
    markers = list((done / ".snakemake/incomplete").iterdir())
    assert markers, "Snakemake left no incomplete marker"
    # killed before it wrote (a writer interrupted mid-save: tests/test_inputs.py)
    assert not shard.exists()

    # a writer without atomic writes would leave a partial file: Snakemake refuses to trust it ...
    shard.write_bytes(b"PK\x03\x04 partial")
    # (profiles/default sets rerun-incomplete, so ask without it)
    refused = snakemake(
        done, *TARGETS, "-n", "--workflow-profile", "none", "--configfile", str(cfg), check=False
    )
    assert refused.returncode != 0 and "incomplete" in (refused.stdout + refused.stderr).lower()
    # ... and --rerun-incomplete plans that shard only, then the steps downstream of it
    jobs, outputs = planned(done, _overlay(), "--rerun-incomplete")
    assert shards_of(outputs) == {"001"}
    assert jobs["hrv_shard"] == 1 and "build_tiny_model" not in jobs
    assert {"hrv_merge", "hrv_heatmap", "provenance"} <= set(jobs)

    snakemake(done, *TARGETS, "--cores", "2", "--rerun-incomplete", "--configfile", str(cfg))
    after = np.load(out / "hrv/hrv.npz")
    for key, value in before.items():
        assert np.array_equal(after[key], value), key  # the finished shard gives the same HRVs
    assert planned(done, _overlay())[0] == Counter()


def test_provenance_record_is_written_and_in_the_report(done):
    record = json.loads((done / f"results/{RUN}/provenance.json").read_text())
    model = done / "resources/models/tiny"
    expected = {
        p.relative_to(model).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in model.rglob("*")
        if p.is_file()
    }
    assert record["model"]["files"] == expected
    assert record["config"]["hrv"]["shard_size"] == 2 and record["run"] == RUN
    assert record["runtime"]["accumulation"] == {"devices": ["cpu"], "dtypes": ["torch.float32"]}
    assert record["packages"]["torch"]
    assert record["git"]["commit"] is None and "not in a git checkout" in record["git"]["note"]  # a /tmp copy
    cfg = write_config(done, _overlay(), "case.yaml")
    snakemake(done, *TARGETS, "--report", "report.html", "--configfile", str(cfg))
    html = (done / "report.html").read_text(errors="replace")
    assert "provenance.json" in html
