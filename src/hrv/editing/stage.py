"""The editing stage of the workflow: jobs, their images and manifests, the combined manifest, grids.

Jobs (planned by ``plan_jobs``; one Snakemake job each):

- an **edit job** per (set, method, seed, chunk of pairs): renders every pair of the chunk as one
  batch ``[source, target]`` from the seed's latent with the method, and keeps the target branch:
  ``<set>/<method>/seed<s>/<chunk>/pair<NNN>.png`` and a ``manifest.csv``;
- a **source job** per (set, seed, chunk): the same batches with no edit, keeping the source
  branch: ``<set>/source/seed<s>/<chunk>/pair<NNN>.png``.

The source image is therefore produced once per comparison, by a job of its own, and every
method's manifest points to it. No method alters the source branch, so each edit job's own source
branch is the same image: every edit job records a hash of its source pixels, and the combined
manifest checks them against the source job's images (column ``source_identical``; a warning names
any job that differs). Chunks hold ``pairs_per_job`` pairs by position in the set's CSV, so adding
a method, a seed or a set plans only the new jobs.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrv.editing.scores import MANIFEST_COLUMNS, SOURCE, read_manifests, write_manifest
from hrv.editing.sets import EditPair
from hrv.errors import HRVInputError
from hrv.io import atomic_dir

JOB_MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class EditJob:
    set: str
    method: str  # a method name, or "source" for the source job
    seed: int
    start: int  # first pair index (0-based row of the set's CSV)
    stop: int  # one past the last

    @property
    def chunk(self) -> str:
        return chunk_label(self.start, self.stop)

    def path(self, out: str | Path) -> str:
        return f"{out}/editing/{self.set}/{self.method}/seed{self.seed}/{self.chunk}"


def chunk_label(start: int, stop: int) -> str:
    return f"p{start:03d}-{stop - 1:03d}"


def parse_chunk(label: str) -> tuple[int, int]:
    m = re.fullmatch(r"p(\d+)-(\d+)", label)
    if not m or int(m.group(2)) < int(m.group(1)):
        raise HRVInputError(f"{label!r} is not a chunk of pairs like 'p000-024'")
    return int(m.group(1)), int(m.group(2)) + 1


def chunk_pairs(pairs: Sequence[EditPair], label: str) -> list[dict[str, Any]]:
    """The pairs of chunk ``label`` (by position) as plain dicts."""
    start, stop = parse_chunk(label)
    return [p.to_dict() for p in pairs[start:stop]]


def chunks(n_pairs: int, pairs_per_job: int) -> list[tuple[int, int]]:
    if pairs_per_job < 1:
        raise HRVInputError(f"editing.pairs_per_job must be >= 1, got {pairs_per_job}")
    return [(a, min(a + pairs_per_job, n_pairs)) for a in range(0, n_pairs, pairs_per_job)]


def plan_jobs(
    sets: dict[str, list[EditPair]], methods: Sequence[str], seeds: Sequence[int], pairs_per_job: int
) -> list[EditJob]:
    """Every edit job and every source job (method ``source``), sets in order, then seeds, chunks."""
    from hrv.editing.methods import MODULES

    if SOURCE in methods:
        raise HRVInputError(f"'{SOURCE}' names the source images and cannot be an editing method")
    unknown = [m for m in methods if m not in MODULES]
    if unknown:
        raise HRVInputError(
            f"unknown editing method(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}"
        )
    jobs = []
    for name, pairs in sets.items():
        for seed in seeds:
            for a, b in chunks(len(pairs), pairs_per_job):
                jobs.extend(EditJob(name, m, int(seed), a, b) for m in [SOURCE, *methods])
    return jobs


def pixel_hash(image) -> str:
    """SHA-256 of an image's RGB pixels (the PNG bytes may differ with the encoder; pixels do not)."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(image.convert("RGB"))).tobytes()).hexdigest()


def render_pairs(
    pipe, prompts: Sequence[tuple[str, str]], methods: Sequence[str], seed: int, **kwargs
) -> list[dict[str, Any]]:
    """Per (source, target) prompt pair, ``{"source": image, method: image, ...}`` for one seed
    (``hrv.editing.edit_pairs``; ``kwargs`` are its settings).

    With no method (the source job) the pairs are rendered as P2P with both windows 0, i.e. with
    no edit at all, through the same batches and code as the edit jobs, and only the source
    branch is kept; no HRV is needed then.
    """
    from hrv.editing import edit_pairs

    methods = list(methods)
    if not methods:
        kwargs = {**kwargs, "hrv": None, "concept": None, "cross_steps": 0.0, "self_steps": 0.0}
    result = edit_pairs(pipe, list(prompts), methods or ["p2p"], [seed], **kwargs)
    return [{name: result.images[name][p][0] for name in ["source", *methods]} for p in range(len(prompts))]


