"""The pipeline's steps as plain functions: called by the workflow scripts and by the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hrv.concepts import read_concepts
from hrv.errors import HRVInputError
from hrv.heads import HeadRegistry, to_short_names
from hrv.hrvfile import HRVSet, load_hrv
from hrv.io import atomic_path, write_npz, write_text_atomic


def run_shard(
    model: str,
    concepts_csv: str | Path,
    prompts: Sequence[tuple[int, str]],
    out: str | Path,
    *,
    seed: int,
    sampling: dict[str, Any],
    batch_size: int = 1,
    keep_sot: bool = True,
    batch_invariant: bool | str = True,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> Path:
    """Accumulate the votes of one shard's prompts and write them (atomically) to ``out``."""
    from hrv.accumulate import accumulate
    from hrv.models import load_pipeline

    if not prompts:
        raise HRVInputError("this shard has no prompts")
    concepts = read_concepts(concepts_csv)
    pipe = load_pipeline(model, device=device, dtype=dtype)
    registry = HeadRegistry.from_unet(pipe.unet)
    indices = [int(i) for i, _ in prompts]
    by_index = dict((int(i), str(p)) for i, p in prompts)
    counts = accumulate(
        pipe,
        concepts,
        by_index,
        indices,
        seed=seed,
        steps=int(sampling["steps"]),
        guidance_scale=float(sampling["guidance_scale"]),
        height=int(sampling["height"]),
        width=int(sampling["width"]),
        batch_size=batch_size,
        keep_sot=keep_sot,
        batch_invariant=batch_invariant,
        progress=progress,
        desc=f"shard {Path(out).stem}",
    )
    meta = {
        "model": str(model),
        "scheduler": type(pipe.scheduler).__name__,
        "prompts_sha256": prompts_hash(by_index),
        "seed": seed,
        "sampling": dict(sampling),
        "keep_sot": keep_sot,
        "batch_size": batch_size,
        "batch_invariant": batch_invariant,
        "dtype": str(pipe.unet.dtype),
        "device": str(pipe.device),
    }
    write_npz(
        out,
        counts=counts,
        indices=np.array(indices, dtype=np.int64),
        concepts=np.array(concepts.names, dtype=str),
        heads=np.array(registry.names(), dtype=str),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    return Path(out)


def prompts_hash(prompts: dict[int, str]) -> str:
    """sha256 of a shard's prompts with their indices: shards of other prompt files differ."""
    import hashlib

    text = json.dumps(sorted((int(i), str(p)) for i, p in prompts.items()), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# shard settings that must agree for their counts to be summed (the device may differ: a cluster's
# shards can run on different machines; dtype and batching change rounding, so they must agree too)
_SHARD_SETTINGS = (
    "model",
    "scheduler",
    "seed",
    "sampling",
    "keep_sot",
    "dtype",
    "batch_size",
    "batch_invariant",
)


def _check_prompts(shards: dict[str, tuple[list[int], dict]], prompts: Sequence[str]) -> None:
    """Each shard was computed from these prompts (its hash), and together they cover all of them."""
    for path, (indices, meta) in shards.items():
        outside = [i for i in indices if not 0 <= i < len(prompts)]
        if outside:
            raise HRVInputError(
                f"shard {path} holds prompt indices up to {max(outside)}, but the prompt files give"
                f" {len(prompts)} prompts: it was computed from other prompt files; re-run it"
            )
        recorded = meta.get("prompts_sha256")
        if recorded is None:
            raise HRVInputError(
                f"shard {path} records no hash of its prompts (written by an older hrv); re-run it"
            )
        if recorded != prompts_hash({i: prompts[i] for i in indices}):
            raise HRVInputError(
                f"shard {path} (prompts {min(indices)}-{max(indices)}) was computed from other prompts"
                " than the prompt files give; re-run that shard with these prompt files"
            )
    covered = {i for indices, _ in shards.values() for i in indices}
    missing = [i for i in range(len(prompts)) if i not in covered]
    if missing:
        raise HRVInputError(
            f"the shards leave out prompt indices {_ranges(missing)} ({len(missing)} of {len(prompts)} prompts):"
            " a shard is missing; run it and merge all shards"
        )


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (the first few runs)."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:5])
    return text + (", ..." if len(runs) > 5 else "")


def merge_shards(
    shard_paths: Sequence[str | Path],
    concepts_csv: str | Path | None = None,
    prompts: Sequence[str] | None = None,
) -> HRVSet:
    """Sum shard counts after checking they fit together (same concepts, heads, evaluations).

    ``prompts``: the whole prompt list the shards were cut from; then each shard's recorded prompt
    hash must match it and the shards must cover every prompt (no shard missing)."""
    if not shard_paths:
        raise HRVInputError("no shard files to merge")
    total, seen, ref = None, {}, None
    by_shard: dict[str, tuple[list[int], dict]] = {}
    for path in shard_paths:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                counts, indices = z["counts"], z["indices"]
                concepts, heads, meta = list(z["concepts"]), list(z["heads"]), json.loads(str(z["meta"]))
        except Exception as err:
            raise HRVInputError(
                f"shard {path} is unreadable or incomplete ({err}); delete it and re-run that shard"
            ) from err
        if ref is None:
            ref = (concepts, heads, counts.shape, meta)
            total = np.zeros_like(counts, dtype=np.int64)
        elif (concepts, heads, counts.shape) != ref[:3]:
            raise HRVInputError(
                f"shard {path} does not fit the others (concepts, heads or number of evaluations differ); re-run all shards"
            )
        else:
            for key in _SHARD_SETTINGS:
                if meta.get(key) != ref[3].get(key):
                    raise HRVInputError(
                        f"shard {path} was computed with {key} = {meta.get(key)!r}, the first shard with"
                        f" {ref[3].get(key)!r}; re-run the shards with one setting"
                    )
        by_shard[str(path)] = (indices.tolist(), meta)
        for i in indices.tolist():
            if i in seen:
                raise HRVInputError(f"prompt {i} is in both {seen[i]} and {path}; shards must not overlap")
            seen[i] = path
        total += counts
    assert ref is not None and total is not None
    if prompts is not None:
        _check_prompts(by_shard, prompts)
    missing = sorted(set(range(max(seen) + 1)) - set(seen))
    if missing:
        raise HRVInputError(
            f"the shards leave out prompt indices {_ranges(missing)}: a shard is missing; merge all shards"
        )
    concepts, heads, _, meta = ref
    if concepts_csv is not None:
        expected = list(read_concepts(concepts_csv).names)
        if expected != concepts:
            raise HRVInputError(
                f"shards were computed for other concepts than {concepts_csv}; re-run the shards"
            )
    meta = dict(meta, n_prompts=len(seen), n_evaluations=int(total.shape[0]))
    return HRVSet.from_counts(total, concepts, heads, meta)


def write_tables(hrv: HRVSet, csv_path: str | Path, ranking_path: str | Path) -> None:
    """``hrv.csv`` (concept x head) and ``head_ranking.csv`` (per concept, heads by HRV, rank 1 first)."""
    import pandas as pd

    table = pd.DataFrame(hrv.hrv, index=pd.Index(hrv.concepts, name="concept"), columns=hrv.heads)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, float_format="%.6g")
    rows = []
    for c, name in enumerate(hrv.concepts):
        order = np.argsort(-hrv.hrv[c], kind="stable")
        rows.extend(
            {"concept": name, "rank": r + 1, "head": hrv.heads[h], "hrv": float(hrv.hrv[c, h])}
            for r, h in enumerate(order)
        )
    with atomic_path(ranking_path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")


def merge(
    shard_paths: Sequence[str | Path],
    out_npz: str | Path,
    out_csv: str | Path,
    out_ranking: str | Path,
    concepts_csv: str | Path | None = None,
    prompts: Sequence[str] | None = None,
) -> HRVSet:
    hrv = merge_shards(shard_paths, concepts_csv, prompts)
    hrv.save(out_npz)
    write_tables(hrv, out_csv, out_ranking)
    return hrv


OFFICIAL = {
    "sd14": ("hrv_sd14_official.npy", "head_index_sd14_official.npy", "hrv_sd14_per_timestep_official.npy"),
    "sdxl": ("hrv_sdxl_official.npy", "head_index_sdxl_official.npy", None),
}


def import_official(
    which: str,
    out: str | Path,
    reference_dir: str | Path = "resources/reference",
    concepts_csv: str | Path = "resources/concepts/concepts_34x10.csv",
) -> HRVSet:
    """Convert the released HRVs into ``hrv.npz`` with this project's head names and head order.

    Columns are re-ordered by (section, layer, head) so they follow the registry's execution
    order whatever order the released file used. Counts were not released: ``counts`` is empty.
    """
    from hrv.config import shipped

    if which not in OFFICIAL:
        raise HRVInputError(f"unknown official HRV set {which!r}; choose one of {', '.join(OFFICIAL)}")
    ref, concepts_csv = shipped(reference_dir), shipped(concepts_csv)  # the defaults from any folder
    hrv_file, head_file, per_t_file = OFFICIAL[which]
    for f in filter(None, (hrv_file, head_file)):
        if not (ref / f).is_file():
            raise HRVInputError(f"{ref / f} is missing; copy the released reference files into {ref}")
    values = np.load(ref / hrv_file).astype(np.float32)
    heads = to_short_names([str(h) for h in np.load(ref / head_file)])
    concepts = list(read_concepts(concepts_csv).names)
    if values.shape != (len(concepts), len(heads)):
        raise HRVInputError(
            f"{ref / hrv_file} has shape {values.shape}, expected ({len(concepts)}, {len(heads)})"
        )
    section_rank = {"down": 0, "mid": 1, "up": 2}

    def key(name: str) -> tuple[int, int, int]:
        section, rest = name.split(".", 1)
        layer, head = rest.split("/h")
        return section_rank[section], int(layer), int(head)

    order = sorted(range(len(heads)), key=lambda i: key(heads[i]))
    per_t = np.zeros((0, *values.shape), np.float32)
    if per_t_file and (ref / per_t_file).is_file():
        per_t = np.load(ref / per_t_file).astype(np.float32)[:, :, order]
    hrv = HRVSet(
        values[:, order],
        concepts,
        [heads[i] for i in order],
        per_t,
        np.zeros((0, *values.shape), np.int64),
        {"source": f"official {which} HRVs released with the paper", "file": hrv_file},
    )
    hrv.save(out)
    return hrv


def check_hrv_file(path: str | Path) -> HRVSet:
    return load_hrv(path)


def write_json(path: str | Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
