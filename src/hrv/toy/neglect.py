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
from collections.abc import Callable
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


def verdicts(image, scene: PairScene) -> tuple[str, str]:
    """Each object of ``scene`` in ``image``: ``present``, ``miscoloured`` (its shape is drawn, but
    only in another colour: the caption's colours bound to the wrong shapes) or ``absent`` (no
    region has its shape)."""
    found = objects_in(np.asarray(image, dtype=np.float32))
    shapes = {shape for _, shape in found}

    def verdict(obj: tuple[str, str]) -> str:
        if obj in found:
            return "present"
        return "miscoloured" if obj[1] in shapes else "absent"

    return verdict(scene.first), verdict(scene.second)


def _rates(flags: np.ndarray) -> dict[str, float]:
    """Mean and binomial standard error of 0/1 flags."""
    n = len(flags)
    p = float(flags.mean()) if n else float("nan")
    return {"rate": p, "se": float(np.sqrt(p * (1 - p) / n)) if n else float("nan")}


def _check_hrv(hrv, s: NeglectSettings) -> None:
    if hrv is None:
        raise HRVInputError("toy neglect: ae_hrv needs the toy HRVs (hrv.npz of the toy checks)")
    if s.concept not in hrv.concepts:
        raise HRVInputError(
            f"toy neglect: concept {s.concept!r} is not in the HRV file; it has {', '.join(hrv.concepts)}"
        )


def sample_neglect(pipe, hrv, method: str, s: NeglectSettings, progress: bool = False) -> np.ndarray:
    """(N, 32, 32, 3) uint8 images of every (scene, seed) under ``method``, scenes outer, seeds inner."""
    from hrv.multiconcept.generate import sample_jobs
    from hrv.multiconcept.sampler import ExciteSampler, ImageJob
    from hrv.multiconcept.subjects import find_subjects, token_layout
    from hrv.toy.world import IMAGE_SIZE

    if method == "ae_hrv":
        _check_hrv(hrv, s)
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
    for scene in neglect_scenes(s.scenes):
        caption = scene.caption()
        positions, concepts = (), ()
        if method != "sd":
            subjects = find_subjects(
                pipe.tokenizer, caption, [scene.first[1], scene.second[1]], None, s.concept, "all"
            )
            positions, concepts = token_layout(subjects)
        jobs.extend(ImageJob(caption, seed, positions, concepts) for seed in s.seeds)
    return np.stack(
        [np.asarray(im, dtype=np.uint8) for im in sample_jobs(sampler, jobs, s.batch_size, progress)]
    )


def summarize_neglect(
    images: dict[str, np.ndarray], s: NeglectSettings, log: Callable[[str], None] = print
) -> dict:
    """Per method the rates (with binomial SE) of a missing first / second / any object and of both
    missing, and the images it recovers or loses against ``sd`` (same latents)."""
    per_image = [sc for sc in neglect_scenes(s.scenes) for _ in s.seeds]
    results: dict = {"settings": asdict(s), "images_per_method": len(per_image), "methods": {}}
    flags: dict[str, np.ndarray] = {}
    for method, ims in images.items():
        if len(ims) != len(per_image):
            raise HRVInputError(
                f"toy neglect: {method} has {len(ims)} images, the settings give {len(per_image)}"
                " (scenes x seeds): re-run its sampling with these settings"
            )
        v = np.array([verdicts(im, sc) for im, sc in zip(ims, per_image, strict=True)])
        f = flags[method] = v != "present"
        r = results["methods"][method] = {
            "first_missing": _rates(f[:, 0]),
            "second_missing": _rates(f[:, 1]),
            "any_missing": _rates(f.any(axis=1)),
            "both_missing": _rates(f.all(axis=1)),
            # per object (2 per image): why it is missing
            "object_absent": _rates((v == "absent").ravel()),
            "object_miscoloured": _rates((v == "miscoloured").ravel()),
        }
        log(
            f"    {method:10s} first missing {r['first_missing']['rate']:.3f}  second {r['second_missing']['rate']:.3f}"
            f"  either {r['any_missing']['rate']:.3f} +- {r['any_missing']['se']:.3f};  of the objects"
            f" {r['object_absent']['rate']:.3f} absent, {r['object_miscoloured']['rate']:.3f} drawn in another colour"
        )
    if "sd" in flags:
        base = flags["sd"].any(axis=1)
        for method, f in flags.items():
            if method == "sd":
                continue
            other = f.any(axis=1)
            paired = results["methods"][method]["paired_vs_sd"] = {
                "recovered": int((base & ~other).sum()),  # sd misses an object, the method shows both
                "lost": int((~base & other).sum()),  # sd shows both, the method misses one
            }
            log(f"    {method:10s} against sd: recovers {paired['recovered']}, loses {paired['lost']}")
    return results


