"""Tables and figures of the multi-concept benchmark: mean, SE and n per set and method; Table 2.

A metric's mean is over all images of a (set, method): prompts and seeds pooled, as A&E's scripts
average. Its standard error is the sample standard deviation (ddof 1) over those images divided by
sqrt(n); with one image there is none (left empty). Table 2 puts the methods in rows and, per set,
the three metrics in columns, with the relative gain of A&E-HRV over each A&E baseline,
(A&E-HRV - A&E) / A&E, as the paper reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hrv.errors import HRVInputError
from hrv.io import atomic_path, write_text_atomic
from hrv.plots import pyplot, save_png
from hrv.stats import mean_se

METRICS = {"full_prompt": "Full prompt", "min_object": "Min. object", "blip": "BLIP"}
METHOD_NAMES = {
    "sd": "SD",
    "ae": "A&E",
    "ae_released": "A&E (released)",
    "ae_hrv": "A&E-HRV",
    "ae_uniform": "A&E-uniform",
}


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error and count of each metric per (set, method)."""
    rows = []
    for (set_name, method), group in scores.groupby(["set", "method"], sort=False):
        for metric in METRICS:
            values = group[metric].to_numpy(dtype=float)
            mean, se, n = mean_se(values[~np.isnan(values)])
            rows.append({"set": set_name, "method": method, "metric": metric, "mean": mean, "se": se, "n": n})
    return pd.DataFrame(rows)


def table2(summary: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Methods in rows; ``<set> <metric>`` columns of means; then gain rows of A&E-HRV in percent."""
    sets = list(dict.fromkeys(summary["set"]))
    table = pd.DataFrame(index=[METHOD_NAMES.get(m, m) for m in methods])
    for set_name in sets:
        for metric in METRICS:
            cell = summary[(summary["set"] == set_name) & (summary["metric"] == metric)].set_index("method")
            table[f"{set_name} {METRICS[metric]}"] = [cell["mean"].get(m, np.nan) for m in methods]
    if "ae_hrv" in methods:
        for base in ("ae", "ae_released", "ae_uniform"):
            if base in methods:
                hrv_row, base_row = table.loc[METHOD_NAMES["ae_hrv"]], table.loc[METHOD_NAMES[base]]
                table.loc[f"A&E-HRV vs {METHOD_NAMES[base]} (%)"] = 100 * (hrv_row - base_row) / base_row
    table.index.name = "method"
    return table


def to_markdown(summary: pd.DataFrame, table: pd.DataFrame) -> str:
    """Table 2 as a Markdown table: mean +- SE (n) for methods, signed percentages for gains."""
    lookup = summary.set_index(["set", "method", "metric"])
    by_name = {v: k for k, v in METHOD_NAMES.items()}
    header = ["method", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        cells = []
        for column, value in row.items():
            if name.endswith("(%)"):
                cells.append("" if np.isnan(value) else f"{value:+.1f}%")
                continue
            set_name, label = column.split(" ", 1)
            metric = next(k for k, v in METRICS.items() if v == label)
            key = (set_name, by_name.get(name, name), metric)
            if key not in lookup.index or np.isnan(value):
                cells.append("")
                continue
            se, n = lookup.loc[key, "se"], int(lookup.loc[key, "n"])
            cells.append(f"{value:.4f} (n={n})" if np.isnan(se) else f"{value:.4f} ± {se:.4f} (n={n})")
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_tables(
    score_files: Sequence[str | Path], methods: Sequence[str], out_dir: str | Path
) -> pd.DataFrame:
    """``scores.csv`` (every image), ``summary.csv``, ``table2.csv`` and ``table2.md`` in ``out_dir``."""
    frames = [pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in score_files]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise HRVInputError("no multi-concept scores to summarise; run the sampling and scoring jobs")
    scores = pd.concat(frames, ignore_index=True)
    summary = summarize(scores)
    table = table2(summary, [m for m in methods if m in set(scores["method"])])
    out_dir = Path(out_dir)
    for name, frame, index in (
        ("scores", scores, False),
        ("summary", summary, False),
        ("table2", table, True),
    ):
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=index, float_format="%.6f")
    write_text_atomic(out_dir / "table2.md", to_markdown(summary, table))
    return summary


def bar_chart(summary: pd.DataFrame, methods: Sequence[str], out: str | Path) -> Path:
    """One panel per set: the three metrics' means per method, with standard-error bars."""
    plt = pyplot()
    sets = list(dict.fromkeys(summary["set"]))
    methods = [m for m in methods if m in set(summary["method"])]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.6), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, set_name in zip(axes[0], sets, strict=True):
        part = summary[summary["set"] == set_name].set_index(["method", "metric"])
        for k, method in enumerate(methods):
            means = [part["mean"].get((method, m), np.nan) for m in METRICS]
            errors = [np.nan_to_num(part["se"].get((method, m), np.nan)) for m in METRICS]
            x = np.arange(len(METRICS)) + (k - (len(methods) - 1) / 2) * width
            ax.bar(x, means, width, yerr=errors, capsize=2, label=METHOD_NAMES.get(method, method))
        ax.set_xticks(np.arange(len(METRICS)), list(METRICS.values()))
        ax.set_title(set_name)
        ax.set_ylabel("cosine similarity")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_png(fig, out, dpi=120)


def image_grid(
    job_dirs: dict[str, Sequence[str | Path]], prompts: Sequence[str], seed: int, out: str | Path, title: str
) -> Path:
    """Rows = prompts, columns = methods, all of one seed. ``job_dirs``: method -> its job folders."""
    from PIL import Image

    from hrv.generate import save_grid

    rows: dict[str, list] = {p: [] for p in prompts}
    for method, dirs in job_dirs.items():
        for prompt in prompts:
            path = next(
                (
                    Path(d) / prompt / f"{seed}.png"
                    for d in dirs
                    if (Path(d) / prompt / f"{seed}.png").is_file()
                ),
                None,
            )
            if path is None:
                raise HRVInputError(f"no image of {prompt!r}, seed {seed}, method {method}; re-run its job")
            with Image.open(path) as im:
                rows[prompt].append(im.convert("RGB"))
    return save_grid(rows, [METHOD_NAMES.get(m, m) for m in job_dirs], out, title=title)
