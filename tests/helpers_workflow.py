"""A throw-away copy of the workflow with a tiny config, for tests that run or dry-run Snakemake."""

from __future__ import annotations

import os
import re
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
    "toy": {
        "steps": 2,
        "hrv_prompts": 4,
        "weaken_prompts": 2,
        "ks": [0, 128],
        "max_captions": 6,
        "neglect": {"scenes": 2, "steps": 2},
    },
}


def copy_workflow(dest: Path) -> Path:
    """Copy what the workflow reads (code, config, envs, profiles, small resources) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config", "envs", "profiles"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # every resource except built models (the copy builds its own)
    shutil.copytree(ROOT / "resources", dest / "resources", ignore=shutil.ignore_patterns("models"))
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


def planned_outputs(workdir: Path, configfile: str | Path, pattern: str) -> set[str]:
    """The outputs a dry run in ``workdir`` plans that match ``pattern`` (a regex, one group: the path)."""
    proc = snakemake(workdir, "-n", "--configfile", str(configfile), "--cores", "1", timeout=300)
    return set(re.findall(pattern, proc.stdout))


_RULES_PROBE = r"""
import json
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), snakefile=Path("Snakefile"), workdir=Path("."))
    w = wf._workflow
    rules = []
    for r in w.rules:
        gpu = r.resources.get("gpu")
        gpu = getattr(gpu, "value", gpu)
        rules.append(
            {
                "name": r.name,
                "conda": r.conda_env if isinstance(r.conda_env, str) else None,
                "basedir": str(r.basedir.get_path_or_uri(secret_free=True)),
                "local": r.name in w._localrules,
                "norun": bool(r.norun),
                "gpu": gpu if isinstance(gpu, (int, float)) else None,
                "params": sorted(getattr(r.params, "_names", {})),
                "resources": sorted(r.resources.keys()),
            }
        )
    print("@@RULES@@" + json.dumps(rules))
"""


def workflow_rules(workdir: Path = ROOT) -> list[dict[str, Any]]:
    """Every rule of the workflow as Snakemake parsed it: conda env, localrule, gpu, param names."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _RULES_PROBE],
        cwd=workdir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@RULES@@")]
    if proc.returncode != 0 or not marker:
        raise AssertionError(
            f"could not parse the workflow in {workdir}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    import json

    return json.loads(marker[-1][len("@@RULES@@") :])
