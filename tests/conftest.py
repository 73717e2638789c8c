"""Shared fixtures: the tiny model is built once per test session (seconds), offline."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from hrv.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model_dir):
    """The tiny pipeline, loaded once. Tests must not leave processors or patches behind."""
    from hrv.models import load_pipeline

    return load_pipeline(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def concepts(root):
    from hrv.concepts import read_concepts

    return read_concepts(root / "resources/concepts/concepts_34x10.csv")


def pytest_terminal_summary(terminalreporter) -> None:
    """Say plainly when the SLURM test did not run, and why (it needs root and SLURM or apt-get)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_slurm.py" in r.nodeid]
    if not skipped:
        return
    reasons = sorted(
        {str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr) for r in skipped}
    )
    terminalreporter.section("SLURM test not run", sep="-", yellow=True, bold=True)
    for reason in reasons:
        terminalreporter.line(f"tests/test_slurm.py skipped: {reason.removeprefix('Skipped: ')}")
