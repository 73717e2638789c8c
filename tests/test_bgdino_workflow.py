"""The BG-DINO rules: one job per (object set, method) over the editing stage's manifest, then the
tables and the CLIP-against-BG-DINO scatter. The editing images, their manifest (the editing stage's
format) and the CLIP summary are planted, so only the BG-DINO rules run (tiny models built by the
workflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_workflow import copy_workflow, snakemake, write_config
from PIL import Image

from hrv.scores.bgdino_tables import editing_table, summarize

METHODS = ["p2p_hrv"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("wf"))
    overlay = {
        "run": "t",
        "toy": {"enabled": False},
        "editing": {"sets": ["color", "image_style"], "methods": METHODS, "max_pairs": 2, "seeds": [10]},
    }
    write_config(work, overlay, "overlay.yaml")
    editing = work / "results/t/editing"
    rows, rng = [], np.random.default_rng(0)
    for s in ("color", "image_style"):
        for pair in range(2):
            src = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            (editing / s / "source").mkdir(parents=True, exist_ok=True)
            Image.fromarray(src).save(editing / s / "source" / f"pair{pair:03d}.png")
            for m in METHODS:
                edited = src.copy()
                edited[: 8 * (pair + 1)] = 0
                (editing / s / m).mkdir(parents=True, exist_ok=True)
                Image.fromarray(edited).save(editing / s / m / f"pair{pair:03d}.png")
                rows.append(
                    {"set": s, "pair": pair, "seed": 10, "method": m, "object": "car",
                     "source_image": f"{s}/source/pair{pair:03d}.png", "edited_image": f"{s}/{m}/pair{pair:03d}.png"}
                )  # fmt: skip
    pd.DataFrame(rows).to_csv(editing / "manifest.csv", index=False)
    clip = pd.DataFrame({"set": ["color"], "method": METHODS, "mean": [0.3], "sem": [0.02], "n": [2]})
    clip.to_csv(editing / "clip_summary.csv", index=False)
    return work


def test_bgdino_rules_score_each_object_set_and_method(workdir):
    proc = snakemake(
        workdir,
        "results/t/editing/bgdino_clip.png",
        "--cores",
        "1",
        "--configfile",
        "overlay.yaml",
        "--allowed-rules",
        "build_tiny_gsam",
        "editing_bgdino",
        "editing_bgdino_table",
    )
    run = proc.stdout + proc.stderr
    # image_style is not an object set: only color is scored
    assert "build_tiny_gsam" in run and "bgdino/color/p2p_hrv" in run and "bgdino/image_style" not in run
    editing = workdir / "results/t/editing"
    for m in METHODS:
        scores = pd.read_csv(editing / "bgdino/color" / m / "scores.csv")
        assert list(scores["method"]) == [m, m] and list(scores["pair"]) == [0, 1]
        for row in scores.itertuples():
            assert np.asarray(Image.open(editing / "bgdino/color" / m / row.mask)).shape == (64, 64)
            assert (editing / "bgdino/color" / m / row.edited_image).resolve() == (
                editing / "color" / m / f"pair{row.pair:03d}.png"
            ).resolve()
    summary = pd.read_csv(editing / "bgdino_summary.csv")
    assert list(zip(summary["set"], summary["method"], strict=True)) == [("color", m) for m in METHODS]
    points = pd.read_csv(editing / "bgdino_clip.csv")
    assert list(points["clip"]) == [0.3] and list(points["clip_se"]) == [0.02]
    np.testing.assert_allclose(points["bgdino"], summary["mean"])
    assert (editing / "bgdino_clip.png").read_bytes()[:4] == b"\x89PNG"
    assert "BG-DINO color" in (editing / "bgdino_table.html").read_text()


def test_editing_table_cells():
    scores = pd.DataFrame(
        {
            "set": ["color"] * 3 + ["material"],
            "method": ["p2p", "p2p", "p2p_hrv", "p2p"],
            "bgdino": [0.9, 0.7, 0.8, np.nan],
            "fallback": [True, False, False, False],
            "background": [1.0, 0.5, 0.5, 0.0],
        }
    )
    table = editing_table(summarize(scores)).set_index("method")
    se = np.std([0.9, 0.7], ddof=1) / np.sqrt(2)
    assert table.loc["p2p", "BG-DINO color"] == f"0.8000 ± {se:.4f}"
    assert table.loc["p2p", "n color (fallback)"] == "2 (1)"
    assert table.loc["p2p_hrv", "BG-DINO color"] == "0.8000"  # one pair: no standard error
    assert (
        table.loc["p2p", "BG-DINO material"] == "n/a" and table.loc["p2p", "n material (fallback)"] == "0 (0)"
    )
    assert table.loc["p2p_hrv", "BG-DINO material"] == ""  # not scored
