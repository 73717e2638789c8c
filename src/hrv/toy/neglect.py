"""Neglect in the toy world, measured exactly: how often each object of "a red circle and a blue
square on grass" is missing under plain sampling, Attend-and-Excite, A&E-HRV and uniform weights.

Every method samples the same two-object captions from the same seeds (one initial latent per
(caption, seed), shared by the methods), so the methods are compared image for image: besides the
rates, ``paired`` counts the images a method recovers (plain sampling misses an object, the method
shows both) and loses (the other way round). The excited subjects are the two shape words; A&E-HRV
weighs the heads by the toy ``Shape`` HRV (``NeglectSettings.concept``). A&E runs its own schedule
(thresholds {0: 0.05, 10: 0.5, 20: 0.8}, 25 altered steps), so sampling takes 50 steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hrv.errors import HRVInputError
from hrv.toy.pairs import PairScene, all_pair_scenes, objects_in

METHODS = ("sd", "ae", "ae_hrv", "ae_uniform")
OWNER = "hrv.toy.neglect"  # the results folder's marker: a folder someone else wrote is refused


@dataclass(frozen=True)
class NeglectSettings:
    methods: tuple[str, ...] = METHODS
    scenes: int = 48  # every 288/n-th of the 288 pair scenes: all colours, shapes, backdrops
    seeds: tuple[int, ...] = (0,)
    steps: int = 50
    guidance_scale: float = 5.0
    concept: str = "Shape"  # the HRV concept of both subjects (the shape words) for ae_hrv
    batch_size: int = 8
    threads: int = 1

    def __post_init__(self) -> None:
        from hrv.multiconcept.aggregate import METHODS as KNOWN

        unknown = [m for m in self.methods if m not in KNOWN]
        if unknown or not self.methods:
            raise HRVInputError(f"toy neglect: methods {unknown or '[]'}; choose from {', '.join(KNOWN)}")
        if not 1 <= self.scenes <= len(all_pair_scenes()):
            raise HRVInputError(
                f"toy neglect: scenes must be in 1..{len(all_pair_scenes())}, got {self.scenes}"
            )
        for name in ("steps", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise HRVInputError(f"toy neglect: {name} must be >= 1, got {getattr(self, name)}")
        if not self.seeds:
            raise HRVInputError("toy neglect: give at least one seed")


def neglect_scenes(n: int) -> list[PairScene]:
    """``n`` pair scenes spread evenly over the 288 (a fixed choice, no randomness)."""
    pool = all_pair_scenes()
    return [pool[int(i)] for i in np.linspace(0, len(pool) - 1, n).round().astype(int)]


def missing(image, scene: PairScene) -> tuple[bool, bool]:
    """Whether the first and the second object of ``scene`` are missing from ``image``."""
    found = objects_in(np.asarray(image, dtype=np.float32))
    return scene.first not in found, scene.second not in found


def _rates(flags: np.ndarray) -> dict[str, float]:
    """Mean and binomial standard error of 0/1 flags."""
    n = len(flags)
    p = float(flags.mean()) if n else float("nan")
    return {"rate": p, "se": float(np.sqrt(p * (1 - p) / n)) if n else float("nan")}


def sample_method(pipe, method: str, scenes: Sequence[PairScene], hrv, s: NeglectSettings, progress: bool):
    """Images of every (scene, seed) under ``method``, scenes outer, seeds inner."""
    from hrv.multiconcept.generate import sample_jobs
    from hrv.multiconcept.sampler import ExciteSampler, ImageJob
    from hrv.multiconcept.subjects import find_subjects, token_layout
    from hrv.toy.world import IMAGE_SIZE

    sampler = ExciteSampler(
        pipe,
        method,
        hrv=hrv if method == "ae_hrv" else None,
        steps=s.steps,
        guidance_scale=s.guidance_scale,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
    )
    jobs = []
    for scene in scenes:
        caption = scene.caption()
        positions, concepts = (), ()
        if method != "sd":
            subjects = find_subjects(
                pipe.tokenizer, caption, [scene.first[1], scene.second[1]], None, s.concept, "all"
            )
            positions, concepts = token_layout(subjects)
        jobs.extend(ImageJob(caption, seed, positions, concepts) for seed in s.seeds)
    return sample_jobs(sampler, jobs, s.batch_size, progress)


def measure_neglect(
    pipe,
    hrv,
    settings: NeglectSettings | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> tuple[dict, dict[str, list]]:
    """(results, images per method). Results: per method the rates (with binomial SE) of a missing
    first / second / any object and of both shown, and the paired changes against ``sd``."""
    s = settings or NeglectSettings()
    if "ae_hrv" in s.methods:
        if hrv is None:
            raise HRVInputError("toy neglect: ae_hrv needs the toy HRVs (hrv.npz of the toy checks)")
        if s.concept not in hrv.concepts:
            raise HRVInputError(
                f"toy neglect: concept {s.concept!r} is not in the HRV file; it has {', '.join(hrv.concepts)}"
            )
    scenes = neglect_scenes(s.scenes)
    per_image = [sc for sc in scenes for _ in s.seeds]
    flags: dict[str, np.ndarray] = {}
    images: dict[str, list] = {}
    results: dict = {"settings": asdict(s), "images_per_method": len(per_image), "methods": {}}
    for method in s.methods:
        t0 = time.perf_counter()
        images[method] = sample_method(pipe, method, scenes, hrv, s, progress)
        flags[method] = np.array([missing(im, sc) for im, sc in zip(images[method], per_image, strict=True)])
        f = flags[method]
        results["methods"][method] = {
            "first_missing": _rates(f[:, 0]),
            "second_missing": _rates(f[:, 1]),
            "any_missing": _rates(f.any(axis=1)),
            "both_missing": _rates(f.all(axis=1)),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        r = results["methods"][method]
        log(
            f"    {method:10s} first missing {r['first_missing']['rate']:.3f}  second {r['second_missing']['rate']:.3f}"
            f"  any {r['any_missing']['rate']:.3f} +- {r['any_missing']['se']:.3f}  ({r['seconds']:.0f}s)"
        )
    if "sd" in flags:
        base = flags["sd"].any(axis=1)
        for method in s.methods:
            if method == "sd":
                continue
            other = flags[method].any(axis=1)
            results["methods"][method]["paired_vs_sd"] = {
                "recovered": int((base & ~other).sum()),  # sd misses an object, the method shows both
                "lost": int((~base & other).sum()),
            }
    return results, images


def write_neglect(
    results: dict, images: dict[str, list], scenes: Sequence[PairScene], out: str | Path
) -> Path:
    """``neglect.json``, ``neglect.csv``, ``neglect.png`` (bars) and ``grid.png`` into a fresh folder."""
    import pandas as pd

    from hrv.io import atomic_dir
    from hrv.toy.plots import neglect_bars, neglect_grid

    with atomic_dir(out, owner=OWNER) as tmp:
        (tmp / "neglect.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        rows = [
            {"method": m, "what": what, "rate": v["rate"], "se": v["se"], "n": results["images_per_method"]}
            for m, r in results["methods"].items()
            for what, v in r.items()
            if isinstance(v, dict) and "rate" in v
        ]
        pd.DataFrame(rows).to_csv(tmp / "neglect.csv", index=False)
        neglect_bars(results, tmp / "neglect.png")
        neglect_grid(
            images, [sc.caption() for sc in scenes], len(results["settings"]["seeds"]), tmp / "grid.png"
        )
    return Path(out)


def run_neglect(
    model: str | Path,
    hrv_path: str | Path,
    out: str | Path,
    settings: NeglectSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure neglect on the toy model with the toy HRVs (``hrv.npz`` of the toy checks) and write
    the results folder (atomically). Returns the results."""
    import torch

    from hrv.hrvfile import load_hrv
    from hrv.io import check_replaceable
    from hrv.models import load_pipeline

    s = settings or NeglectSettings()
    check_replaceable(out, OWNER)  # before the sampling, not after it
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        hrv = load_hrv(hrv_path) if "ae_hrv" in s.methods else None
        pipe = load_pipeline(model, device="cpu", dtype="float32")
        scenes = neglect_scenes(s.scenes)
        log(
            f"[6] neglect: {len(scenes)} two-object captions x {len(s.seeds)} seed(s), {s.steps} steps,"
            f" CFG {s.guidance_scale}; subjects = the shape words, ae_hrv with the {s.concept} HRV"
        )
        results, images = measure_neglect(pipe, hrv, s, log)
        results["model"], results["hrv"] = str(model), str(hrv_path)
        write_neglect(results, images, scenes, out)
    finally:
        torch.set_num_threads(threads)
    return results
