"""CLIP scores of edited images (spec section 5 "Scores") and their tables and figures.

The score of an edited image is the raw cosine of its CLIP embedding with the full target prompt
(OpenCLIP ViT-H/14 laion2b_s32b_b79k in the paper config, the tiny random CLIP in the demo). The
source image is scored against the target prompt too (method ``source``): the score of making no
edit at all. Per (set, method): the mean, the standard error (sample standard deviation, ddof 1,
over every pair and seed, divided by sqrt(n); empty for n = 1, where it is unknown) and n.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hrv.errors import HRVInputError
from hrv.io import atomic_path, write_text_atomic
from hrv.judging import relative

SOURCE = "source"
MANIFEST_COLUMNS = [
    "set",
    "pair",
    "seed",
    "method",
    "concept",
    "object",
    "source_prompt",
    "target_prompt",
    "source_word",
    "target_word",
    "source_image",
    "edited_image",
]


def read_manifests(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate editing manifests; image paths (relative to each manifest's folder) become absolute."""
    frames = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise HRVInputError(f"editing manifest {p} does not exist; run its editing job first")
        t = pd.read_csv(p, keep_default_na=False)
        missing = [c for c in MANIFEST_COLUMNS if c not in t.columns]
        if missing:
            raise HRVInputError(f"editing manifest {p} lacks column(s) {', '.join(missing)}")
        for col in ("source_image", "edited_image"):
            t[col] = [str((p.parent / q).resolve()) for q in t[col]]
        frames.append(t)
    if not frames:
        raise HRVInputError("no editing manifests given")
    return pd.concat(frames, ignore_index=True)


def write_manifest(table: pd.DataFrame, out: str | Path, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Write ``table``'s manifest columns and ``extra`` (absolute image paths) with paths relative
    to ``out``'s folder."""
    out = Path(out)
    t = table[[*MANIFEST_COLUMNS, *extra]].copy()
    for col in ("source_image", "edited_image"):
        t[col] = [relative(p, out.parent) for p in t[col]]
    with atomic_path(out) as tmp:
        t.to_csv(tmp, index=False)
    return t


def score_images(manifest: pd.DataFrame, scorer, batch_size: int = 32) -> pd.DataFrame:
    """One row per edited image (and per source image, method ``source``) with its ``clip`` score
    against the target prompt; images are scored ``batch_size`` at a time."""
    from PIL import Image

    sources = manifest.drop_duplicates(["set", "pair", "seed"]).copy()
    sources["method"] = SOURCE
    sources["edited_image"] = sources["source_image"]
    table = pd.concat([sources, manifest], ignore_index=True)
    paths, texts = list(table["edited_image"]), [str(t) for t in table["target_prompt"]]
    scores = []
    for start in range(0, len(paths), batch_size):
        images = []
        for p in paths[start : start + batch_size]:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        scores.append(scorer.similarity(images, texts[start : start + batch_size], batch_size=batch_size))
    table["clip"] = np.concatenate(scores) if scores else np.zeros(0)
    return table


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error (NaN for n = 1) and n of ``clip`` per (set, method), in order of appearance."""
    rows = []
    for (s, m), g in scores.groupby(["set", "method"], sort=False):
        x = g["clip"].to_numpy(np.float64)
        sem = float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
        rows.append({"set": s, "method": m, "mean": float(x.mean()), "sem": sem, "n": len(x)})
    return pd.DataFrame(rows, columns=["set", "method", "mean", "sem", "n"])


def _cell(mean: float, sem: float) -> str:
    return f"{mean:.4f}" if not np.isfinite(sem) else f"{mean:.4f} ± {sem:.4f}"


def _hp_cell(hp: pd.DataFrame, s: str, m: str) -> str:
    if (s, m) not in hp.index:
        return ""
    value = hp.loc[(s, m), "hp"]
    return f"{value:.1f}" if np.isfinite(value) else "n/a"  # n/a: no vote for the reference


def table1(summary: pd.DataFrame, hp: pd.DataFrame | None = None) -> pd.DataFrame:
    """Like the paper's Table 1: one row per method, a CLIP column per set ("mean ± SE"), and an
    HP column per judged set when ``hp`` (from ``hrv.editing.human.hp_scores``) is given."""
    methods = list(dict.fromkeys(summary["method"]))
    sets = list(dict.fromkeys(summary["set"]))
    by = summary.set_index(["set", "method"])
    out = pd.DataFrame({"method": methods})
    for s in sets:
        out[f"CLIP {s}"] = [
            _cell(by.loc[(s, m), "mean"], by.loc[(s, m), "sem"]) if (s, m) in by.index else ""
            for m in methods
        ]
    if hp is not None:
        h = hp.set_index(["set", "method"])
        for s in [x for x in dict.fromkeys(hp["set"]) if x != "all"]:
            out[f"HP {s}"] = [_hp_cell(h, s, m) for m in methods]
    return out


def table_html(table: pd.DataFrame, out: str | Path, title: str) -> Path:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False)
    )
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #999;padding:4px 8px}"
        f"</style></head><body><h3>{html.escape(title)}</h3><table><tr>{head}</tr>{body}</table></body></html>\n"
    )
    write_text_atomic(out, doc)
    return Path(out)


def plot_bars(summary: pd.DataFrame, out: str | Path, title: str, dpi: int = 150) -> Path:
    """Grouped bars: mean CLIP per set, one bar per method, standard errors as whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(summary["method"]))
    sets = list(dict.fromkeys(summary["set"]))
    x = np.arange(len(sets))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(sets) + 2), 3.6))
    for i, m in enumerate(methods):
        sub = summary[summary["method"] == m].set_index("set").reindex(sets)
        err = np.nan_to_num(sub["sem"].to_numpy(float))
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width, sub["mean"].to_numpy(float), width, yerr=err, label=m
        )
    ax.set_xticks(x, sets, rotation=20, ha="right")
    ax.set_ylabel("CLIP (edited image, target prompt)")
    ax.set_title(textwrap.fill(title, 70), fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(out)


def write_scores(
    manifests: Sequence[str | Path],
    scores_out: str | Path,
    summary_out: str | Path,
    table_out: str | Path,
    table_html_out: str | Path,
    bars_out: str | Path,
    *,
    clip: dict,
    device: str = "auto",
) -> pd.DataFrame:
    """Score every image of the manifests; write per-image scores, the per (set, method) summary,
    the Table-1-like table (CSV and HTML) and the bar chart."""
    from hrv.clip import load_clip

    manifest = read_manifests(manifests)
    scorer = load_clip(clip.get("model", "tiny"), clip.get("pretrained"), device=device)
    scores = score_images(manifest, scorer, int(clip.get("batch_size", 32)))
    summary = summarize(scores)
    table = table1(summary)
    with atomic_path(scores_out) as tmp:
        scores.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(summary_out) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(table_out) as tmp:
        table.to_csv(tmp, index=False)
    name = clip.get("model", "tiny")
    table_html(table, table_html_out, f"CLIP ({name}) of the edited image with the target prompt: mean ± SE")
    plot_bars(summary, bars_out, f"CLIP ({name}) of the edited image with the target prompt (whiskers: SE)")
    return summary
