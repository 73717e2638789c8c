"""Figures of the toy-world checks: weakening curves and a grid of generated images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# the same order colours/markers, Agg set-up and atomic PNG saving as the weakening figures
from hrv.plots import pyplot, save_png
from hrv.weakening_plots import STYLE


def weakening_curves(
    curves: dict[str, dict[str, list[float]]],
    ks: Sequence[int],
    n_heads: int,
    out: str | Path,
    dpi: int = 150,
) -> Path:
    """2 x 2 panels: rows = weakened concept (Color, Shape), columns = measured attribute.

    ``curves["Color-MoRHF"]["shape"]`` is the shape accuracy while the Color HRV's heads are weakened
    in MoRHF order, one value per k.
    """
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(7.2, 5.4), sharex=True, sharey=True)
    x = np.asarray(ks, dtype=float)
    for r, concept in enumerate(("Color", "Shape")):
        for c, attr in enumerate(("color", "shape")):
            ax = axes[r, c]
            for order, style in STYLE.items():
                key = f"{concept}-{order}"
                if key in curves:
                    ax.plot(x, curves[key][attr], ms=3, label=order, **style)
            ax.set_title(f"weaken {concept} HRV: {attr} accuracy", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(0, n_heads)
            ax.grid(alpha=0.3)
            if r == 1:
                ax.set_xlabel("k weakened heads")
            if c == 0:
                ax.set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, out, dpi)


def image_grid(
    images: np.ndarray, captions: Sequence[str], out: str | Path, cols: int = 8, dpi: int = 150
) -> Path:
    """Generated images (N, H, W, 3) in [0, 1] with their captions, ``cols`` per row."""
    plt = pyplot()
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions, strict=False):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        words = cap.split(" ")
        ax.set_title(" ".join(words[:3]) + "\n" + " ".join(words[3:]), fontsize=5)
    fig.tight_layout()
    return save_png(fig, out, dpi)
