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


NEGLECT_BARS = (
    ("first_missing", "first object missing"),
    ("second_missing", "second object missing"),
    ("any_missing", "either missing"),
)


def neglect_bars(results: dict, out: str | Path, dpi: int = 150) -> Path:
    """Grouped bars: per method the rate of a missing first / second / either object, +- 1 SE."""
    plt = pyplot()
    methods = list(results["methods"])
    fig, ax = plt.subplots(figsize=(1.4 + 1.3 * len(methods), 3.2))
    width = 0.8 / len(NEGLECT_BARS)
    x = np.arange(len(methods))
    for j, (key, label) in enumerate(NEGLECT_BARS):
        rates = [results["methods"][m][key]["rate"] for m in methods]
        ses = [results["methods"][m][key]["se"] for m in methods]
        ax.bar(x + (j - (len(NEGLECT_BARS) - 1) / 2) * width, rates, width, yerr=ses, capsize=2, label=label)
    ax.set_xticks(x, methods)
    ax.set_ylim(0, 1.2)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("fraction of images")
    ax.set_title(f"toy world: objects missing, {results['images_per_method']} images per method", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, out, dpi)


def neglect_grid(
    images: dict[str, Sequence],
    captions: Sequence[str],
    n_seeds: int,
    out: str | Path,
    rows: int = 12,
    dpi: int = 150,
) -> Path:
    """Rows = captions (first seed), columns = methods: the same latent under each method."""
    plt = pyplot()
    methods = list(images)
    rows = min(rows, len(captions))
    fig, axes = plt.subplots(
        rows, len(methods), figsize=(1.3 * len(methods) + 2.2, 1.3 * rows), squeeze=False
    )
    for r in range(rows):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            ax.imshow(np.asarray(images[method][r * n_seeds]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(method, fontsize=8)
        axes[r, 0].set_ylabel(
            captions[r].replace(" and ", "\nand "), fontsize=5, rotation=0, ha="right", va="center"
        )
    fig.tight_layout()
    return save_png(fig, out, dpi)
