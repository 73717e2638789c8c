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
    ranges = shard_ranges(len(prompts), hrv_cfg.get("shards"), hrv_cfg.get("shard_size"))
    return [[(i, prompts[i]) for i in r] for r in ranges]


def code_version() -> str:
    """Goes into every rule's params, so a new package version marks results stale."""
    return __version__
