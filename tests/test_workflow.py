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
        "toy": {
            "steps": 2,
            "hrv_prompts": 4,
            "weaken_prompts": 2,
            "ks": [0, 128],
            "max_captions": 6,
            "neglect": {"scenes": 2, "steps": 2},
        },
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
    planned = snakemake(workdir, "-n", "--configfile", "overlay.yaml").stdout
    assert "toy_checks" in planned and "toy_neglect" in planned
    write_config(workdir, {"toy": {"neglect": {"enabled": False}}}, "no_neglect.yaml")
    no_neglect = snakemake(workdir, "-n", "--configfile", "overlay.yaml", "no_neglect.yaml").stdout
    assert "toy_checks" in no_neglect and "toy_neglect" not in no_neglect
    write_config(workdir, {"toy": {"enabled": False}}, "no_toy.yaml")
    off = snakemake(workdir, "-n", "--configfile", "overlay.yaml", "no_toy.yaml").stdout
    assert "toy_checks" not in off and "toy_neglect" not in off and "hrv_merge" in off
    # weakening and polysemy with the released SD v1.4 HRVs: imported by a rule
    write_config(workdir, {"weakening": {"hrv": "sd14"}, "polysemy": {"hrv": "sd14"}}, "official.yaml")
    official = snakemake(workdir, "-n", "--configfile", "overlay.yaml", "no_toy.yaml", "official.yaml").stdout
    assert "polysemy_import_hrv" in official and "hrv_official_sd14.npz" in official


def test_toy_checks_rule(workdir):
    neglect = "results/t/toy/neglect/summary/neglect.json"
    snakemake(workdir, neglect, "--cores", "1", "--configfile", "overlay.yaml")  # needs the checks' HRVs
    res = __import__("json").loads((workdir / neglect).read_text())
    assert res["images_per_method"] == 2 and list(res["methods"]) == ["sd", "ae", "ae_hrv", "ae_uniform"]
    assert res["sources"]["ae_hrv"]["hrv"].endswith("results/t/toy/checks/hrv.npz")
    assert (workdir / "results/t/toy/neglect/summary/neglect.png").read_bytes()[:4] == b"\x89PNG"
    # a new method is one new job; the others' images are kept
    write_config(
        workdir,
        {"toy": {"neglect": {"methods": ["sd", "ae", "ae_hrv", "ae_uniform", "ae_released"]}}},
        "more.yaml",
    )
    planned = snakemake(workdir, neglect, "-n", "--configfile", "overlay.yaml", "more.yaml").stdout
    assert "toy_neglect_method" in planned and "wildcards: method=ae_released" in planned
    assert "method=ae_hrv" not in planned and "toy_checks" not in planned
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


