"""The multi-concept benchmark in the workflow: jobs, their images, their scores.

One sampling job per (set, method, seed, chunk of prompts): a chunk is the prompts
``[k * n, (k + 1) * n)`` of the set (n = ``prompts_per_job``, null = the whole set), sampled in
batches of ``batch_size``. Adding a seed, a method or a set plans only new jobs; raising
``max_prompts`` re-runs at most the last chunk. A job writes
``<job>/<prompt>/<seed>.png`` (A&E's layout) and ``manifest.csv``; its scoring job writes one row
per image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hrv.errors import HRVInputError
from hrv.io import atomic_dir, atomic_path
from hrv.multiconcept.subjects import BENCHMARK_SETS, read_prompt_set


@dataclass(frozen=True)
class BenchJob:
    set: str
    method: str
    seed: int
    start: int  # first prompt index of the chunk
    end: int  # one past the last

    @property
    def chunk(self) -> str:
        return f"p{self.start:03d}-{self.end:03d}"

    def path(self, out: str) -> str:
        return f"{out}/multiconcept/{self.set}/{self.method}/seed{self.seed}/{self.chunk}"


def parse_chunk(label: str) -> tuple[int, int]:
    start, end = label.removeprefix("p").split("-")
    return int(start), int(end)


def load_sets(names: Sequence[str], max_prompts: int | None, root: str | Path = ".") -> dict[str, list[str]]:
    """Prompts of each named set (``type1``, ``type2``), the first ``max_prompts`` of each."""
    out = {}
    for name in names:
        if name not in BENCHMARK_SETS:
            raise HRVInputError(
                f"multiconcept.sets: unknown set {name!r}; choose from {', '.join(BENCHMARK_SETS)}"
            )
        prompts = read_prompt_set(Path(root) / BENCHMARK_SETS[name])
        out[name] = prompts[:max_prompts] if max_prompts else prompts
    return out


def plan_jobs(
    sets: dict[str, list[str]], methods: Sequence[str], seeds: Sequence[int], per_job: int | None
) -> list[BenchJob]:
    """Every (set, method, seed, chunk of ``per_job`` prompts; None = all) job, in that order."""
    jobs = []
    for name, prompts in sets.items():
        size = per_job or len(prompts)
        for method in methods:
            for seed in seeds:
                for start in range(0, len(prompts), size):
                    jobs.append(BenchJob(name, method, seed, start, min(start + size, len(prompts))))
    return jobs


def hrv_input(method: str, source: str | None, out: str) -> dict[str, str]:
    """The HRV file input of a sampling job: only ``ae_hrv`` has one (``multiconcept.hrv``: null =
    the run's own, ``sd14`` = the released HRVs imported by a rule, else a file)."""
    from hrv.polysemy import hrv_source

    if method != "ae_hrv":
        return {}
    return {"hrv": hrv_source(source, f"{out}/hrv/hrv.npz", f"{out}/hrv/official", key="multiconcept.hrv")}


def grid_job_dirs(jobs: Sequence[BenchJob], out: str, set_name: str, seed: int, n_prompts: int) -> list[str]:
    """Job folders of ``seed`` that hold the set's first ``n_prompts`` prompts, every method."""
    return [j.path(out) for j in jobs if j.set == set_name and j.seed == seed and j.start < n_prompts]


def run_job(
    model: str,
    hrv_path: str | None,
    prompts: Sequence[str],
    method: str,
    seed: int,
    out: str | Path,
    *,
    settings: dict[str, Any],
    sampling: dict[str, Any],
    concept: str | Sequence[str] = "Animals",
    subword: str = "all",
    batch_size: int = 4,
    device: str = "auto",
    dtype: str = "float32",
) -> Path:
    """Sample one job's prompts with ``method`` in batches of ``batch_size``; write images and
    ``manifest.csv``."""
    from hrv.hrvfile import load_hrv
    from hrv.models import load_pipeline
    from hrv.multiconcept.generate import sample_jobs
    from hrv.multiconcept.sampler import ExciteSampler, ExciteSettings, ImageJob
    from hrv.multiconcept.subjects import find_subjects, token_layout

    s = dict(settings)
    s["thresholds"] = {int(k): float(v) for k, v in (s.get("thresholds") or {}).items()}
    excite_settings = ExciteSettings(**s)
    hrv = load_hrv(hrv_path) if method == "ae_hrv" else None
    pipe = load_pipeline(model, device=device, dtype=dtype)
    jobs = []
    for prompt in prompts:
        positions, concepts = token_layout(
            find_subjects(pipe.tokenizer, prompt, concepts=concept, subword=subword)
        )
        jobs.append(ImageJob(prompt, seed, positions, concepts))
    sampler = ExciteSampler(
        pipe,
        method,
        hrv=hrv,
        settings=excite_settings,
        steps=int(sampling["steps"]),
        guidance_scale=float(sampling["guidance_scale"]),
        height=sampling.get("height"),
        width=sampling.get("width"),
    )
    images = sample_jobs(sampler, jobs, batch_size, progress=False)
    rows = []
    with atomic_dir(out) as tmp:
        for job, image in zip(jobs, images, strict=True):
            rel = Path(job.prompt) / f"{seed}.png"
            (tmp / job.prompt).mkdir(parents=True, exist_ok=True)
            image.save(tmp / rel, format="PNG")
            trace = [e for e in sampler.trace if e["prompt"] == job.prompt]
            rows.append(
                {
                    "prompt": job.prompt,
                    "seed": seed,
                    "method": method,
                    "image": str(rel),
                    "positions": " ".join(map(str, job.positions)),
                    "first_loss": trace[0]["loss"] if trace else "",
                    "refinement_steps": sum(e["refinement_steps"] for e in trace),
                }
            )
        pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)
        meta = {
            "sampling": sampling,
            "settings": {**s, "thresholds": {str(k): v for k, v in s["thresholds"].items()}},
        }
        (tmp / "job.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def score_job(
    job_dir: str | Path,
    out_csv: str | Path,
    *,
    set_name: str,
    clip: dict[str, Any],
    blip: str | None,
    device: str = "auto",
) -> pd.DataFrame:
    """A&E's metrics of every image of a sampling job, one row per image."""
    from PIL import Image

    from hrv.clip import load_clip
    from hrv.multiconcept.metrics import load_blip, score_prompt

    job_dir = Path(job_dir)
    manifest = pd.read_csv(job_dir / "manifest.csv", keep_default_na=False)
    scorer = load_clip(clip.get("model", "tiny"), clip.get("pretrained"), device=device)
    captioner = load_blip(blip, device=device) if blip else None
    rows = []
    for prompt, group in manifest.groupby("prompt", sort=False):
        images = []
        for rel in group["image"]:
            with Image.open(job_dir / rel) as im:
                images.append(im.convert("RGB"))
        scores = score_prompt(scorer, prompt, images, captioner, batch_size=int(clip.get("batch_size", 32)))
        for k, (_, row) in enumerate(group.iterrows()):
            rows.append(
                {
                    "set": set_name,
                    "method": row["method"],
                    "prompt": prompt,
                    "seed": int(row["seed"]),
                    "full_prompt": scores.full[k],
                    "first_object": scores.first[k],
                    "second_object": scores.second[k],
                    "min_object": scores.min_object[k],
                    "blip": scores.blip[k] if scores.blip is not None else float("nan"),
                    "caption": scores.captions[k] if scores.captions else "",
                }
            )
    table = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    return table
