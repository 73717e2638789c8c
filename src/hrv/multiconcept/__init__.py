"""Multi-concept generation (paper section 5.3): Attend-and-Excite, A&E-HRV and A&E's metrics.

``excite`` samples a prompt with one method (``sd``, ``ae``, ``ae_released``, ``ae_hrv``,
``ae_uniform``); ``hrv.multiconcept.sampler`` is the batched sampler behind it;
``hrv.multiconcept.metrics`` scores images as A&E's scripts do. See docs/multiconcept.md.

The names below are imported on first use, so that planning the DAG (which reads
``hrv.multiconcept.benchmark``) does not load torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    name: "hrv.multiconcept.generate" for name in ("ExciteResult", "excite", "load_hrv", "load_pipeline")
}

if TYPE_CHECKING:
    from hrv.multiconcept.generate import ExciteResult, excite, load_hrv, load_pipeline

__all__ = ["ExciteResult", "excite", "load_hrv", "load_pipeline"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value
