"""The summary statistics the stages' tables report."""

from __future__ import annotations

import numpy as np


def mean_se(values) -> tuple[float, float, int]:
    """Mean, standard error of the mean (``std(ddof=1) / sqrt(n)``; NaN for n < 2) and n of
    ``values`` (mean NaN when there are none)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    se = float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return mean, se, n
