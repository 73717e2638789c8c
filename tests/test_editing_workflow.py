"""The editing rules end to end on the tiny model: 1 pair x 1 seed x 2 methods at 2 steps, 64 px."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_workflow import copy_workflow, snakemake, write_config
from PIL import Image

pytestmark = pytest.mark.slow


def _hrv_file(path, pipe, concepts):
    """An HRV file over the tiny model's heads with seeded positive values (row means 1)."""
    from hrv.heads import HeadRegistry
    from hrv.hrvfile import HRVSet

    heads = HeadRegistry.from_unet(pipe.unet).names("short")
    values = np.random.default_rng(0).uniform(0, 2, (len(concepts.names), len(heads))).astype(np.float32)
    values *= len(heads) / values.sum(1, keepdims=True)
    HRVSet(
        values,
        list(concepts.names),
        heads,
        np.zeros((0, *values.shape), np.float32),
        np.zeros((0, *values.shape), np.int64),
    ).save(path)


def test_editing_rules_on_the_tiny_model(tmp_path, tiny_pipe, concepts):
    wd = copy_workflow(tmp_path / "wf")
    _hrv_file(wd / "hrv.npz", tiny_pipe, concepts)
    cfg = write_config(
        wd,
        {
            "run": "t",
            "toy": {"enabled": False},
            "editing": {
                "hrv": "hrv.npz",
                "sets": ["color"],
                "max_pairs": 1,
                "methods": ["p2p", "p2p_hrv"],
                "seeds": [10],
                "sampling": {"steps": 2, "height": 64, "width": 64},
            },
        },
    )
    targets = ["results/t/editing/clip_table.csv"]  # (the grid is tested in-process, test_editing_stage.py)
    snakemake(wd, *targets, "--cores", "2", "--configfile", str(cfg))
    out = wd / "results/t/editing"
    m = pd.read_csv(out / "manifest.csv")
    assert list(m["method"]) == ["p2p", "p2p_hrv"]
    assert set(m["source_prompt"]) == {"a blue car"} and set(m["target_prompt"]) == {"a brown car"}
    assert set(m["object"]) == {"car"} and set(m["seed"]) == {10}
    # the source job and each edit job's own source branch are the same pixels
    assert m["source_identical"].all()
    source = np.asarray(Image.open(out / m["source_image"][0]))
    edits = [np.asarray(Image.open(out / p)) for p in m["edited_image"]]
    assert source.shape == (64, 64, 3) and all(e.shape == source.shape for e in edits)
    assert not np.array_equal(edits[0], source)  # the target prompt changed the image
    summary = pd.read_csv(out / "clip_summary.csv").set_index("method")
    assert list(summary.index) == ["source", "p2p", "p2p_hrv"] and set(summary["n"]) == {1}
    assert summary["sem"].isna().all()  # one image: no standard error
    table = pd.read_csv(out / "clip_table.csv", dtype=str, keep_default_na=False)
    assert "±" not in "".join(table["CLIP color"])
    again = snakemake(wd, *targets, "-n", "--configfile", str(cfg))
    assert "Nothing to be done" in again.stdout + again.stderr
