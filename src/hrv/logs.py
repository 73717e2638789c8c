"""Send a step's output (progress bars included) to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        handler = logging.StreamHandler(f)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)