def measure_neglect(
    pipe,
    hrv,
    settings: NeglectSettings | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Sample every method of the settings and summarise: (results, images per method)."""
    s = settings or NeglectSettings()
    if "ae_hrv" in s.methods:
        _check_hrv(hrv, s)
    images = {}
    for method in s.methods:
        t0 = time.perf_counter()
        images[method] = sample_neglect(pipe, hrv, method, s, progress)
        log(f"    {method}: {len(images[method])} images ({time.perf_counter() - t0:.0f}s)")
    return summarize_neglect(images, s, log), images


def write_neglect(results: dict, images: dict[str, np.ndarray], out: str | Path) -> Path:
    """``neglect.json``, ``neglect.csv``, ``neglect.png`` (bars) and ``grid.png`` into a fresh folder."""
    import pandas as pd

    from hrv.io import atomic_dir
    from hrv.toy.plots import neglect_bars, neglect_grid

    s = results["settings"]
    captions = [sc.caption() for sc in neglect_scenes(s["scenes"])]
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
        neglect_grid(images, captions, len(s["seeds"]), tmp / "grid.png")
    return Path(out)


def _prepared(model: str | Path, hrv_path: str | Path | None):
    from hrv.hrvfile import load_hrv
    from hrv.models import load_pipeline

    hrv = load_hrv(hrv_path) if hrv_path is not None else None
    return load_pipeline(model, device="cpu", dtype="float32"), hrv


def run_neglect_method(
    model: str | Path,
    hrv_path: str | Path | None,
    method: str,
    out: str | Path,
    settings: NeglectSettings | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """One method's images, with the settings that made them, as ``out`` (.npz; a workflow job)."""
    import torch

    from hrv.io import write_npz

    s = settings or NeglectSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        pipe, hrv = _prepared(model, hrv_path if method == "ae_hrv" else None)
        t0 = time.perf_counter()
        images = sample_neglect(pipe, hrv, method, s, progress=True)
        log(f"toy neglect, {method}: {len(images)} images, {s.steps} steps ({time.perf_counter() - t0:.0f}s)")
    finally:
        torch.set_num_threads(threads)
    meta = {"method": method, "settings": asdict(s), "model": str(model), "hrv": str(hrv_path)}
    return write_npz(out, images=images, meta=np.array(json.dumps(meta)))


def run_neglect_table(
    npz: dict[str, str | Path], out: str | Path, settings: NeglectSettings, log: Callable[[str], None] = print
) -> dict:
    """Summarise the methods' image files (``run_neglect_method``) into the results folder ``out``.
    Files made with other settings (scenes, seeds, steps, guidance, concept) are refused."""
    from hrv.io import check_replaceable

    check_replaceable(out, OWNER)
    compared = ("scenes", "seeds", "steps", "guidance_scale", "concept")
    want = {k: v for k, v in asdict(settings).items() if k in compared}
    images, sources = {}, {}
    for method, path in npz.items():
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            images[method] = data["images"]
        sources[method] = {"model": meta["model"], "hrv": meta["hrv"]}
        got = {k: v for k, v in meta["settings"].items() if k in compared}
        got["seeds"] = tuple(got["seeds"])
        if meta["method"] != method or got != want:
            raise HRVInputError(
                f"{path}: images of {meta['method']} with {got}, expected {method} with {want};"
                " re-run its sampling (delete the file or let Snakemake re-run the job)"
            )
    log(
        f"[6] neglect: {want['scenes']} two-object captions x {len(want['seeds'])} seed(s), {want['steps']} steps"
    )
    results = summarize_neglect(images, settings, log)
    results["sources"] = sources
    write_neglect(results, images, out)
    return results


def run_neglect(
    model: str | Path,
    hrv_path: str | Path | None,
    out: str | Path,
    settings: NeglectSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure neglect on the toy model with the toy HRVs (``hrv.npz`` of the toy checks) and write
    the results folder ``out`` (atomically; a folder another command wrote is refused). In one
    process; the workflow runs one job per method instead (``run_neglect_method``)."""
    import torch

    from hrv.io import check_replaceable

    s = settings or NeglectSettings()
    check_replaceable(out, OWNER)  # before the sampling, not after it
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        pipe, hrv = _prepared(model, hrv_path if "ae_hrv" in s.methods else None)
        results, images = measure_neglect(pipe, hrv, s, log)
    finally:
        torch.set_num_threads(threads)
    results["model"], results["hrv"] = str(model), str(hrv_path)
    write_neglect(results, images, out)
    return results


def settings_from_config(neglect: dict, methods: list[str], threads: int = 1) -> NeglectSettings:
    """``NeglectSettings`` from the workflow's ``toy.neglect`` block (with ``guidance_scale`` added)."""
    return NeglectSettings(
        methods=tuple(methods),
        scenes=neglect["scenes"],
        seeds=tuple(neglect["seeds"]),
        steps=neglect["steps"],
        guidance_scale=neglect["guidance_scale"],
        concept=neglect["concept"],
        batch_size=neglect["batch_size"],
        threads=threads,
    )
