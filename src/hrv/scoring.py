"""CLIP scores of weakened images and their tables: mean and standard error per (order, k).

The score of an image is the CLIP cosine between it and the weakened concept's item alone
(``scored_text`` in the sweep's manifests, see ``hrv.experiments.scored_text``). The standard
error is the sample standard deviation (ddof 1) over all images of an (order, k) cell, seeds and
prompts pooled, divided by sqrt(n); a cell of a single image has none (NaN, an empty CSV field).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hrv.errors import HRVInputError
from hrv.io import atomic_path


def read_manifests(dirs: Sequence[str | Path]):
    """All images of the sweep job directories ``dirs`` as one table with absolute image paths."""
    import pandas as pd

    frames = []
    for d in dirs:
        d = Path(d)
        manifest = d / "manifest.csv"
        if not manifest.is_file():
            raise HRVInputError(f"{d} has no manifest.csv; re-run its weakening job")
        frame = pd.read_csv(manifest, keep_default_na=False)
        frame["image"] = [str(d / p) for p in frame["image"]]
        frames.append(frame)
    if not frames:
        raise HRVInputError("no weakening job directories to score")
    return pd.concat(frames, ignore_index=True)


def score_images(scorer, table, batch_size: int = 32, progress: bool = True):
    """``table`` with a ``clip`` column: cosine of each image with its ``scored_text``."""
    from PIL import Image
    from tqdm.auto import tqdm

    scores = []
    paths, texts = list(table["image"]), [str(t) for t in table["scored_text"]]
    for start in tqdm(range(0, len(paths), batch_size), desc="CLIP", unit="batch", disable=not progress):
        chunk = paths[start : start + batch_size]
        images = []
        for p in chunk:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        scores.append(scorer.similarity(images, texts[start : start + batch_size], batch_size=batch_size))
    out = table.copy()
    out["clip"] = np.concatenate(scores) if scores else np.zeros(0)
    return out


def summarize(scores):
    """Mean, standard error and count of ``clip`` per (experiment, concept, order, k)."""
    keys = [c for c in ("experiment", "concept", "order", "k") if c in scores.columns]
    grouped = scores.groupby(keys, sort=True)["clip"]
    table = grouped.agg(
        mean="mean", std=lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"), n="size"
    )
    table["sem"] = table["std"] / np.sqrt(table["n"])
    return table.drop(columns="std").reset_index()


def area_between(table, upper: str = "LeRHF", lower: str = "MoRHF", n_heads: int | None = None) -> float:
    """Area between two orders' mean curves, k rescaled to [0, 1] (trapezoids on the shared k values).

    Positive when ``lower`` scores below ``upper``: weakening ``lower``'s heads removes more of
    the concept. NaN when the two curves share fewer than two k values.
    """
    a = table[table["order"] == upper].set_index("k")["mean"]
    b = table[table["order"] == lower].set_index("k")["mean"]
    ks = sorted(set(a.index) & set(b.index))
    if len(ks) < 2:
        return float("nan")
    x = np.array(ks, dtype=np.float64) / float(n_heads or max(ks))
    y = np.array([a[k] - b[k] for k in ks], dtype=np.float64)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def write_scores(
    job_dirs: Sequence[str | Path],
    scores_csv: str | Path,
    table_csv: str | Path,
    *,
    clip: dict,
    device: str = "auto",
    progress: bool = True,
) -> None:
    """Score every image of ``job_dirs`` with the CLIP model of ``clip`` and write both tables."""
    from hrv.clip import load_clip

    table = read_manifests(job_dirs)
    scorer = load_clip(clip.get("model", "tiny"), clip.get("pretrained"), device=device)
    scores = score_images(scorer, table, int(clip.get("batch_size", 32)), progress)
    scores["image"] = [str(Path(p)) for p in scores["image"]]
    with atomic_path(scores_csv) as tmp:
        scores.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(table_csv) as tmp:
        summarize(scores).to_csv(tmp, index=False, float_format="%.6g")
