"""Image editing (spec section 5): P2P, P2P-HRV, their ablations and the baselines on the
attention-control mechanism (``hrv.control``), one module per method (``hrv.editing.methods``
names them); benchmark sets, scores and the DAG stage.

The names below are imported on first use, so that planning the DAG (which reads
``hrv.editing.sets`` and ``hrv.editing.stage``) does not load torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hrv.editing.methods import MODULES

METHODS = tuple(MODULES)

# name -> the module that defines it
_LAZY = {
    "get_method": "hrv.editing.methods",
    "EditResult": "hrv.editing.run",
    "edit_pairs": "hrv.editing.run",
    "resolve_hrv": "hrv.editing.run",
    "save_edit_outputs": "hrv.editing.run",
    "TOKEN_MAPS": "hrv.editing.tokens",
    "AlignedPair": "hrv.editing.tokens",
    "align_pair": "hrv.editing.tokens",
}

if TYPE_CHECKING:
    from hrv.editing.methods import get_method
    from hrv.editing.run import EditResult, edit_pairs, resolve_hrv, save_edit_outputs
    from hrv.editing.tokens import TOKEN_MAPS, AlignedPair, align_pair


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "METHODS",
    "TOKEN_MAPS",
    "AlignedPair",
    "EditResult",
    "align_pair",
    "edit_pairs",
    "get_method",
    "resolve_hrv",
    "save_edit_outputs",
]
