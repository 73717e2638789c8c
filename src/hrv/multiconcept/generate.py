"""Multi-concept images from Python and the command line: SD, A&E, A&E-HRV and the ablations.

Three lines from Python::

    from hrv.multiconcept import excite, load_pipeline
    pipe = load_pipeline("sd14")
    excite(pipe, "a cat and a dog", method="ae_hrv", hrv="hrv.npz", seeds=[1, 2, 3]).save("out/cat-dog")

Images are written as ``<out>/<prompt>/<seed>.png``, the layout A&E's metric scripts read, with
``excite.json`` (settings, subjects, each image's losses and refinement steps) beside them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hrv.errors import HRVInputError
from hrv.generate import parse_seeds, save_grid, save_image
from hrv.hrvfile import HRVSet, load_hrv
from hrv.io import write_text_atomic
from hrv.models import load_pipeline
from hrv.multiconcept.sampler import DEFAULT_THRESHOLDS, ExciteSampler, ExciteSettings, ImageJob
from hrv.multiconcept.subjects import Subject, find_subjects, token_layout

__all__ = ["ExciteResult", "excite", "load_hrv", "load_pipeline", "sample_jobs"]


def sample_jobs(
    sampler: ExciteSampler, jobs: Sequence[ImageJob], batch_size: int = 1, progress: bool = True
) -> list:
    """Images of ``jobs`` (in order), ``batch_size`` per batch; a batch's images may mix prompts."""
    if batch_size < 1:
        raise HRVInputError(f"batch_size must be >= 1, got {batch_size}")
    images: list = []
    bar = tqdm(total=len(jobs), desc=sampler.method, unit="image", disable=not progress)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        images.extend(sampler.run(chunk))
        bar.update(len(chunk))
    bar.close()
    return images


@dataclass
class ExciteResult:
    """Images of one prompt under one method, one per seed."""

    prompt: str
    method: str
    seeds: list[int]
    subjects: list[Subject]
    images: list
    settings: dict[str, Any] = field(default_factory=dict)
    trace: list[dict] = field(default_factory=list)

    def save(self, out: str | Path) -> Path:
        """``<out>/<prompt>/<seed>.png``, ``<out>/grid.png`` and ``<out>/excite.json``."""
        out = Path(out)
        for seed, image in zip(self.seeds, self.images, strict=True):
            save_image(image, out / self.prompt / f"{seed}.png")
        save_grid(
            {self.method: self.images}, [f"seed {s}" for s in self.seeds], out / "grid.png", self.prompt
        )
        meta = {
            "prompt": self.prompt,
            "method": self.method,
            "seeds": self.seeds,
            "subjects": [asdict(s) for s in self.subjects],
            "settings": self.settings,
            "trace": self.trace,
        }
        write_text_atomic(out / "excite.json", json.dumps(meta, indent=2) + "\n")
        return out


def excite(
    pipe,
    prompt: str,
    method: str = "ae_hrv",
    hrv: HRVSet | str | Path | None = None,
    *,
    seeds: str | int | Iterable[int] = (1,),
    subjects: Sequence[str] | None = None,
    token_indices: Sequence[int | Sequence[int]] | None = None,
    concepts: str | Sequence[str] = "Animals",
    subword: str = "all",
    thresholds: Mapping[int, float] | None = None,
    max_iter_to_alter: int = 25,
    scale_factor: float = 20.0,
    max_refinement_steps: int = 20,
    smooth: bool = True,
    steps: int = 50,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> ExciteResult:
    """Images of ``prompt`` with ``method`` (sd, ae, ae_released, ae_hrv, ae_uniform), one per seed.

    Subjects: the last word of each " and "-part of the prompt (the benchmarks' nouns), or named
    (``subjects``: words of the prompt) or ``token_indices`` (SOT = 0). ``concepts``: the HRV
    concept of each subject (one for all, or one per subject; ``ae_hrv`` only).
    """
    if isinstance(pipe, str | Path):
        pipe = load_pipeline(pipe)
    if hrv is not None and not isinstance(hrv, HRVSet):
        hrv = load_hrv(hrv)
    seed_list = parse_seeds(seeds)
    settings = ExciteSettings(
        max_iter_to_alter=max_iter_to_alter,
        thresholds=dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds),
        scale_factor=scale_factor,
        max_refinement_steps=max_refinement_steps,
        smooth=smooth,
    )
    if method == "sd" and subjects is None and token_indices is None:
        found = []  # plain sampling excites nothing: any prompt will do
    else:
        found = find_subjects(pipe.tokenizer, prompt, subjects, token_indices, concepts, subword)
    positions, per_token = token_layout(found)
    sampler = ExciteSampler(
        pipe,
        method,
        hrv=hrv,
        settings=settings,
        steps=steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
    )
    jobs = [ImageJob(prompt, s, positions, per_token) for s in seed_list]
    images = sample_jobs(sampler, jobs, batch_size, progress)
    meta = {
        "steps": steps,
        "guidance_scale": guidance_scale,
        "height": sampler.height,
        "width": sampler.width,
        "max_iter_to_alter": settings.max_iter_to_alter,
        "thresholds": {str(k): v for k, v in settings.thresholds.items()},
        "scale_factor": settings.scale_factor,
        "max_refinement_steps": settings.max_refinement_steps,
        "smooth": settings.smooth,
    }
    return ExciteResult(prompt, method, seed_list, found, images, meta, sampler.trace)
