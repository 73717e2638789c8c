"""The toy world: small RGB scenes drawn by code, with captions that say exactly what is drawn.

A scene is one or two identical objects (colour, shape, size) on a background. Every attribute
comes from a small vocabulary that maps onto one of the paper's concepts:

========== ============================== =====================
attribute  vocabulary                     paper concept
========== ============================== =====================
count      one, two                       Counting
size       small, large                   Size
color      red, green, blue, yellow       Color
shape      circle, square, triangle       Shape (Geometric)
background grass, sand, sky, night        Nature Scenes (backdrop)
========== ============================== =====================

Captions read like "two small red circles on grass". Rendering is seeded: scene ``i`` of a data
set with seed ``s`` is a pure function of ``(s, i)`` (``numpy.random.default_rng([s, i])``), so
any slice of a data set can be regenerated on its own. Shapes are drawn 4x supersampled and
averaged down, so edges are anti-aliased like a photograph's rather than jagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from hrv.errors import HRVInputError

IMAGE_SIZE = 32
COUNTS = ("one", "two")
SIZES = ("small", "large")
COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ("grass", "sand", "sky", "night")
ATTRIBUTES = ("count", "size", "color", "shape", "background")
VOCABULARY = {
    "count": COUNTS,
    "size": SIZES,
    "color": COLORS,
    "shape": SHAPES,
    "background": BACKGROUNDS,
}

# Saturated object colours, muted backgrounds: every object colour stays far (in RGB) from every
# background colour, so an object is always separable from its backdrop by colour distance.
COLOR_RGB = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.10, 0.25, 0.95),
    "yellow": (0.95, 0.90, 0.10),
}
BACKGROUND_RGB = {
    "grass": (0.30, 0.45, 0.22),
    "sand": (0.82, 0.74, 0.58),
    "sky": (0.62, 0.80, 0.95),
    "night": (0.08, 0.08, 0.22),
}
# side of an object's bounding box in pixels (before +-1 jitter)
SIZE_PIXELS = {"small": 7, "large": 12}
BACKGROUND_PHRASE = {"grass": "on grass", "sand": "on sand", "sky": "in the sky", "night": "at night"}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """What an image shows; ``caption()`` says it in words."""

    count: str
    size: str
    color: str
    shape: str
    background: str

    def __post_init__(self) -> None:
        for name in ATTRIBUTES:
            value = getattr(self, name)
            if value not in VOCABULARY[name]:
                raise HRVInputError(
                    f"scene {name} {value!r} is not in the toy vocabulary; use one of {', '.join(VOCABULARY[name])}"
                )

    def caption(self) -> str:
        shape = PLURAL[self.shape] if self.count == "two" else self.shape
        return f"{self.count} {self.size} {self.color} {shape} {BACKGROUND_PHRASE[self.background]}"

    def labels(self) -> dict[str, str]:
        return asdict(self)


def all_scenes() -> list[Scene]:
    """Every combination of the vocabularies (2 x 2 x 4 x 3 x 4 = 192 scenes), in a fixed order."""
    return [
        Scene(n, s, c, sh, bg)
        for n in COUNTS
        for s in SIZES
        for c in COLORS
        for sh in SHAPES
        for bg in BACKGROUNDS
    ]


def sample_scene(rng: np.random.Generator) -> Scene:
    return Scene(*(str(rng.choice(VOCABULARY[a])) for a in ATTRIBUTES))


def _shape_mask(shape: str, side: float, cx: float, cy: float, size: int) -> np.ndarray:
    """Supersampled boolean mask of one shape of bounding-box side ``side`` centred at (cx, cy)."""
    n = size * _SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / _SUPERSAMPLE
    y, x = np.meshgrid(coords, coords, indexing="ij")
    half = side / 2
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    if shape == "triangle":  # isosceles, apex up: width grows linearly from top to bottom
        top, bottom = cy - half, cy + half
        frac = (y - top) / side
        return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half * frac)
    raise HRVInputError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")


def _positions(count: int, side: float, rng: np.random.Generator, size: int) -> list[tuple[float, float]]:
    """Centres of ``count`` non-overlapping objects (a gap of >= 1 px between bounding boxes)."""
    margin = side / 2 + 0.5
    for _ in range(1000):
        centres = [tuple(rng.uniform(margin, size - margin, 2)) for _ in range(count)]
        if count == 1:
            return centres
        (x0, y0), (x1, y1) = centres
        if max(abs(x0 - x1), abs(y0 - y1)) >= side + 1:
            return centres
    raise RuntimeError("could not place the objects without overlap")  # unreachable for the vocab


def backdrop(background: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) background: its colour, a gentle vertical gradient and pixel noise, which make
    backgrounds scene-like rather than flat."""
    bg = np.asarray(BACKGROUND_RGB[background], dtype=np.float32)
    shade = rng.uniform(-0.06, 0.06) * np.linspace(-1, 1, size, dtype=np.float32)[:, None, None]
    return bg + shade + rng.normal(0, 0.015, (size, size, 3)).astype(np.float32)


def object_colour(color: str, rng: np.random.Generator) -> np.ndarray:
    """An object's RGB: its palette colour, slightly jittered."""
    return np.asarray(COLOR_RGB[color], dtype=np.float32) + rng.uniform(-0.04, 0.04, 3).astype(np.float32)


def paint(
    image: np.ndarray, shape: str, side: float, centre: tuple[float, float], colour: np.ndarray
) -> np.ndarray:
    """``image`` with one anti-aliased shape (4x supersampled coverage) of ``colour`` drawn over it."""
    size = image.shape[0]
    mask = _shape_mask(shape, side, centre[0], centre[1], size)
    cover = mask.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))[..., None]
    return image * (1 - cover) + colour * cover


def render(scene: Scene, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) float32 image in [0, 1] showing ``scene``."""
    image = backdrop(scene.background, rng, size)
    count = COUNTS.index(scene.count) + 1
    side = SIZE_PIXELS[scene.size] + rng.uniform(-1, 1)
    colour = object_colour(scene.color, rng)
    for centre in _positions(count, side, rng, size):
        image = paint(image, scene.shape, side, centre, colour)
    return np.clip(image, 0, 1).astype(np.float32)


@dataclass
class ToyData:
    images: np.ndarray  # (N, size, size, 3) float32 in [0, 1]
    scenes: list  # Scene, or hrv.toy.pairs.PairScene for two-object data: anything with caption()

    @property
    def captions(self) -> list[str]:
        return [s.caption() for s in self.scenes]


def make_dataset(n: int, seed: int, scenes: Sequence[Scene] | None = None, size: int = IMAGE_SIZE) -> ToyData:
    """``n`` images; image ``i`` is drawn with ``default_rng([seed, i])``.

    Without ``scenes`` the scene is sampled from the same generator; with ``scenes`` image ``i``
    shows ``scenes[i % len(scenes)]`` (to render chosen captions).
    """
    if n < 0:
        raise HRVInputError(f"number of images must be >= 0, got {n}")
    images, out = np.empty((n, size, size, 3), dtype=np.float32), []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = sample_scene(rng) if scenes is None else scenes[i % len(scenes)]
        images[i] = render(scene, rng, size)
        out.append(scene)
    return ToyData(images, out)


def parse_caption(caption: str) -> Scene:
    """The scene a caption describes (inverse of ``Scene.caption``); clear error otherwise."""
    for scene in all_scenes():
        if scene.caption() == caption.strip():
            return scene
    raise HRVInputError(
        f"caption {caption!r} is not a toy-world caption; expected e.g. 'two small red circles on grass'"
    )
