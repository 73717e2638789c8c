"""The multi-concept stage's tables and job plan: plain references and a Snakemake dry run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from hrv.multiconcept.benchmark import load_sets, plan_jobs
from hrv.multiconcept.tables import summarize, table2, to_markdown


def _scores() -> pd.DataFrame:
    rows = []
    # planted: ae_hrv beats ae by 10% on every metric of type1; one image for type2's ae
    for method, base in (("ae", 0.20), ("ae_hrv", 0.22)):
        for k, delta in enumerate((-0.01, 0.0, 0.01)):
            rows.append({"set": "type1", "method": method, "prompt": f"p{k}", "seed": 1,
                         "full_prompt": base + delta, "min_object": base / 2 + delta,
                         "blip": base * 2 + delta})  # fmt: skip
    rows.append({"set": "type2", "method": "ae", "prompt": "q", "seed": 1, "full_prompt": 0.3,
                 "min_object": 0.1, "blip": np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_mean_se_n_against_plain_numbers():
    summary = summarize(_scores()).set_index(["set", "method", "metric"])
    row = summary.loc[("type1", "ae", "full_prompt")]
    values = np.array([0.19, 0.20, 0.21])
    assert row["mean"] == pytest.approx(values.mean())
    assert row["se"] == pytest.approx(np.sqrt(((values - values.mean()) ** 2).sum() / 2) / np.sqrt(3))
    assert row["n"] == 3
    one = summary.loc[("type2", "ae", "full_prompt")]
    assert one["n"] == 1 and np.isnan(one["se"])  # one image: no standard error
    assert summary.loc[("type2", "ae", "blip"), "n"] == 0  # no BLIP score: nothing to average


def test_table2_layout_and_relative_gain():
    summary = summarize(_scores())
    table = table2(summary, ["ae", "ae_hrv"])
    assert list(table.index) == ["A&E", "A&E-HRV", "A&E-HRV vs A&E (%)"]
    assert list(table.columns)[:3] == ["type1 Full prompt", "type1 Min. object", "type1 BLIP"]
    assert table.loc["A&E-HRV vs A&E (%)", "type1 Full prompt"] == pytest.approx(10.0)
    assert table.loc["A&E-HRV vs A&E (%)", "type1 BLIP"] == pytest.approx(100 * (0.44 - 0.40) / 0.40)
    md = to_markdown(summary, table)
    assert "| A&E | 0.2000 ± 0.0058 (n=3)" in md
    assert "0.3000 (n=1)" in md and "+10.0%" in md


def test_jobs_are_per_set_method_seed_and_prompt_chunk(root):
    sets = load_sets(["type1"], 5, root)
    jobs = plan_jobs(sets, ["sd", "ae"], [1, 2], 2)
    assert len(jobs) == 2 * 2 * 3
    assert [j.chunk for j in plan_jobs(sets, ["sd"], [1], None)] == ["p000-005"]
    assert [j.chunk for j in jobs[:3]] == ["p000-002", "p002-004", "p004-005"]
    assert jobs[0].path("results/t") == "results/t/multiconcept/type1/sd/seed1/p000-002"


def _planned(workdir, configfile) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", configfile, "--cores", "1",
         "results/t/multiconcept/table2.md"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return set(re.findall(r"output: (results/t/multiconcept/type\d/[a-z_]+/seed\d+/p[\d-]+)\s", proc.stdout))


def test_dry_run_plans_only_new_jobs(tmp_path, root):
    """A new seed or a new method plans only its own sampling jobs."""
    shutil.copy2(root / "Snakefile", tmp_path / "Snakefile")
    for folder in ("workflow", "config", "envs", "resources"):
        shutil.copytree(
            root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "models")
        )
    (tmp_path / "resources/models/tiny").mkdir(parents=True)  # stands in for the built model
    (tmp_path / "hrv.npz").write_bytes(b"")  # ae_hrv's HRV file (an existing path is all the plan needs)
    base = {"run": "t", "multiconcept": {"sets": ["type1"], "max_prompts": 3, "methods": ["sd", "ae"],
                                         "seeds": [1], "prompts_per_job": 2, "hrv": "hrv.npz"}}  # fmt: skip
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(base))
    first = _planned(tmp_path, "one.yaml")
    assert first == {
        f"results/t/multiconcept/type1/{m}/seed1/{c}" for m in ("sd", "ae") for c in ("p000-002", "p002-003")
    }
    for job in first:  # pretend they ran
        (tmp_path / job).mkdir(parents=True)
        (tmp_path / job / "manifest.csv").write_text("prompt\n")
    base["multiconcept"].update({"seeds": [1, 2], "methods": ["sd", "ae", "ae_hrv"]})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(base))
    second = _planned(tmp_path, "two.yaml")
    expected = {
        f"results/t/multiconcept/type1/{m}/seed{s}/{c}"
        for m in ("sd", "ae", "ae_hrv")
        for s in (1, 2)
        for c in ("p000-002", "p002-003")
    } - first
    assert second == expected


def test_job_scores_tables_and_grid(tiny_model_dir, tmp_path):
    """A sampling job, its scores, the tables and a grid, as the rules call them (no Snakemake)."""
    from PIL import Image

    from hrv.multiconcept.benchmark import run_job, score_job
    from hrv.multiconcept.metrics import save_tiny_blip
    from hrv.multiconcept.tables import bar_chart, image_grid, write_tables

    prompts = ["a bird and a fish", "a frog and a horse"]
    sampling = {"steps": 1, "guidance_scale": 7.5, "height": 128, "width": 128}
    settings = {"max_iter_to_alter": 1, "thresholds": {}, "scale_factor": 20.0}
    blip = save_tiny_blip(tmp_path / "blip")
    score_files, dirs = [], {}
    for method in ("sd", "ae"):
        job = run_job(str(tiny_model_dir), None, prompts, method, 7, tmp_path / method, settings=settings,
                      sampling=sampling, batch_size=2, device="cpu")  # fmt: skip
        dirs[method] = [job]
        manifest = pd.read_csv(job / "manifest.csv")
        assert list(manifest["image"]) == [f"{p}/7.png" for p in prompts]
        assert Image.open(job / manifest["image"][0]).size == (128, 128)
        csv = tmp_path / f"{method}.csv"
        scores = score_job(job, csv, set_name="type1", clip={"model": "tiny"}, blip=str(blip), device="cpu")
        assert len(scores) == 2 and scores["caption"].str.len().min() > 0
        score_files.append(csv)
    summary = write_tables(score_files, ["sd", "ae"], tmp_path / "tables")
    assert set(summary["n"]) == {2}
    assert (tmp_path / "tables/table2.md").read_text().startswith("| method | type1 Full prompt")
    assert bar_chart(summary, ["sd", "ae"], tmp_path / "bars.png").stat().st_size > 0
    grid = image_grid(dirs, prompts, 7, tmp_path / "grid.png", title="type1, seed 7")
    assert Image.open(grid).size[1] > 2 * 128  # two rows of images under the column labels
