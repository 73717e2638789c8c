"""The Snakemake workflow: lint, dry run, and a small real run of the HRV stages in a temp copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_workflow import copy_workflow, snakemake, write_config

from hrv.hrvfile import load_hrv


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the workflow with a small overlay config (the temp dir stands in for a fresh clone)."""
    work = copy_workflow(tmp_path_factory.mktemp("wf"))
    overlay = {
        "run": "t",
        "hrv": {"max_prompts": 5, "shards": 2, "batch_size": 2},
        "sampling": {"steps": 2, "height": 64, "width": 64},
        "toy": {"steps": 2, "hrv_prompts": 4, "weaken_prompts": 2, "ks": [0, 128], "max_captions": 6},
    }
    write_config(work, overlay, "overlay.yaml")
    return work


def test_lint_clean(root):
    proc = snakemake(root, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_plans_shards(workdir):
    out = snakemake(workdir, "results/t/hrv/heatmap.png", "-n", "--configfile", "overlay.yaml").stdout
    assert "hrv_shard" in out and "build_tiny_model" in out and "hrv_merge" in out
    # the default target includes the toy world's checks unless they are switched off
    assert "toy_checks" in snakemake(workdir, "-n", "--configfile", "overlay.yaml").stdout
    write_config(workdir, {"toy": {"enabled": False}}, "no_toy.yaml")
    off = snakemake(workdir, "-n", "--configfile", "overlay.yaml", "no_toy.yaml").stdout
    assert "toy_checks" not in off and "hrv_merge" in off
    # weakening and polysemy with the released SD v1.4 HRVs: imported by a rule
    write_config(workdir, {"weakening": {"hrv": "sd14"}, "polysemy": {"hrv": "sd14"}}, "official.yaml")
    official = snakemake(workdir, "-n", "--configfile", "overlay.yaml", "no_toy.yaml", "official.yaml").stdout
    assert "polysemy_import_hrv" in official and "hrv_official_sd14.npz" in official


def test_toy_checks_rule(workdir):
    snakemake(workdir, "results/t/toy/checks/checks.json", "--cores", "1", "--configfile", "overlay.yaml")
    folder = workdir / "results/t/toy/checks"
    for name in ("heatmap.png", "weakening.png", "samples.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    res = __import__("json").loads((folder / "checks.json").read_text())
    assert res["settings"]["hrv_prompts"] == 4 and res["weakening"]["ks"] == [0, 128]
    assert (workdir / "results/t/logs/toy_checks.log").read_text().count("[4] ordered weakening") == 1


def test_bad_config_is_named(workdir):
    (workdir / "bad.yaml").write_text("hrv:\n  batch_size: two\n")
    proc = snakemake(workdir, "-n", "--configfile", "overlay.yaml", "bad.yaml", check=False)
    assert (
        proc.returncode != 0
        and "batch_size" in proc.stdout + proc.stderr
        and "two" in proc.stdout + proc.stderr
    )


def test_run_produces_the_contract(workdir):
    targets = ["results/t/hrv/hrv.npz", "results/t/hrv/heatmap.png"]
    snakemake(workdir, *targets, "--cores", "2", "--configfile", "overlay.yaml")
    hrv_dir = workdir / "results/t/hrv"
    assert sorted(p.name for p in (hrv_dir / "shards").iterdir()) == ["shard_000.npz", "shard_001.npz"]
    hrv = load_hrv(hrv_dir / "hrv.npz")
    assert hrv.hrv.shape == (34, 128) and hrv.counts.shape == (3, 34, 128)  # 2 PNDM steps = 3 evaluations
    assert hrv.counts.sum() == 5 * 3 * 128
    np.testing.assert_allclose(hrv.hrv.sum(1), 128, rtol=1e-4)
    assert hrv.hrv_per_timestep.shape == (3, 34, 128) and hrv.heads[0] == "down.0/h0"
    assert (hrv_dir / "hrv.csv").read_text().startswith("concept,down.0/h0")
    assert (hrv_dir / "head_ranking.csv").stat().st_size > 0
    assert (hrv_dir / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    # nothing left to do: a second run plans no jobs
    again = snakemake(workdir, *targets, "-n", "--configfile", "overlay.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
    # the report holds the heat map
    snakemake(workdir, *targets, "--configfile", "overlay.yaml", "--report", "report.zip")
    import zipfile

    with zipfile.ZipFile(workdir / "report.zip") as z:
        assert any(name.endswith("heatmap.png") for name in z.namelist())
    # the same counts as the package run directly (one shard, batch 1)
    from hrv.accumulate import accumulate
    from hrv.concepts import read_concepts
    from hrv.models import load_pipeline
    from hrv.prompts import read_prompts

    pipe = load_pipeline(workdir / "resources/models/tiny", device="cpu", dtype="float32")
    prompts = read_prompts([workdir / "resources/prompts/imagenet_1000.txt"], 5)
    direct = accumulate(
        pipe,
        read_concepts(workdir / "resources/concepts/concepts_34x10.csv"),
        prompts,
        range(5),
        seed=0,
        steps=2,
        guidance_scale=7.5,
        height=64,
        width=64,
        batch_size=1,
        progress=False,
    )
    assert np.array_equal(direct, hrv.counts)