def test_weakening_and_polysemy_rules_run(workdir):
    """The weakening and polysemy rules, scripts included, on the tiny model with the released SD v1.4
    HRVs (imported by their rule): one sweep job per order (``weakening.run_job``; two orders keep the
    run short, ``random`` differs only in ``head_order``, tested on its own), CLIP scores,
    curves (with a released curve beside them), grid, overview and area summary
    (``hrv.weakening_plots``); one polysemy case's images,
    scores, rates and human sheet."""
    import pandas as pd
    from helpers_reference import assert_same_image, reference_sample
    from PIL import Image

    ks = [0, 5, 128]
    small = {"steps": 1, "height": 32, "width": 32}
    overlay = {
        "weakening": {"hrv": "sd14", "experiments": ["color"], "orders": ["MoRHF", "LeRHF"], "k": ks, "k_batch": None, "seeds": [10],
                      "max_items": 1, "grid_prompts": 1, "sampling": small,
                      "reference": {"color": "resources/reference/weakening_image_style_clip_official.csv"}},
        "polysemy": {"hrv": "sd14", "which": ["lavender"], "seeds": [1], "sampling": small},
    }  # fmt: skip
    write_config(workdir, overlay, "wp.yaml")
    out = "results/t"
    targets = [
        f"{out}/weakening/overview.png",
        f"{out}/weakening/color/curves.png",
        f"{out}/weakening/color/grid.png",
        f"{out}/polysemy/clip_rates.csv",
        f"{out}/polysemy/human/index.html",
        f"{out}/polysemy/cases/lavender/grid.png",
    ]
    # two sampling jobs at a time: on a CPU the jobs marked gpu=1 need no device of their own
    snakemake(
        workdir, *targets, "--cores", "2", "--resources", "gpu=2", "--configfile", "overlay.yaml", "wp.yaml"
    )
    res = workdir / out
    for png in [*targets[:3], targets[5], f"{out}/weakening/area_summary.png"]:
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG", png

    # the sweep: the first k heads of each order, on the experiment's one prompt, from the seed's latent
    hrv = load_hrv(res / "hrv/official/hrv_official_sd14.npz")
    values = hrv.vector("Color")
    ascending = sorted(range(128), key=lambda h: (values[h], h))  # ties: lower head index first
    expected_order = {"MoRHF": ascending[::-1], "LeRHF": ascending}  # MoRHF is LeRHF reversed, as released
    pixels = {}
    for order, heads in expected_order.items():
        job = res / f"weakening/color/{order}/seed10/ks0-5-128"
        assert (job / "heads.txt").read_text().split() == [hrv.heads[h] for h in heads]
        manifest = pd.read_csv(job / "manifest.csv")
        assert manifest["k"].tolist() == ks and set(manifest["prompt"]) == {"a red car"}
        for row in manifest.itertuples():
            pixels[order, row.k] = np.asarray(Image.open(job / row.image))
        assert (res / f"logs/weaken/color_{order}_seed10_ks0-5-128.log").is_file()
    for k in (0, 128):  # nothing weakened, or every head: the order cannot matter
        assert np.array_equal(pixels["MoRHF", k], pixels["LeRHF", k])
    assert not np.array_equal(pixels["MoRHF", 5], pixels["LeRHF", 5])
    from hrv.models import load_pipeline

    pipe = load_pipeline(workdir / "resources/models/tiny", device="cpu", dtype="float32")
    plain, _ = reference_sample(pipe, "a red car", 10, np.ones((128, 77)), guidance_scale=7.5, **small)
    assert_same_image(pixels["MoRHF", 0], plain)  # k = 0 is plain sampling at the rule's settings

    # scores per image; the table per (order, k); areas between its curves, recomputed here
    scores = pd.read_csv(res / "weakening/color/clip_scores.csv")
    table = pd.read_csv(res / "weakening/color/clip_table.csv")
    assert len(scores) == 6 and len(table) == 6 and (table["n"] == 1).all()
    merged = table.merge(scores, on=["order", "k"])
    np.testing.assert_allclose(merged["mean"], merged["clip"], atol=1e-6)
    mean = table.set_index(["order", "k"])["mean"]
    x = np.array(ks) / 128

    def area(upper, lower):
        y = np.array([mean[upper, k] - mean[lower, k] for k in ks])
        return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(ks) - 1))

    areas = pd.read_csv(res / "weakening/area_summary.csv").iloc[0]
    assert areas["concept"] == "Color"
    # (the tiny random CLIP's areas are small: compare to the CSV's 6 significant digits)
    assert areas["area_LeRHF_minus_MoRHF"] == pytest.approx(area("LeRHF", "MoRHF"), rel=1e-4, abs=1e-12)
    assert np.isnan(areas["area_random_minus_MoRHF"])  # no random order in this run

    # polysemy: three methods' images of one seed, their scores and rates, the human sheet
    case = res / "polysemy/cases/lavender"
    images = pd.read_csv(case / "images.csv")
    assert sorted(images["method"]) == ["adjusting", "sd", "strengthening"] and set(images["seed"]) == {1}
    shown = {
        m: np.asarray(Image.open(case / p)) for m, p in zip(images["method"], images["path"], strict=True)
    }
    assert not np.array_equal(shown["sd"], shown["adjusting"])
    poly = pd.read_csv(res / "polysemy/clip_scores.csv")
    assert len(poly) == 3 and (poly["misinterpreted"] == (poly["sim_wrong"] > poly["sim_intended"])).all()
    rates = pd.read_csv(res / "polysemy/clip_rates.csv")
    for row in rates.itertuples():
        assert row.n_images == 1 and row.rate == row.n_misinterpreted
    key = pd.read_csv(res / "polysemy/human/key.csv")
    assert list(zip(key["case"], key["seed"], strict=True)) == [("lavender", 1)]
    assert {key["method_a"][0], key["method_b"][0]} == {"sd", "adjusting"}
    for name in ("polysemy_images_lavender", "polysemy_score", "polysemy_rates", "polysemy_human_sheet"):
        assert (res / f"logs/{name}.log").is_file(), name
