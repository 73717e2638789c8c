"""A throw-away copy of the workflow with a tiny config, for tests that run or dry-run Snakemake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# Few prompts, few steps, small images: the whole demo DAG runs in well under a minute.
TINY_CONFIG: dict[str, Any] = {
    "sampling": {"steps": 2, "height": 64, "width": 64},
    "hrv": {
        "prompts": ["resources/prompts/imagenet_1000.txt"],
        "max_prompts": 5,
        "shard_size": 2,
        "batch_size": 2,
    },
}


def copy_workflow(dest: Path) -> Path:
    """Copy what the workflow reads (code, config, envs, profiles, small resources) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config", "envs", "profiles"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("resources/concepts", "resources/prompts", "resources/benchmarks", "resources/reference"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, dest / folder)
    return dest


def write_config(workdir: Path, overlay: dict[str, Any], name: str = "tiny.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8")
    return path


def snakemake(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir``; on failure the error shows its output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(
        [*SNAKEMAKE, *args],
        cwd=workdir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc
