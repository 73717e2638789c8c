"""Helpers the Snakefile calls at parse time (kept here so rules stay thin and testable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hrv import __version__
from hrv.prompts import read_prompts, shard_ranges


def shard_plan(hrv_cfg: dict[str, Any], root: str | Path = ".") -> list[list[tuple[int, str]]]:
    """The prompts of each shard as (prompt index, text) pairs, from the config's hrv sub-tree."""
    root = Path(root)
    prompts = read_prompts([root / p for p in hrv_cfg["prompts"]], hrv_cfg.get("max_prompts"))
    ranges = shard_ranges(
        len(prompts), hrv_cfg.get("shards"), hrv_cfg.get("shard_size"), hrv_cfg.get("batch_size", 1)
    )
    return [[(i, prompts[i]) for i in r] for r in ranges]


def source_hash(package: str | Path | None = None) -> str:
    """sha256 (12 hex digits) of the package's Python sources, in path order."""
    import hashlib

    package = Path(package) if package else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_version() -> str:
    """``<package version>+<source hash>``: goes into every rule's params, so a new release or an
    edit of the science code marks results stale (``--list-changes params`` lists them; add
    ``--rerun-triggers mtime input`` to keep results across code edits on purpose)."""
    return f"{__version__}+{source_hash()}"
