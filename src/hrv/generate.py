"""Steered generation: images with concept strengthening/adjusting beside the same images unsteered.

Three lines from Python::

    from hrv.generate import load_pipeline, steer
    pipe = load_pipeline("sd14")
    steer(pipe, "results/demo/hrv/hrv.npz", "A vase in lavender color", token="lavender",
          desired="Color", undesired="Plants", seeds=range(1, 11)).save("out/lavender")

Seed s starts from ``randn(latent shape, generator=torch.Generator("cpu").manual_seed(s))`` (so
``initial_latents(pipe, [0], s, ...)``), the same latent for every variant: the steered and the
unsteered image of a seed differ only by the steering. Variants of one seed run in one batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hrv.control import Controller, HeadFactors, Layout, installed
from hrv.errors import HRVInputError
from hrv.heads import HeadRegistry
from hrv.hrvfile import HRVSet, load_hrv
from hrv.io import atomic_path, write_text_atomic
from hrv.models import initial_latents, load_pipeline
from hrv.steering import Steering, build_intervention, rescaling_vector
from hrv.tokens import Occurrence, select_tokens

__all__ = ["SteeringResult", "load_hrv", "load_pipeline", "parse_seeds", "render", "save_grid", "steer"]


def parse_seeds(text: str | int | Iterable[int]) -> list[int]:
    """``"1-10"``, ``"1,3,7-9"``, an int or a list of ints -> a list of distinct seeds, in order."""
    if isinstance(text, int):
        seeds = [text]
    elif isinstance(text, str):
        seeds = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
            if not m or (m.group(1) and int(m.group(2)) < int(m.group(1))):
                raise HRVInputError(f"cannot read seeds {text!r}: use e.g. '1-10' or '1,3,7-9' (seeds >= 0)")
            seeds.extend(range(int(m.group(1)), int(m.group(2)) + 1) if m.group(1) else [int(m.group(3))])
    else:
        seeds = [int(s) for s in text]
    if any(s < 0 for s in seeds):
        raise HRVInputError(f"seeds must be >= 0, got {text!r}")
    if not seeds:
        raise HRVInputError(f"no seeds in {text!r}; give at least one, e.g. '1-10'")
    if len(set(seeds)) != len(seeds):
        raise HRVInputError(f"seeds {text!r} repeat a seed; each seed gives one image")
    return seeds


def default_size(pipe) -> int:
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


@torch.no_grad()
def render(
    pipe,
    prompt: str,
    seeds: Sequence[int],
    variants: Mapping[str, torch.Tensor | None],
    *,
    start: int = 0,
    end: int | None = None,
    steps: int = 50,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    batch_invariant: bool = True,
    progress: bool = True,
) -> dict[str, list]:
    """Images of ``prompt`` for each seed under each variant's factors (None = unsteered).

    ``variants`` maps a name to (1, H, 77) factors; all variants share the step window
    [start, end) in UNet evaluations. ``batch_size`` seeds run per pipeline call (each with all
    variants). Returns {variant: [PIL image per seed]}.
    """
    from hrv.determinism import make_batch_invariant

    if batch_size < 1:
        raise HRVInputError(f"batch_size must be >= 1, got {batch_size}")
    if not variants:
        raise HRVInputError("no variants to render")
    height = height or default_size(pipe)
    width = width or default_size(pipe)
    if batch_invariant:
        make_batch_invariant(pipe)  # a seed's image must not depend on its batch neighbours
    registry = HeadRegistry.from_unet(pipe.unet)
    names = list(variants)
    rows = []
    for name in names:
        f = variants[name]
        if f is None:
            f = torch.ones((1, registry.n_heads, 77))
        if f.ndim != 3 or f.shape[0] != 1 or f.shape[1] != registry.n_heads:
            raise HRVInputError(
                f"variant {name!r}: factors of shape {tuple(f.shape)}, expected (1, {registry.n_heads}, tokens)"
            )
        rows.append(f.float())
    n_tok = {r.shape[2] for r in rows}
    if len(n_tok) != 1:
        raise HRVInputError(f"variants have different token counts {sorted(n_tok)}")
    controller = Controller(layout=Layout(guidance=guidance_scale > 1.0))
    out: dict[str, list] = {name: [] for name in names}
    seeds = list(seeds)
    bar = tqdm(total=len(seeds), desc=f"render {prompt[:30]!r}", unit="seed", disable=not progress)
    with installed(pipe.unet, controller, kinds={"cross"}):
        for i in range(0, len(seeds), batch_size):
            chunk = seeds[i : i + batch_size]
            # element order: seed-major, variant-minor
            latents = torch.cat([initial_latents(pipe, [0], s, height, width) for s in chunk for _ in names])
            factors = torch.cat([rows[v] for _ in chunk for v in range(len(names))])
            controller.edits = [
                HeadFactors(factors.to(device=pipe.device, dtype=torch.float32), start=start, end=end)
            ]
            controller.step = 0
            images = pipe(
                prompt=[prompt] * len(latents),
                latents=latents,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
            ).images
            for k, image in enumerate(images):
                out[names[k % len(names)]].append(image)
            bar.update(len(chunk))
    bar.close()
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def save_grid(
    rows: Mapping[str, Sequence], column_labels: Sequence[str], out: str | Path, title: str | None = None
) -> Path:
    """One labelled row of images per entry of ``rows`` (e.g. SD and SD-HRV), one column per seed;
    ``title`` may have several lines. Labels are at least 16 px high, readable at 100% zoom even
    beside the tiny model's 64-pixel images."""
    from PIL import Image, ImageDraw

    names = list(rows)
    if not names or not rows[names[0]]:
        raise HRVInputError("nothing to put in a grid")
    w, h = rows[names[0]][0].size
    n_cols = len(rows[names[0]])
    size = max(16, min(h, w) // 10)
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(measure.textlength(n, font=font) for n in names) + size)
    lines = title.splitlines() if title else []
    top = 2 * size + int(1.3 * size) * len(lines) + (size // 2 if lines else 0)
    width = max([left + n_cols * w] + [int(measure.textlength(t, font=font)) + size for t in lines])
    grid = Image.new("RGB", (width, top + len(names) * h), "white")
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(lines):
        draw.text((size // 2, size // 2 + int(1.3 * size) * i), line, fill="black", font=font)
    for c, label in enumerate(column_labels):
        draw.text((left + c * w + size // 4, top - 1.5 * size), str(label), fill="black", font=font)
    for r, name in enumerate(names):
        draw.text((size // 2, top + r * h + h // 2 - size // 2), name, fill="black", font=font)
        for c, image in enumerate(rows[name]):
            grid.paste(image.convert("RGB"), (left + c * w, top + r * h))
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    return Path(out)


def save_image(image, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


@dataclass
class SteeringResult:
    """Steered images and the same seeds unsteered, with what was steered."""

    prompt: str
    token: str | int | list[int]
    positions: list[int]
    steering: Steering
    seeds: list[int]
    vector: np.ndarray  # (H,) the rescaling vector
    steered: list
    baseline: list
    sampling: dict[str, Any] = field(default_factory=dict)

    def description(self) -> str:
        """What was steered, in words: the token, the method and the concepts."""
        s = self.steering
        token = self.token if isinstance(self.token, str) else f"token(s) {self.token}"
        what = (
            f"adjusting: towards {s.desired}, away from {s.undesired}"
            if s.undesired is not None
            else f"strengthening {s.desired}"
        )
        extra = "" if s.clamp is None else f", clamp {s.clamp:g}"
        return f'"{token}": {what}{extra}'

    def save(self, out: str | Path) -> Path:
        """``steered/seed_<s>.png``, ``baseline/seed_<s>.png``, ``grid.png``, ``steering.json``."""
        from hrv.io import atomic_dir

        final = Path(out)
        # the whole folder at once: a new run's images never mix with an earlier run's
        with atomic_dir(final, owner="hrv generate") as tmp:
            self._write(tmp)
        return final

    def _write(self, out: Path) -> None:
        for name, images in (("steered", self.steered), ("baseline", self.baseline)):
            for seed, image in zip(self.seeds, images, strict=True):
                save_image(image, out / name / f"seed_{seed:04d}.png")
        label = "SD-HRV" if self.steering.method == "adjusting" else "strengthened"
        save_grid(
            {"SD": self.baseline, label: self.steered},
            [f"seed {s}" for s in self.seeds],
            out / "grid.png",
            title=f"{self.prompt}\n{self.description()}",
        )
        meta = {
            "prompt": self.prompt,
            "token": self.token,
            "positions": self.positions,
            "method": self.steering.method,
            "desired": self.steering.desired,
            "undesired": self.steering.undesired,
            "clamp": self.steering.clamp,
            "window": [self.steering.start, self.steering.end],
            "seeds": self.seeds,
            "sampling": self.sampling,
            "rescaling_vector": [round(float(v), 6) for v in self.vector],
        }
        write_text_atomic(out / "steering.json", json.dumps(meta, indent=2) + "\n")


def steer(
    pipe,
    hrv: HRVSet | str | Path,
    prompt: str,
    token: str | int | Sequence[int],
    desired: str,
    undesired: str | None = None,
    *,
    seeds: str | int | Iterable[int] = (1,),
    clamp: float | None = None,
    start: int = 0,
    end: int | None = None,
    occurrence: Occurrence = None,
    steps: int = 50,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    batch_invariant: bool = True,
    progress: bool = True,
) -> SteeringResult:
    """Concept adjusting (``undesired`` given) or strengthening of ``token`` in ``prompt``.

    ``pipe``: a loaded pipeline or anything ``load_pipeline`` takes. ``hrv``: an ``HRVSet`` or an
    ``hrv.npz`` path (a run's, or ``hrv import-official``'s); its heads must be the model's.
    ``token``: a word of the prompt (all its tokens) or token index/indices (SOT = 0).
    """
    if isinstance(pipe, str | Path):
        pipe = load_pipeline(pipe)
    hrv = hrv if isinstance(hrv, HRVSet) else load_hrv(hrv)
    seed_list = parse_seeds(seeds)
    steering = Steering(desired, undesired, clamp, start, end)
    positions = select_tokens(pipe.tokenizer, prompt, token, occurrence)
    registry = HeadRegistry.from_unet(pipe.unet)
    intervention = build_intervention(hrv, registry.names(), steering, positions)
    images = render(
        pipe,
        prompt,
        seed_list,
        {"baseline": None, "steered": intervention.factors},
        start=start,
        end=end,
        steps=steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        batch_size=batch_size,
        batch_invariant=batch_invariant,
        progress=progress,
    )
    sampling = {
        "steps": steps,
        "guidance_scale": guidance_scale,
        "height": height or default_size(pipe),
        "width": width or default_size(pipe),
    }
    return SteeringResult(
        prompt,
        token if isinstance(token, str | int) else list(token),
        positions,
        steering,
        seed_list,
        rescaling_vector(hrv, desired, undesired, clamp),
        images["steered"],
        images["baseline"],
        sampling,
    )
