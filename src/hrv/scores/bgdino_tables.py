"""BG-DINO's tables and figure: per (set, method) summaries, the editing table, CLIP against BG-DINO.

No model is loaded here (pandas and matplotlib only), so the table rule runs in the plot env.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hrv.errors import HRVInputError
from hrv.io import atomic_path, write_text_atomic

SUMMARY_COLUMNS = ["set", "method", "mean", "se", "n", "fallback", "no_background"]


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (set, method), as far as the columns exist: mean and standard error (ddof 1; NaN for
    n < 2) of the finite scores, their number n, how many pairs fell back to the whole image and
    how many had no background (score NaN, left out of n)."""
    keys = [k for k in ("set", "method") if k in scores.columns]
    groups = scores.groupby(keys, sort=False) if keys else [((), scores)]
    rows = []
    for key, g in groups:
        finite = g["bgdino"].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        n = len(finite)
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                "mean": float(finite.mean()) if n else float("nan"),
                "se": float(finite.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                "n": n,
                "fallback": int(g["fallback"].astype(bool).sum()),
                "no_background": int((g["background"] == 0).sum()),
            }
        )
    return pd.DataFrame(rows)


def collect(score_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """The summaries of several ``score-bgdino`` outputs, one table."""
    frames = []
    for d in score_dirs:
        path = Path(d) / "summary.csv"
        if not path.is_file():
            raise HRVInputError(f"{path} does not exist; run hrv score-bgdino into {d} first")
        frames.append(pd.read_csv(path))
    if not frames:
        raise HRVInputError("no BG-DINO outputs given")
    return pd.concat(frames, ignore_index=True).reindex(columns=SUMMARY_COLUMNS)


def _cell(mean: float, se: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4f}" if not np.isfinite(se) else f"{mean:.4f} ± {se:.4f}"


def editing_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per method, per set a "mean ± SE" column and one "n (fallback)" column."""
    methods = list(dict.fromkeys(summary["method"]))
    by = summary.set_index(["set", "method"])
    out = pd.DataFrame({"method": methods})
    for s in dict.fromkeys(summary["set"]):
        rows = [by.loc[(s, m)] if (s, m) in by.index else None for m in methods]
        out[f"BG-DINO {s}"] = ["" if r is None else _cell(r["mean"], r["se"]) for r in rows]
        out[f"n {s} (fallback)"] = [
            "" if r is None else f"{int(r['n'])} ({int(r['fallback'])})" for r in rows
        ]
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


def clip_vs_bgdino(bgdino: pd.DataFrame, clip: pd.DataFrame) -> pd.DataFrame:
    """Per (set, method) in ``bgdino``: its CLIP and BG-DINO means and standard errors. ``clip`` is
    the editing stage's CLIP summary (columns set, method, mean, sem)."""
    c = clip.rename(columns={"mean": "clip", "sem": "clip_se"})[["set", "method", "clip", "clip_se"]]
    b = bgdino.rename(columns={"mean": "bgdino", "se": "bgdino_se"})[["set", "method", "bgdino", "bgdino_se"]]
    return b.merge(c, on=["set", "method"], how="left")


def plot_scatter(points: pd.DataFrame, out: str | Path, dpi: int = 150) -> Path:
    """Like the paper's Figure 7: per set a panel, per method a point at (CLIP, BG-DINO) with
    standard-error bars; up and to the right is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(points["set"]))
    methods = list(dict.fromkeys(points["method"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets) + 1.6, 3.4), squeeze=False)
    for ax, s in zip(axes[0], sets, strict=True):
        for row in points[points["set"] == s].itertuples():
            ax.errorbar(
                row.clip,
                row.bgdino,
                xerr=np.nan_to_num(row.clip_se),
                yerr=np.nan_to_num(row.bgdino_se),
                fmt="o",
                color=colours[row.method],
                label=row.method,
                capsize=2,
            )
        ax.ticklabel_format(useOffset=False)  # scores near 1 stay readable
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("CLIP (edited image, target prompt)", fontsize=8)
        ax.set_ylabel("BG-DINO", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[m]) for m in methods]
    fig.legend(handles, methods, fontsize=8, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(out)


def write_tables(
    score_dirs: Sequence[str | Path],
    clip_summary: str | Path,
    summary_out: str | Path,
    table_html_out: str | Path,
    scatter_out: str | Path,
    points_out: str | Path,
    title: str = "BG-DINO",
) -> pd.DataFrame:
    """The editing tables of BG-DINO (combined summary CSV, HTML table) and the CLIP/BG-DINO scatter."""
    summary = collect(score_dirs)
    points = clip_vs_bgdino(summary, pd.read_csv(clip_summary))
    with atomic_path(summary_out) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(points_out) as tmp:
        points.to_csv(tmp, index=False, float_format="%.6g")
    table_html(
        editing_table(summary), table_html_out, f"{title}: mean ± SE, n (pairs scored on the whole image)"
    )
    plot_scatter(points, scatter_out)
    return summary
