"""Exact attribute scorers of toy images: pixel statistics, no learned weights.

The background is the palette colour nearest to the median border pixel; object pixels are those
far (in RGB) from it; objects are the 4-connected components of the object mask (tiny specks are
ignored). Then:

- color: palette colour nearest to the median object pixel;
- count: number of objects (``one``/``two``; anything else is ``None``, which scores as wrong);
- size: ``large`` if the biggest object's bounding box is wider or taller than 10 px;
- shape: an apex-up triangle has its mass low (y-skewness < -0.3; exactly -0.57); otherwise a
  square fills its soft bounding box (fill > 0.88), a circle does not (pi/4 = 0.785).

``None`` means "no readable answer" and is never equal to a label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hrv.toy.world import ATTRIBUTES, BACKGROUND_RGB, COLOR_RGB, Scene

OBJECT_DISTANCE = 0.25  # RGB distance from the background beyond which a pixel is "object"
MIN_OBJECT_PIXELS = 5  # components smaller than this are noise, not objects
LARGE_SIDE = 9.5  # object side (px) separating small (7 +- 1) from large (12 +- 1)
SQUARE_FILL = 0.88
TRIANGLE_SKEW = -0.3

_BG_NAMES = list(BACKGROUND_RGB)
_BG = np.array([BACKGROUND_RGB[n] for n in _BG_NAMES], dtype=np.float32)
_COLOR_NAMES = list(COLOR_RGB)
_COLORS = np.array([COLOR_RGB[n] for n in _COLOR_NAMES], dtype=np.float32)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as boolean masks, largest first."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    found = []
    for sy, sx in zip(*np.nonzero(mask), strict=True):
        if labels[sy, sx]:
            continue
        label = len(found) + 1
        labels[sy, sx] = label
        stack, pixels = [(sy, sx)], 0
        while stack:
            y, x = stack.pop()
            pixels += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    stack.append((ny, nx))
        found.append(labels == label)
    return sorted(found, key=lambda m: -int(m.sum()))


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _geometry(alpha: np.ndarray) -> tuple[float, float, float, float]:
    """(area, width, height, skew) of one object's soft coverage map.

    Width/height are the largest row/column sums of the coverage, so fractional edge pixels count
    by how much of them is covered: a square's area is width x height whatever its sub-pixel
    position, a circle's pi/4 of it, a triangle's one half. ``skew`` is the skewness of the
    coverage along y: 0 for circles and squares, -0.57 for an apex-up triangle (mass at the bottom).
    """
    rows, cols = alpha.sum(axis=1), alpha.sum(axis=0)
    y = np.arange(len(rows), dtype=np.float64)
    p = rows / max(rows.sum(), 1e-9)
    mean = (p * y).sum()
    var = (p * (y - mean) ** 2).sum()
    skew = float((p * (y - mean) ** 3).sum() / max(var, 1e-9) ** 1.5)
    return float(alpha.sum()), float(rows.max()), float(cols.max()), skew


def classify(image: np.ndarray) -> dict[str, str | None]:
    """Attributes of one (H, W, 3) image in [0, 1] (float) or [0, 255] (uint8)."""
    img = np.asarray(image, dtype=np.float32)
    if img.max() > 1.5:
        img = img / 255.0
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = _BG_NAMES[int(np.argmin(((_BG - bg_rgb) ** 2).sum(axis=1)))]
    dist = np.sqrt(((img - bg_rgb) ** 2).sum(axis=-1))
    out: dict[str, str | None] = {
        "background": background,
        "count": None,
        "size": None,
        "color": None,
        "shape": None,
    }
    core = dist > OBJECT_DISTANCE
    if not core.any():
        return out
    obj_rgb = np.median(img[core], axis=0)
    out["color"] = _COLOR_NAMES[int(np.argmin(((_COLORS - obj_rgb) ** 2).sum(axis=1)))]
    # coverage: 0 on the background, 1 on the object colour (anti-aliased edges in between)
    alpha = np.clip(dist / max(float(np.sqrt(((obj_rgb - bg_rgb) ** 2).sum())), 1e-6), 0, 1)
    objects = [m for m in components(alpha > 0.5) if m.sum() >= MIN_OBJECT_PIXELS]
    if not objects:
        return out
    out["count"] = {1: "one", 2: "two"}.get(len(objects))
    geometry = [_geometry(alpha * _dilate(m)) for m in objects]
    _, w, h, _ = geometry[0]
    out["size"] = "large" if max(w, h) > LARGE_SIDE else "small"
    shapes = []
    for area, w, h, skew in geometry:
        if skew < TRIANGLE_SKEW:
            shapes.append("triangle")
        else:
            shapes.append("square" if area / max(w * h, 1e-9) > SQUARE_FILL else "circle")
    out["shape"] = max(set(shapes), key=lambda s: (shapes.count(s), s == shapes[0]))
    return out


def accuracy(images: Sequence[np.ndarray] | np.ndarray, scenes: Sequence[Scene]) -> dict[str, float]:
    """Fraction of images whose classified attribute equals the scene's, per attribute, + 'all'."""
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    hits = {a: 0 for a in ATTRIBUTES}
    every = 0
    for image, scene in zip(images, scenes, strict=True):
        pred, truth = classify(image), scene.labels()
        ok = [pred[a] == truth[a] for a in ATTRIBUTES]
        for a, good in zip(ATTRIBUTES, ok, strict=True):
            hits[a] += good
        every += all(ok)
    n = max(len(scenes), 1)
    return {**{a: hits[a] / n for a in ATTRIBUTES}, "all": every / n}
