"""The editing methods by name: adding a method is one module and one line here."""

from __future__ import annotations

import importlib

from hrv.editing.method import Method
from hrv.errors import HRVInputError

MODULES = {
    "p2p": "hrv.editing.p2p",
    "p2p_self09": "hrv.editing.p2p_self09",
    "p2p_hrv_flat": "hrv.editing.p2p_hrv_flat",
    "p2p_hrv": "hrv.editing.p2p_hrv",
    # the baselines (docs/editing-baselines.md)
    "sdedit_0.5": "hrv.editing.sdedit_05",
    "sdedit_0.7": "hrv.editing.sdedit_07",
    "pnp": "hrv.editing.pnp",
    "masactrl": "hrv.editing.masactrl",
    "fpe": "hrv.editing.fpe",
}


def get_method(name: str) -> Method:
    if name not in MODULES:
        raise HRVInputError(f"unknown editing method {name!r}; choose from {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name]).METHOD
