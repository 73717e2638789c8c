"""Prompt lists: text files, one prompt a line, concatenated in the given order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hrv.errors import HRVInputError


def read_prompts(paths: Sequence[str | Path], max_prompts: int | None = None) -> list[str]:
    """Concatenate prompt files in order (blank lines skipped); prompt index = position in the result."""
    prompts: list[str] = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise HRVInputError(f"prompt file {p} does not exist")
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise HRVInputError(f"prompt file {p} is empty; give one prompt per line")
        prompts.extend(lines)
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    if not prompts:
        raise HRVInputError("no prompts: the prompt list is empty")
    return prompts


def shard_ranges(n_prompts: int, shards: int | None = None, shard_size: int | None = None) -> list[range]:
    """Contiguous prompt blocks, one per shard.

    With ``shard_size`` the blocks have a fixed size, so appending prompts leaves earlier shards
    unchanged (only the last and the new ones re-run). With ``shards`` the prompts are split into
    that many nearly equal blocks. Shards never exceed the number of prompts.
    """
    if n_prompts < 1:
        raise HRVInputError("no prompts to shard")
    if shard_size is not None:
        if shard_size < 1:
            raise HRVInputError(f"hrv.shard_size must be >= 1, got {shard_size}")
        return [range(s, min(s + shard_size, n_prompts)) for s in range(0, n_prompts, shard_size)]
    shards = shards or 1
    if shards < 1:
        raise HRVInputError(f"hrv.shards must be >= 1, got {shards}")
    if shards > n_prompts:
        raise HRVInputError(
            f"hrv.shards = {shards} is larger than the number of prompts ({n_prompts});"
            f" set hrv.shards to at most {n_prompts}"
        )
    base, extra = divmod(n_prompts, shards)
    out, start = [], 0
    for k in range(shards):
        size = base + (1 if k < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out