def run_job(
    model: str,
    hrv_path: str | Path | None,
    pairs: Sequence[dict[str, Any]],
    method: str,
    seed: int,
    out_dir: str | Path,
    *,
    sampling: dict[str, Any],
    windows: dict[str, float | None] | None = None,
    token_map: str = "aligned",
    batch_size: int = 1,
    device: str = "auto",
    dtype: str = "auto",
    pipe=None,
) -> Path:
    """Render one edit job (or, for ``method == "source"``, one source job) into ``out_dir``.

    ``pairs`` are ``EditPair.to_dict()``s. The folder is filled beside its final name and renamed
    when complete. Its ``manifest.csv`` has the columns of ``MANIFEST_COLUMNS`` plus
    ``source_hash``; image paths are relative to the folder.
    """
    from hrv.hrvfile import load_hrv
    from hrv.models import load_pipeline

    pairs = [EditPair(**p) for p in pairs]
    if not pairs:
        raise HRVInputError("an editing job needs at least one pair")
    if pipe is None:
        pipe = load_pipeline(model, device=device, dtype=dtype)
    windows = dict(windows or {})
    concepts = {p.concept for p in pairs}
    if len(concepts) != 1:
        raise HRVInputError(f"one editing job edits one concept, got {sorted(concepts)}")
    kwargs = {
        "hrv": load_hrv(hrv_path) if hrv_path is not None else None,
        "concept": pairs[0].concept,
        "steps": int(sampling.get("steps", 50)),
        "height": sampling.get("height"),
        "width": sampling.get("width"),
        "guidance_scale": float(sampling.get("guidance_scale", 7.5)),
        "cross_steps": windows.get("cross"),
        "self_steps": windows.get("self"),
        "token_map": token_map,
        "batch_size": int(batch_size),
        "scheduler": sampling.get("scheduler"),  # pndm / ddim; None = the pipeline's own
    }
    methods = [] if method == SOURCE else [method]
    prompts = [(p.source_prompt, p.target_prompt) for p in pairs]
    rendered = render_pairs(pipe, prompts, methods, seed, **kwargs)
    out_dir = Path(out_dir)
    rows = []
    with atomic_dir(out_dir) as tmp:
        for pair, images in zip(pairs, rendered, strict=True):
            name = f"pair{pair.index:03d}.png"
            images["source" if method == SOURCE else method].save(tmp / name)
            source_image = (
                name
                if method == SOURCE
                else str(Path("../../..") / SOURCE / f"seed{seed}" / out_dir.name / name)
            )
            rows.append(
                {
                    **{k: v for k, v in pair.to_dict().items() if k not in ("index", "word_position")},
                    "pair": pair.index,
                    "seed": int(seed),
                    "method": method,
                    "source_image": source_image,
                    "edited_image": name,
                    "source_hash": pixel_hash(images["source"]),
                }
            )
        pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "source_hash"]).to_csv(tmp / JOB_MANIFEST, index=False)
        settings = {"method": method, "seed": int(seed), "sampling": sampling, **kwargs, "hrv": str(hrv_path)}
        (tmp / "edit.json").write_text(json.dumps(settings, indent=2, default=str) + "\n", encoding="utf-8")
    return out_dir


def combine(job_dirs: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """The stage's manifest: every edited image of the edit jobs (not the source jobs' rows), with
    ``source_identical`` (the job's source branch has the source job's pixels). Paths relative to
    ``out``'s folder."""
    from PIL import Image

    table = read_manifests([Path(d) / JOB_MANIFEST for d in job_dirs])
    table = table[table["method"] != SOURCE].reset_index(drop=True)
    hashes: dict[str, str] = {}
    same = []
    for path, expected in zip(table["source_image"], table["source_hash"], strict=True):
        if path not in hashes:
            if not Path(path).is_file():
                raise HRVInputError(f"source image {path} does not exist; run its editing source job")
            with Image.open(path) as im:
                hashes[path] = pixel_hash(im)
        same.append(hashes[path] == expected)
    table["source_identical"] = same
    differ = table[~table["source_identical"]]
    if not differ.empty:
        jobs = sorted({f"{r.set}/{r.method}/seed{r.seed}" for r in differ.itertuples()})
        warnings.warn(
            f"{len(differ)} edit(s) rendered a source branch that differs from the source image: {', '.join(jobs)}",
            stacklevel=2,
        )
    return write_manifest(table, out, extra=["source_identical"])


def set_grid(manifest: str | Path, set_name: str, out: str | Path, *, seed: int | None = None) -> Path:
    """Rows = the set's pairs, columns = the source and each method, at ``seed`` (default the first)."""
    from PIL import Image

    from hrv.generate import save_grid

    table = read_manifests([manifest])
    t = table[table["set"] == set_name]
    if t.empty:
        raise HRVInputError(f"the editing manifest {manifest} has no images of set {set_name}")
    seed = int(t["seed"].iloc[0]) if seed is None else seed
    t = t[t["seed"] == seed]
    methods = list(dict.fromkeys(t["method"]))
    pairs = sorted(set(t["pair"]))
    by = t.set_index(["pair", "method"])

    def load(p: str):
        with Image.open(p) as im:
            return im.convert("RGB")

    rows = {}
    for pair in pairs:
        first = by.loc[(pair, methods[0])]
        label = f"{pair}: {first['source_word']} -> {first['target_word']}"
        rows[label] = [
            load(first["source_image"]),
            *(load(by.loc[(pair, m), "edited_image"]) for m in methods),
        ]
    return save_grid(rows, [SOURCE, *methods], out, title=f"editing set {set_name}, seed {seed}")


def job_paths(jobs: Sequence[EditJob], out: str, *, set_name: str | None = None, seeds=None) -> list[str]:
    return [
        j.path(out)
        for j in jobs
        if (set_name is None or j.set == set_name) and (seeds is None or j.seed in seeds)
    ]
