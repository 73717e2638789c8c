"""The demo DAG through profiles/slurm on a real single-node SLURM cluster (loopback only).

tests/slurm/start_cluster.sh starts slurmctld + slurmd (+ munge) on this machine. It installs
Debian's slurm-wlm and munge only when HRV_SLURM_INSTALL=1 or CI=true (as CI sets it); otherwise a
machine without SLURM skips this test, as does one where the daemons cannot start (not root, ...).
The skip names the reason and how to run it (README, "Testing on SLURM"); ``make test`` repeats it
at the end of its output (tests/conftest.py).
Checks: every HRV shard ran as its own SLURM job (the executor's per-job logs and the SLURM job
history), the cheap rules did not go to SLURM (localrules), and hrv.npz equals a local run's bit
for bit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers_workflow import ROOT, TINY_CONFIG, copy_workflow, snakemake, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the SLURM test needs Linux"),
]

SCRIPTS = ROOT / "tests" / "slurm"
HOW_TO_RUN = (
    "to run it: as root, HRV_SLURM_INSTALL=1 python -m pytest tests/test_slurm.py (README, Testing on SLURM)"
)
N_SHARDS = 2  # 4 prompts, shard_size 2
TARGETS = ("hrv_heatmap", "provenance")  # the HRV part of the demo DAG
CONFIG = {**TINY_CONFIG, "hrv": {**TINY_CONFIG["hrv"], "max_prompts": 4}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm-state")
    if shutil.which("bash") is None:
        pytest.skip(f"no bash to run tests/slurm/start_cluster.sh; {HOW_TO_RUN}")
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "start_cluster.sh"), str(state)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == 3:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=60)
        pytest.skip(f"{proc.stderr.strip().splitlines()[-1]}; {HOW_TO_RUN}")
    if proc.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=60)
        raise AssertionError(f"start_cluster.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    try:
        yield {"SLURM_CONF": str(state / "slurm.conf"), "state": state}
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=60)


def test_profile_adapted_for_the_test_cluster_keeps_its_gpu_requests(tmp_path):
    """The test changes only site values (partition, account, memory, polling) of profiles/slurm."""
    profile = _test_profile(copy_workflow(tmp_path / "wf"))
    cfg = yaml.safe_load((profile / "config.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert cfg["executor"] == shipped["executor"] == "slurm"
    for rule, res in shipped["set-resources"].items():
        for key in ("gpu", "gres", "gpu_model"):
            assert cfg["set-resources"][rule].get(key) == res.get(key)


def _test_profile(workdir: Path) -> Path:
    """profiles/slurm with this cluster's site values: partition 'debug', no account, squeue status."""
    cfg = yaml.safe_load((workdir / "profiles/slurm/config.yaml").read_text())
    cfg["default-resources"].update(slurm_partition="debug", mem_mb=1000, runtime=10)
    cfg["default-resources"].pop("slurm_account", None)
    for res in cfg.get("set-resources", {}).values():
        res.update(slurm_partition="debug", mem_mb=1500, runtime=10)
        if "cpus_per_gpu" in res:
            res["cpus_per_gpu"] = 1  # the test node has 2 CPUs
    cfg.update(
        {
            "jobs": 4,
            "local-cores": 1,
            "retries": 0,
            "latency-wait": 5,
            "slurm-no-account": True,
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 2,
        }
    )
    out = workdir / "profiles" / "slurm-test"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def test_demo_dag_on_slurm_matches_local_run(cluster, tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    cfg = write_config(wd, CONFIG)
    profile = _test_profile(wd)
    env = {"SLURM_CONF": cluster["SLURM_CONF"]}

    # the local run first: it builds the tiny model that the SLURM run then reuses
    snakemake(wd, *TARGETS, "--cores", "2", "--configfile", str(cfg), "--config", "run=local", timeout=900)
    slurm = snakemake(
        wd,
        *TARGETS,
        "--workflow-profile",
        str(profile),
        "--configfile",
        str(cfg),
        "--config",
        "run=slurm",
        env=env,
        timeout=900,
    )

    # every shard is its own SLURM job: one executor log per shard, each with its own job id ...
    logs = sorted((wd / ".snakemake/slurm_logs/rule_hrv_shard").rglob("*.log"))
    by_shard = {}
    for log in logs:
        shard = re.search(r"(\d{3})", log.parent.name)
        assert shard, f"unexpected SLURM log folder {log.parent}"
        by_shard.setdefault(shard.group(1), []).append(log.stem)
    assert sorted(by_shard) == [f"{k:03d}" for k in range(N_SHARDS)], slurm.stderr[-3000:]
    job_ids = [ids[0] for ids in by_shard.values()]
    assert all(len(ids) == 1 for ids in by_shard.values())
    assert len(set(job_ids)) == N_SHARDS
    # ... that SLURM's own job history records as completed, and nothing else was submitted
    history = (cluster["state"] / "jobcomp.log").read_text()
    completed = dict(re.findall(r"JobId=(\d+) .*?JobState=(\w+)", history))
    ours = {j: s for j, s in completed.items() if f"WorkDir={wd}" in _record(history, j)}
    assert sorted(ours) == sorted(job_ids), history
    assert set(ours.values()) == {"COMPLETED"}
    for job in job_ids:  # each shard job asked SLURM for a GPU (finished jobs stay MinJobAge seconds)
        shown = subprocess.run(
            ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env={**os.environ, **env}
        ).stdout
        assert re.search(r"gres/gpu[:=]1|gpu:1", shown), shown
    assert "localrule hrv_merge" in slurm.stderr  # merge/plots ran on the submitting node
    assert "Job" in slurm.stderr and "submitted with SLURM jobid" in slurm.stderr

    # the results are those of a local run, bit for bit
    a = np.load(wd / "results/slurm/hrv/hrv.npz", allow_pickle=False)
    b = np.load(wd / "results/local/hrv/hrv.npz", allow_pickle=False)
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key], b[key]), f"hrv.npz[{key}] differs between SLURM and local runs"
    for k in range(N_SHARDS):
        sa = np.load(wd / f"results/slurm/hrv/shards/shard_{k:03d}.npz")
        sb = np.load(wd / f"results/local/hrv/shards/shard_{k:03d}.npz")
        assert np.array_equal(sa["counts"], sb["counts"])
        assert sa["counts"].sum() > 0


def _record(history: str, job_id: str) -> str:
    for line in history.splitlines():
        if line.startswith(f"JobId={job_id} "):
            return line
    return ""
