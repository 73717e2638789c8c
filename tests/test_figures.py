"""Figures say what they show: the heat map's clipped colour scale, readable grid labels, and the
steering grid's token, concepts and method."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hrv.generate import SteeringResult, save_grid
from hrv.hrvfile import HRVSet
from hrv.plots import heatmap
from hrv.steering import Steering


def _colour_bar_labels(monkeypatch, hrv: HRVSet, tmp_path, **kw) -> list[tuple[str, str]]:
    """(label, extend) of every colour bar the heat map draws."""
    import matplotlib.figure

    bars = []
    real = matplotlib.figure.Figure.colorbar

    def spy(fig, *a, **k):
        bar = real(fig, *a, **k)
        bars.append(bar)
        return bar

    monkeypatch.setattr(matplotlib.figure.Figure, "colorbar", spy)
    heatmap(hrv, tmp_path / "h.png", **kw)
    assert (tmp_path / "h.png").stat().st_size > 0
    return [(bar.ax.get_ylabel(), bar.extend) for bar in bars]


def _hrv(values: np.ndarray) -> HRVSet:
    heads = [f"down.0/h{h}" for h in range(values.shape[1])]
    counts = np.zeros((1, *values.shape), dtype=np.int64)
    return HRVSet(values, [f"c{i}" for i in range(len(values))], heads, values[None], counts)


def test_heatmap_colour_bar_marks_clipping(monkeypatch, tmp_path):
    values = np.ones((4, 400))
    values[0, :3] = [9.5, 9.5, 23.0]  # the largest value lies far above the 99.5th percentile
    [(label, extend)] = _colour_bar_labels(monkeypatch, _hrv(values), tmp_path)
    vmax = np.percentile(values, 99.5)
    assert extend == "max" and label == f"HRV (colours clipped at p99.5 = {vmax:.3g}; max 23)"
    [(label, extend)] = _colour_bar_labels(monkeypatch, _hrv(values), tmp_path, vmax=5.0)
    assert extend == "max" and label == "HRV (colours clipped at 5; max 23)"
    [(label, extend)] = _colour_bar_labels(monkeypatch, _hrv(np.ones((4, 8))), tmp_path)
    assert (label, extend) == ("HRV", "neither")  # nothing clipped, nothing said


def test_grid_labels_are_readable_beside_small_images(tmp_path):
    """Beside 64-pixel images the labels are at least 16 px: the label rows are that tall."""
    images = [Image.new("RGB", (64, 64), "gray")] * 2
    out = save_grid({"SD": images, "SD-HRV": images}, ["seed 1", "seed 2"], tmp_path / "g.png", title="a\nb")
    grid = np.asarray(Image.open(out).convert("L"))
    ink = np.flatnonzero((grid[:, :] < 128).any(axis=1))  # rows with dark pixels (text)
    title_rows = ink[ink < 40]
    assert title_rows.max() - title_rows.min() >= 16  # two title lines
    assert grid.shape[0] >= 2 * 64 + 2 * 16 + 2 * 16


def test_steering_grid_names_token_concepts_and_method():
    def result(undesired, clamp=None, token="crane"):
        return SteeringResult(
            "a crane", token, [2], Steering("Animals", undesired, clamp), [1], np.ones(4), [], []
        )

    assert (
        result("Architecture").description() == '"crane": adjusting: towards Animals, away from Architecture'
    )
    assert result(None, 1.5).description() == '"crane": strengthening Animals, clamp 1.5'
    assert result(None, token=[2, 3]).description() == '"token(s) [2, 3]": strengthening Animals'
