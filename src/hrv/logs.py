"""Send a step's output (progress bars included) to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

from hrv.errors import HRVInputError


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[None]:
    """Redirect stdout, stderr and logging to ``path``; an error's traceback is written there too."""
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
        except HRVInputError as err:
            # into the log before it closes: Snakemake points at the log, not at the job's stderr
            print(f"error: {err}", file=f)
            raise
        except BaseException:
            traceback.print_exc(file=f)
            raise
        finally:
            logging.getLogger().removeHandler(handler)
