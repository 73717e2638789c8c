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


def shard_ranges(
    n_prompts: int, shards: int | None = None, shard_size: int | None = None, batch_size: int = 1
) -> list[range]:
    """Contiguous prompt blocks, one per shard, each made of whole batches of ``batch_size``.

    With ``shard_size`` the blocks have a fixed size, so appending prompts leaves earlier shards
    unchanged (only the last and the new ones re-run). With ``shards`` the batches are split into
    that many nearly equal blocks. Either way prompt i is sampled in the batch
    ``[i // batch_size * batch_size, ... + batch_size)`` whatever the sharding: on a GPU, whose
    kernels (and rounding) can depend on the batch, the number of shards then cannot change a vote.
    """
    if n_prompts < 1:
        raise HRVInputError("no prompts to shard")
    if batch_size < 1:
        raise HRVInputError(f"hrv.batch_size must be >= 1, got {batch_size}")
    if shard_size is not None:
        if shard_size < 1:
            raise HRVInputError(f"hrv.shard_size must be >= 1, got {shard_size}")
        if shard_size % batch_size:
            raise HRVInputError(
                f"hrv.shard_size = {shard_size} is not a multiple of hrv.batch_size = {batch_size}; make it"
                f" one (e.g. {-(-shard_size // batch_size) * batch_size}) so that every prompt keeps its batch"
                " neighbours however the prompts are sharded"
            )
        return [range(s, min(s + shard_size, n_prompts)) for s in range(0, n_prompts, shard_size)]
    shards = shards or 1
    if shards < 1:
        raise HRVInputError(f"hrv.shards must be >= 1, got {shards}")
    n_batches = -(-n_prompts // batch_size)
    if shards > n_batches:
        what = f"the number of prompts ({n_prompts})"
        if batch_size > 1:
            what = f"the number of batches ({n_prompts} prompts in batches of {batch_size}: {n_batches})"
        raise HRVInputError(
            f"hrv.shards = {shards} is larger than {what}; set hrv.shards to at most {n_batches}"
        )
    base, extra = divmod(n_batches, shards)
    out, start = [], 0
    for k in range(shards):
        end = min(n_prompts, start + (base + (1 if k < extra else 0)) * batch_size)
        out.append(range(start, end))
        start = end
    return out
