"""Normalising votes into HRVs, and the ``hrv.npz`` file format (a contract later stages rely on).

``hrv.npz`` holds ``hrv`` (C x H float32, each defined row sums to H), ``hrv_per_timestep``
(T x C x H float32), ``counts`` (T x C x H int64; T = 0 for imported HRVs), ``concepts`` (C
strings, CSV order), ``heads`` (H short head names, head order) and ``meta`` (a JSON string).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrv.errors import HRVInputError
from hrv.io import write_npz


def normalize(counts: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """HRVs from counts (C, H): p(c|h) per head, then each concept's row scaled to sum H.

    Returns the (C, H) float32 HRVs and the indices of concepts that no head voted for; their
    rows are zeros (documented value) instead of NaN.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_heads = counts.shape[1]
    per_head = counts.sum(axis=0, keepdims=True)
    p = np.divide(counts, per_head, out=np.zeros_like(counts), where=per_head > 0)
    row = p.sum(axis=1, keepdims=True)
    hrv = np.divide(n_heads * p, row, out=np.zeros_like(p), where=row > 0)
    return hrv.astype(np.float32), [int(c) for c in np.flatnonzero(row[:, 0] == 0)]


@dataclass
class HRVSet:
    hrv: np.ndarray
    concepts: list[str]
    heads: list[str]
    hrv_per_timestep: np.ndarray
    counts: np.ndarray
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_counts(
        cls, counts: np.ndarray, concepts: list[str], heads: list[str], meta: dict | None = None
    ) -> HRVSet:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 3 or counts.shape[1:] != (len(concepts), len(heads)):
            raise HRVInputError(
                f"counts have shape {counts.shape}, expected (T, {len(concepts)} concepts, {len(heads)} heads)"
            )
        hrv, undefined = normalize(counts.sum(axis=0))
        if undefined:
            names = ", ".join(concepts[c] for c in undefined)
            warnings.warn(
                f"no head voted for concept(s) {names}: their HRVs are written as zeros", stacklevel=2
            )
        per_t = (
            np.stack([normalize(counts[t])[0] for t in range(counts.shape[0])])
            if len(counts)
            else np.zeros((0, len(concepts), len(heads)), np.float32)
        )
        meta = dict(meta or {})
        meta["undefined_concepts"] = [concepts[c] for c in undefined]
        return cls(hrv, list(concepts), list(heads), per_t.astype(np.float32), counts, meta)

    def index(self, concept: str) -> int:
        lowered = [c.lower() for c in self.concepts]
        if concept.lower() not in lowered:
            raise HRVInputError(f"unknown concept {concept!r}; this HRV file has: {', '.join(self.concepts)}")
        return lowered.index(concept.lower())

    def vector(self, concept: str) -> np.ndarray:
        return self.hrv[self.index(concept)]

    def save(self, path: str | Path) -> None:
        write_npz(
            path,
            hrv=self.hrv.astype(np.float32),
            hrv_per_timestep=self.hrv_per_timestep.astype(np.float32),
            counts=self.counts.astype(np.int64),
            concepts=np.array(self.concepts, dtype=str),
            heads=np.array(self.heads, dtype=str),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )

    def check_heads(self, heads: list[str]) -> None:
        """Raise a clear error if this HRV's head names are not the model's (same order)."""
        if list(heads) != self.heads:
            n_diff = sum(a != b for a, b in zip(heads, self.heads, strict=False))
            raise HRVInputError(
                f"the HRVs were computed for a model with {len(self.heads)} heads ({self.heads[0]} ... {self.heads[-1]}),"
                f" but this model has {len(heads)} heads ({heads[0]} ... {heads[-1]}; {n_diff} names differ)."
                " Use HRVs of this model: run the accumulation on it or import the matching official file."
            )


def load_hrv(path: str | Path) -> HRVSet:
    """Load and validate an ``hrv.npz``; a wrong-shaped or incomplete file gets a clear error."""
    path = Path(path)
    if not path.is_file():
        raise HRVInputError(f"HRV file {path} does not exist; run the accumulation or `hrv import-official`")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as err:  # zip or format errors
        raise HRVInputError(f"HRV file {path} cannot be read ({err}); re-create it") from err
    missing = [k for k in ("hrv", "concepts", "heads") if k not in data]
    if missing:
        raise HRVInputError(f"HRV file {path} lacks array(s) {', '.join(missing)}; re-create it")
    hrv, concepts, heads = data["hrv"], [str(c) for c in data["concepts"]], [str(h) for h in data["heads"]]
    if hrv.ndim != 2 or hrv.shape != (len(concepts), len(heads)):
        raise HRVInputError(
            f"HRV file {path}: 'hrv' has shape {hrv.shape}, expected ({len(concepts)} concepts, {len(heads)} heads)"
        )
    if not np.isfinite(hrv).all():
        raise HRVInputError(f"HRV file {path}: 'hrv' holds NaN or infinite values; re-create it")
    empty = np.zeros((0, *hrv.shape), np.float32)
    meta = json.loads(str(data["meta"])) if "meta" in data else {}
    return HRVSet(
        hrv.astype(np.float32),
        concepts,
        heads,
        data.get("hrv_per_timestep", empty),
        data.get("counts", empty.astype(np.int64)),
        meta,
    )
