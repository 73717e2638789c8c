"""Atomic writes: an output appears under its final name only once it is complete.

No command deletes or overwrites what it did not write: a file output may not be a folder, and a
folder output replaces an existing folder only if it is empty or holds a previous output of the
same command (its ``.hrv-output`` marker names the command).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hrv.errors import HRVInputError

MARKER = ".hrv-output"  # in every folder atomic_dir writes: which command wrote it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise HRVInputError(f"output {path} is a folder; give the path of a file to write")
    if path.parent.exists() and not path.parent.is_dir():
        raise HRVInputError(f"output {path}: {path.parent} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_replaceable(folder: str | Path, owner: str) -> None:
    """Refuse to replace ``folder`` unless it is absent, empty, or a previous output of ``owner``."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise HRVInputError(f"output folder {folder} is a file; give a new or empty folder")
    if not any(folder.iterdir()):
        return
    marker = folder / MARKER
    written_by = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
    if written_by != owner:
        raise HRVInputError(
            f"output folder {folder} is not empty and is not an earlier output of `{owner}`; give a new"
            " or empty folder (or move that one away yourself): nothing in it was changed"
        )


@contextlib.contextmanager
def atomic_dir(folder: str | Path, owner: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; it replaces ``folder`` only if the block succeeds.

    ``owner`` names the command (e.g. ``hrv build-tiny``); it is written into the folder's marker,
    and an existing non-empty ``folder`` that another command (or a person) wrote is refused.
    ``None``: a folder only the workflow writes (its rule's output, which Snakemake removes
    before the job), replaced as it is. A folder the user names (``--out``) must give ``owner``."""
    folder = Path(folder)
    if owner is not None:
        check_replaceable(folder, owner)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; outputs get the usual mode
        if owner is not None:
            (tmp / MARKER).write_text(owner + "\n", encoding="utf-8")
            check_replaceable(folder, owner)  # again: it may have appeared meanwhile
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_npz(path: str | Path, **arrays) -> Path:
    """``numpy.savez`` to exactly ``path`` (numpy appends ``.npz`` to a name without it), atomically."""
    import numpy as np

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
