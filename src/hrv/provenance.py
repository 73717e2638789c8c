"""The reproducibility record of a run: what produced ``results/<run>``, in one JSON file.

It holds the resolved config, the versions of the packages that compute results, the git commit
(and whether the checkout had uncommitted changes), the model's identity (sha256 of every file of
a local model folder; the hub id and cached revision otherwise) and the device and dtype that the
accumulation jobs really used (read from their shard files, since on a cluster they ran elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hrv.io import write_text_atomic

PACKAGES = (
    "hrv",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "open_clip_torch",
    "safetensors",
    "numpy",
    "pandas",
    "matplotlib",
    "hydra-core",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(folder: str | Path) -> dict[str, Any]:
    """Commit of the checkout holding ``folder`` and whether tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "note": f"{folder} is not in a git checkout"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_identity(source: str, root: str | Path = ".") -> dict[str, Any]:
    """A local folder: sha256 of each file; a hub id: the revision in the local cache, if any."""
    from hrv.models import model_preset

    spec = model_preset(source)
    source = spec["source"] if spec is not None else source
    local = Path(source).expanduser()
    if not local.is_absolute():
        local = Path(root) / local
    if local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.is_file())
        return {
            "source": source,
            "kind": "folder",
            "files": {p.relative_to(local).as_posix(): sha256_file(p) for p in files},
        }
    record: dict[str, Any] = {"source": source, "kind": "hub", "revision": None}
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(source, local_files_only=True))
        record["revision"] = snapshot.name  # snapshots/<commit hash>
    except Exception as err:  # not cached, or no hub client: say so rather than fail the record
        record["note"] = f"not in the local Hugging Face cache ({type(err).__name__})"
    return record


def shard_runtime(shard_files: Sequence[str | Path]) -> dict[str, list[str]]:
    """Devices and dtypes that the accumulation jobs used, from their shard files' metadata."""
    devices, dtypes = set(), set()
    for path in shard_files:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
        devices.add(meta.get("device", "unknown"))
        dtypes.add(meta.get("dtype", "unknown"))
    return {"devices": sorted(devices), "dtypes": sorted(dtypes)}


def collect(
    config: dict[str, Any],
    *,
    model_source: str,
    shard_files: Sequence[str | Path] = (),
    root: str | Path = ".",
    code_folder: str | Path | None = None,
) -> dict[str, Any]:
    """The whole record as a JSON-ready dict (model paths relative to ``root``; git of ``code_folder``)."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": config.get("run"),
        "config": config,
        "packages": package_versions(),
        "git": git_state(code_folder if code_folder is not None else root),
        "model": model_identity(model_source, root),
        "runtime": {
            "configured": {"device": config.get("device"), "dtype": config.get("dtype")},
            "accumulation": shard_runtime(shard_files),
            "platform": platform.platform(),
            "executable": sys.executable,
        },
    }


def write_provenance(path: str | Path, record: dict[str, Any]) -> Path:
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)
