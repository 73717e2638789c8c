"""Figures: the HRV heat map (concepts x heads, grouped by layer), and what every figure uses:
matplotlib without a display and an atomic PNG write."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hrv.io import atomic_path

if TYPE_CHECKING:
    from hrv.hrvfile import HRVSet


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: str | Path, dpi: int) -> Path:
    """Write ``fig`` to ``out`` as a PNG atomically and close it."""
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(out)


def heatmap(
    hrv: HRVSet, out: str | Path, cmap: str = "viridis", dpi: int = 150, vmax: float | None = None
) -> Path:
    """Concepts x heads. The colour scale ends at ``vmax`` (default: the 99.5th percentile, so that a
    few very large values do not leave the rest dark); larger values are drawn in the top colour,
    and the colour bar then says so, with an arrow and the largest value."""
    from hrv.heads import parse_head  # imports torch: only when a heat map is drawn

    plt = pyplot()

    n_c, n_h = hrv.hrv.shape
    layers = [parse_head(h)[:2] for h in hrv.heads]
    width = min(max(8.0, n_h * 0.08), 40.0)
    fig, ax = plt.subplots(figsize=(width, max(4.0, n_c * 0.25)))
    at = "" if vmax is not None else "p99.5 = "
    vmax = vmax if vmax is not None else float(np.percentile(hrv.hrv, 99.5)) or 1.0
    clipped = bool(hrv.hrv.max() > vmax)
    label = f"HRV (colours clipped at {at}{vmax:.3g}; max {hrv.hrv.max():.3g})" if clipped else "HRV"
    im = ax.imshow(hrv.hrv, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_yticks(range(n_c), hrv.concepts, fontsize=7)
    # one vertical line between layers, one tick label per layer
    starts = [0] + [i for i in range(1, n_h) if layers[i] != layers[i - 1]]
    for s in starts[1:]:
        ax.axvline(s - 0.5, color="white", linewidth=0.6)
    centers = [(s + e - 1) / 2 for s, e in zip(starts, starts[1:] + [n_h], strict=True)]
    labels = [f"{layers[s][0]}{layers[s][1]}" for s in starts]
    step = max(1, len(starts) // 40)
    ax.set_xticks(centers[::step], labels[::step], rotation=90, fontsize=6)
    ax.set_xlabel("cross-attention layer (heads in order inside each)")
    ax.set_title(f"Head Relevance Vectors ({n_c} concepts x {n_h} heads; mean 1 per concept)")
    bar = fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, extend="max" if clipped else "neither")
    bar.set_label(label, fontsize=8)
    fig.tight_layout()
    return save_png(fig, out, dpi)
