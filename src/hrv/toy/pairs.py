"""Two-object toy scenes, for measuring neglect exactly: "a red circle and a blue square on grass".

The two objects differ in colour and in shape and have the same size; the exact scorer finds every
object of an image (a connected region far from the background colour), names its colour
(nearest palette colour) and shape (the single-object rules of ``hrv.toy.classifiers``), and an
object of the caption is *missing* when no region has its colour and shape. This is the toy
world's version of multi-concept generation's neglect (Attend-and-Excite's motivation).

The shipped toy model is trained on these captions alongside the single-object ones
(``ToyTrainConfig.pair_fraction``); ``hrv.toy.neglect`` measures neglect for the multi-concept
methods with this scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hrv.errors import HRVInputError
from hrv.toy.classifiers import (
    _COLOR_NAMES,
    _COLORS,
    MIN_OBJECT_PIXELS,
    OBJECT_DISTANCE,
    SQUARE_FILL,
    TRIANGLE_SKEW,
    _dilate,
    _geometry,
    components,
)
from hrv.toy.world import (
    BACKGROUND_PHRASE,
    BACKGROUNDS,
    COLORS,
    IMAGE_SIZE,
    SHAPES,
    SIZE_PIXELS,
    ToyData,
    _positions,
    backdrop,
    object_colour,
    paint,
)

PAIR_SIZE = "large"  # both objects 12 +- 1 px: two fit side by side in 32 px with a gap


@dataclass(frozen=True)
class PairScene:
    """Two objects of different colour and shape on a background."""

    first: tuple[str, str]  # (colour, shape)
    second: tuple[str, str]
    background: str

    def __post_init__(self) -> None:
        for color, shape in (self.first, self.second):
            if color not in COLORS or shape not in SHAPES:
                raise HRVInputError(f"object {color} {shape}: use colours {COLORS} and shapes {SHAPES}")
        if self.first[0] == self.second[0] or self.first[1] == self.second[1]:
            raise HRVInputError(
                f"the two objects must differ in colour and shape: {self.first}, {self.second}"
            )
        if self.background not in BACKGROUNDS:
            raise HRVInputError(f"background {self.background!r}: use one of {BACKGROUNDS}")

    def caption(self) -> str:
        (c1, s1), (c2, s2) = self.first, self.second
        return f"a {c1} {s1} and a {c2} {s2} {BACKGROUND_PHRASE[self.background]}"


def all_pair_scenes() -> list[PairScene]:
    """Every ordered pair of objects differing in colour and shape, on every background (288)."""
    objects = [(c, s) for c in COLORS for s in SHAPES]
    return [
        PairScene(a, b, bg)
        for a in objects
        for b in objects
        if a[0] != b[0] and a[1] != b[1]
        for bg in BACKGROUNDS
    ]


def make_pair_dataset(
    n: int, seed: int, scenes: Sequence[PairScene] | None = None, size: int = IMAGE_SIZE
) -> ToyData:
    """``n`` two-object images; image ``i`` is drawn with ``default_rng([seed, i, 2])``.

    The extra ``2`` keeps these generators apart from ``make_dataset``'s (``[seed, i]``), so a
    training set holding both kinds never draws two images from one generator. Without ``scenes``
    the scene is drawn uniformly from ``all_pair_scenes()``; with ``scenes`` image ``i`` shows
    ``scenes[i % len(scenes)]``.
    """
    if n < 0:
        raise HRVInputError(f"number of images must be >= 0, got {n}")
    pool = all_pair_scenes()
    images, out = np.empty((n, size, size, 3), dtype=np.float32), []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 2])
        scene = pool[int(rng.integers(len(pool)))] if scenes is None else scenes[i % len(scenes)]
        images[i] = render_pair(scene, rng, size)
        out.append(scene)
    return ToyData(images, out)


def render_pair(
    scene: PairScene, rng: np.random.Generator, size: int = IMAGE_SIZE, draw: tuple[bool, bool] = (True, True)
) -> np.ndarray:
    """(size, size, 3) float32 image in [0, 1]; ``draw`` leaves out an object (planted neglect)."""
    image = backdrop(scene.background, rng, size)
    side = SIZE_PIXELS[PAIR_SIZE] + rng.uniform(-1, 1)
    centres = _positions(2, side, rng, size)
    for (color, shape), centre, shown in zip((scene.first, scene.second), centres, draw, strict=True):
        colour = object_colour(color, rng)  # drawn even for a left-out object: the same other pixels
        if shown:
            image = paint(image, shape, side, centre, colour)
    return np.clip(image, 0, 1).astype(np.float32)


def objects_in(image: np.ndarray) -> list[tuple[str, str]]:
    """(colour, shape) of every object of an image, largest first."""
    img = np.asarray(image, dtype=np.float32)
    if img.max() > 1.5:
        img = img / 255.0
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    dist = np.sqrt(((img - bg_rgb) ** 2).sum(axis=-1))
    found = []
    for region in components(dist > OBJECT_DISTANCE):
        if region.sum() < MIN_OBJECT_PIXELS:
            continue
        obj_rgb = np.median(img[region], axis=0)
        color = _COLOR_NAMES[int(np.argmin(((_COLORS - obj_rgb) ** 2).sum(axis=1)))]
        alpha = np.clip(dist / max(float(np.sqrt(((obj_rgb - bg_rgb) ** 2).sum())), 1e-6), 0, 1)
        area, w, h, skew = _geometry(alpha * _dilate(region))
        if skew < TRIANGLE_SKEW:
            shape = "triangle"
        else:
            shape = "square" if area / max(w * h, 1e-9) > SQUARE_FILL else "circle"
        found.append((color, shape))
    return found


def neglect(images: Sequence[np.ndarray] | np.ndarray, scenes: Sequence[PairScene]) -> dict[str, float]:
    """Fractions of images missing the first object, the second, either, and showing both."""
    if len(images) != len(scenes):
        raise HRVInputError(f"{len(images)} images but {len(scenes)} scenes")
    first = second = 0
    both = 0
    for image, scene in zip(images, scenes, strict=True):
        objects = objects_in(image)
        has_first, has_second = scene.first in objects, scene.second in objects
        first += not has_first
        second += not has_second
        both += has_first and has_second
    n = max(len(scenes), 1)
    return {
        "first_missing": first / n,
        "second_missing": second / n,
        "any_missing": 1 - both / n,
        "both_present": both / n,
    }
