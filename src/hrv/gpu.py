"""Give each GPU job on a multi-GPU machine its own device.

Snakemake counts a ``gpu`` resource (``--resources gpu=4`` lets four GPU jobs run at once) but
assigns no device ids, so without help every job would land on ``cuda:0``. A job therefore claims
a free device itself: it takes an exclusive ``flock`` on ``<lock dir>/gpu-<id>.lock`` for the first
device nobody holds and exports ``CUDA_VISIBLE_DEVICES=<id>`` before CUDA is initialised. The
kernel drops a ``flock`` when its process ends, however it ends, so a killed job never leaves a
stale claim behind.

The candidate devices are, in order of precedence: the ``devices`` argument, the entries of
``CUDA_VISIBLE_DEVICES`` (SLURM's GRES allocation or the user's restriction, never widened),
``HRV_GPU_DEVICES`` and the GPUs that ``nvidia-smi -L`` lists. No candidates means a CPU machine: the claim is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from hrv.errors import HRVInputError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "HRV_GPU_LOCK_DIR"
DEVICES_ENV = "HRV_GPU_DEVICES"
TIMEOUT_ENV = "HRV_GPU_CLAIM_TIMEOUT"


def default_lock_dir() -> Path:
    """Per-machine, per-user lock folder; per SLURM job inside one.

    SLURM with device cgroups renumbers each job's GPUs from 0, so jobs sharing a node would all
    see ``CUDA_VISIBLE_DEVICES=0``: their claims must not meet in one folder.
    """
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    job = os.environ.get("SLURM_JOB_ID")
    return Path(f"/tmp/hrv-gpu-locks-{os.getuid()}" + (f"-slurm{job}" if job else ""))


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _nvidia_smi_devices() -> list[str]:
    """GPU indices from ``nvidia-smi -L`` (asking torch would initialise CUDA before the claim)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, flags=re.MULTILINE)]


def candidate_devices(devices: Sequence[str | int] | None = None) -> list[str]:
    """The device ids a job may claim (see the module docstring for the order of precedence)."""
    if devices is not None:
        return [str(d) for d in devices]
    for env in ("CUDA_VISIBLE_DEVICES", DEVICES_ENV):
        if env in os.environ:
            # an empty CUDA_VISIBLE_DEVICES means "no GPU": respected, not overridden
            return _split(os.environ[env])
    return _nvidia_smi_devices()


def _lock_name(device: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


@contextlib.contextmanager
def claim_gpu(
    enabled: bool = True,
    *,
    devices: Sequence[str | int] | None = None,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    poll: float = 0.5,
) -> Iterator[str | None]:
    """Hold one free GPU for the block; yield its id (``None`` on CPU or when not ``enabled``).

    Inside the block ``CUDA_VISIBLE_DEVICES`` names only the claimed device, so ``cuda:0`` is it;
    the previous value is restored on exit. Waits up to ``timeout`` seconds (``HRV_GPU_CLAIM_TIMEOUT``,
    default one hour) when every device is held, then raises ``HRVInputError``.
    """
    ids = candidate_devices(devices) if enabled else []
    if not ids:
        yield None
        return
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV, 3600))
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    held: tuple[str, int] | None = None
    waited = False
    while held is None:
        for dev in ids:
            fd = os.open(folder / _lock_name(dev), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held = (dev, fd)
            break
        if held is None:
            if time.monotonic() >= deadline:
                raise HRVInputError(
                    f"no free GPU among {ids} after {timeout:.0f} s (locks in {folder}); run fewer GPU"
                    f" jobs at once (snakemake --resources gpu=N with N = number of GPUs) or raise"
                    f" {TIMEOUT_ENV}"
                )
            if not waited:
                log.info("all GPUs %s are claimed; waiting for one to be released", ids)
                waited = True
            time.sleep(poll)
    dev, fd = held
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = dev
    log.info("claimed GPU %s (lock %s)", dev, folder / _lock_name(dev))
    try:
        yield dev
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
