"""The GPU claim: concurrent jobs never share a device, claims die with their process."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrv.errors import HRVInputError
from hrv.gpu import candidate_devices, claim_gpu


def _worker(lock_dir: str, devices: list[str], barrier, queue, hold: float) -> None:
    barrier.wait()
    with claim_gpu(devices=devices, lock_dir=lock_dir, timeout=60, poll=0.02) as dev:
        start = time.monotonic()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        time.sleep(hold)
        end = time.monotonic()
    queue.put((os.getpid(), dev, visible, start, end))


def test_concurrent_claims_never_share_a_device(tmp_path):
    devices = ["0", "1", "2"]
    n = 7  # more jobs than devices: some must wait for a release
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path), devices, barrier, queue, 0.3)) for _ in range(n)
    ]
    for p in procs:
        p.start()
    records = [queue.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    for _, dev, visible, _, _ in records:
        assert dev in devices
        assert visible == dev  # the job sees only its own device
    # any two jobs holding the same device did so at disjoint times
    for i, (_, d1, _, s1, e1) in enumerate(records):
        for _, d2, _, s2, e2 in records[i + 1 :]:
            if d1 == d2:
                assert e1 <= s2 or e2 <= s1, f"device {d1} shared by overlapping jobs"
    # never more jobs at once than devices, and all devices were used
    events = sorted([(s, 1) for *_, s, _ in records] + [(e, -1) for *_, e in records])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= len(devices)
    assert {dev for _, dev, *_ in records} == set(devices)


def test_claim_is_released_when_the_holder_is_killed(tmp_path):
    code = (
        "import sys, time\n"
        "from hrv.gpu import claim_gpu\n"
        f"with claim_gpu(devices=['0'], lock_dir={str(tmp_path)!r}) as d:\n"
        "    print(d, flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        with (
            pytest.raises(HRVInputError, match="no free GPU"),
            claim_gpu(devices=["0"], lock_dir=tmp_path, timeout=0.2, poll=0.05),
        ):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        with claim_gpu(devices=["0"], lock_dir=tmp_path, timeout=5, poll=0.05) as dev:
            assert dev == "0"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_all_devices_held_gives_a_clear_error(tmp_path):
    with (
        claim_gpu(devices=["a", "b"], lock_dir=tmp_path) as first,
        claim_gpu(devices=["a", "b"], lock_dir=tmp_path) as second,
    ):
        assert {first, second} == {"a", "b"}
        with (
            pytest.raises(HRVInputError, match=r"gpu=N"),
            claim_gpu(devices=["a", "b"], lock_dir=tmp_path, timeout=0.1, poll=0.02),
        ):
            pass


def test_environment_is_restored_and_cpu_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with claim_gpu(lock_dir=tmp_path) as dev:
        assert dev == "3"  # taken from the allocation, never widened
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    with claim_gpu(enabled=False, lock_dir=tmp_path) as dev:
        assert dev is None
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # "no GPU" is respected
    assert candidate_devices() == []
    with claim_gpu(lock_dir=tmp_path) as dev:
        assert dev is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("HRV_GPU_DEVICES", "1, 2")
    assert candidate_devices() == ["1", "2"]


def test_slurm_jobs_claim_in_their_own_lock_folder(monkeypatch):
    """Two SLURM jobs on one node may both see CUDA_VISIBLE_DEVICES=0 (device cgroups)."""
    from hrv.gpu import default_lock_dir

    monkeypatch.delenv("HRV_GPU_LOCK_DIR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    first = default_lock_dir()
    monkeypatch.setenv("SLURM_JOB_ID", "102")
    assert default_lock_dir() != first
    monkeypatch.delenv("SLURM_JOB_ID")
    assert "slurm" not in default_lock_dir().name
    monkeypatch.setenv("HRV_GPU_LOCK_DIR", "/x/locks")
    assert default_lock_dir() == Path("/x/locks")
