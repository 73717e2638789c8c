"""Attention control: one processor for every method that changes or reads attention in the UNet.

A method is an :class:`Edit` (what it changes, where, when); a :class:`Controller` holds the active
edits, the batch :class:`Layout` and the UNet-evaluation counter; :func:`installed` puts the
processors on the UNet for the duration of a ``with`` block. See docs/attention-control.md.
"""

from hrv.control.edit import Call, Edit, Layout
from hrv.control.layers import KINDS, Site, UNetLayers
from hrv.control.processor import Controller, ControlProcessor, attention_probs, batched, installed
from hrv.control.standard import CaptureMaps, HeadFactors, SourceMaps

__all__ = [
    "KINDS",
    "Call",
    "CaptureMaps",
    "ControlProcessor",
    "Controller",
    "Edit",
    "HeadFactors",
    "Layout",
    "Site",
    "SourceMaps",
    "UNetLayers",
    "attention_probs",
    "batched",
    "installed",
]
