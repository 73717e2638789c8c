"""Figures of ordered weakening: curves (paper Fig. 3b), image grids (Fig. 3a), area summary."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hrv.errors import HRVInputError
from hrv.io import atomic_path
from hrv.plots import pyplot, save_png
from hrv.scoring import area_between

STYLE = {
    "MoRHF": {"color": "tab:red", "marker": "o"},
    "LeRHF": {"color": "tab:blue", "marker": "s"},
    "random": {"color": "tab:gray", "marker": "^"},
}


def read_reference_curve(path: str | Path):
    """The released curve (``Key,Value`` rows ``top_<k>``/``bottom_<k>``) as a table like ours."""
    import pandas as pd

    raw = pd.read_csv(path)
    if list(raw.columns[:2]) != ["Key", "Value"]:
        raise HRVInputError(f"{path}: expected columns Key,Value with rows like top_11 / bottom_11")
    rows = []
    for key, value in zip(raw["Key"], raw["Value"], strict=True):
        side, _, k = str(key).rpartition("_")
        order = {"top": "MoRHF", "bottom": "LeRHF"}.get(side)
        if order is None or not k.isdigit():
            raise HRVInputError(f"{path}: row {key!r} is not top_<k> or bottom_<k>")
        rows.append({"order": order, "k": int(k), "mean": float(value)})
    return pd.DataFrame(rows)


def _draw_curves(ax, table, title: str, reference=None) -> None:
    for order in [o for o in STYLE if o in set(table["order"])]:
        part = table[table["order"] == order].sort_values("k")
        k, m, se = part["k"].to_numpy(), part["mean"].to_numpy(), part["sem"].to_numpy()
        ax.plot(k, m, label=order, linewidth=1.5, markersize=3.5, **STYLE[order])
        ax.fill_between(k, m - se, m + se, color=STYLE[order]["color"], alpha=0.15, linewidth=0)
    if reference is not None:
        for order in ("MoRHF", "LeRHF"):
            part = reference[reference["order"] == order].sort_values("k")
            ax.plot(
                part["k"],
                part["mean"],
                linestyle="--",
                color=STYLE[order]["color"],
                alpha=0.6,
                linewidth=1,
                label=f"{order} (released, SD v1.4)",
            )
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("number of weakened heads k", fontsize=8)
    ax.set_ylabel("CLIP score", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def curves(table, out: str | Path, title: str, reference=None, dpi: int = 150) -> Path:
    """Score against k per order with +-1 standard error bands (one experiment)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    _draw_curves(ax, table, title, reference)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, out, dpi)


def overview(tables: dict[str, object], out: str | Path, dpi: int = 150) -> Path:
    """All experiments' curves side by side (title = concept)."""
    plt = pyplot()
    n = len(tables)
    if n == 0:
        raise HRVInputError("no weakening tables to plot")
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax, (name, table) in zip(axes.flat, tables.items(), strict=False):
        _draw_curves(ax, table, name)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_png(fig, out, dpi)


def area_summary(
    tables: dict[str, object],
    out_csv: str | Path,
    out_png: str | Path,
    n_heads: int | None = None,
    dpi: int = 150,
):
    """Per experiment: area between LeRHF and MoRHF (and random and MoRHF), k scaled to [0, 1]."""
    import pandas as pd

    rows = []
    for name, table in tables.items():
        concept = str(table["concept"].iloc[0]) if "concept" in table.columns and len(table) else name
        h = n_heads or int(table["k"].max())
        rows.append(
            {
                "experiment": name,
                "concept": concept,
                "area_LeRHF_minus_MoRHF": area_between(table, "LeRHF", "MoRHF", h),
                "area_random_minus_MoRHF": area_between(table, "random", "MoRHF", h),
                "area_LeRHF_minus_random": area_between(table, "LeRHF", "random", h),
            }
        )
    summary = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, max(2.6, 0.5 * len(rows) + 1.5)))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, summary["area_LeRHF_minus_MoRHF"], height=0.4, color="tab:purple", label="LeRHF - MoRHF")
    ax.barh(y + 0.2, summary["area_random_minus_MoRHF"], height=0.4, color="tab:gray", label="random - MoRHF")
    ax.set_yticks(y, summary["concept"], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))  # tiny areas: no crowded labels
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("area between curves (CLIP score x k/H)", fontsize=8)
    ax.set_title("MoRHF removes the concept faster when > 0", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out_png, dpi)
    return summary


def image_grid(
    manifest, out: str | Path, prompt_indices: Sequence[int], seed: int, title: str = "", dpi: int = 150
) -> Path:
    """Rows = orders (per chosen prompt), columns = k; like the paper's Figure 3a."""
    from PIL import Image

    part = manifest[(manifest["seed"] == seed) & (manifest["prompt_index"].isin(list(prompt_indices)))]
    if part.empty:
        raise HRVInputError(f"no images of seed {seed} and prompts {list(prompt_indices)} to put in a grid")
    ks = sorted(set(part["k"]))
    orders = [o for o in STYLE if o in set(part["order"])]
    blocks = [(p, o) for p in sorted(set(part["prompt_index"])) for o in orders]
    plt = pyplot()
    fig, axes = plt.subplots(
        len(blocks), len(ks), figsize=(1.3 * len(ks) + 1.6, 1.3 * len(blocks) + 0.6), squeeze=False
    )
    lookup = {(r.prompt_index, r.order, r.k): r for r in part.itertuples()}
    for i, (p, order) in enumerate(blocks):
        for j, k in enumerate(ks):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            row = lookup.get((p, order, k))
            if row is not None:
                with Image.open(row.image) as im:
                    ax.imshow(np.asarray(im.convert("RGB")))
            if i == 0:
                ax.set_title(f"k={k}", fontsize=9)
            if j == 0:
                text = row.prompt if row is not None else ""
                ax.set_ylabel(f"{order}\n" + textwrap.fill(text, 22, max_lines=3), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, out, dpi)
