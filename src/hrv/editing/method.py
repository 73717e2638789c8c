"""What an editing method is: a name, its settings, and the edits it puts on one batch of pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from hrv.control import Edit, UNetLayers
from hrv.editing.tokens import AlignedPair


@dataclass(frozen=True)
class Plan:
    """Everything a method needs to build its edits for one pipeline call.

    The conditional half holds one group per (pair, seed), ``[source, target_1, ...]``; this
    method's target is branch ``slot`` of every group, and ``pairs[g]`` is group g's pair.
    """

    layers: UNetLayers
    pairs: tuple[AlignedPair, ...]
    slot: int
    n_evals: int  # UNet evaluations of the sampling run (51 for PNDM at 50 steps)
    steps: int  # sampling steps
    head_weights: torch.Tensor | None  # (H,) the concept's HRV over the registry's heads
    cross_steps: float | None = None  # window overrides (fractions), None = the method's own
    self_steps: float | None = None
    device: torch.device | str = "cpu"


class Method(Protocol):
    name: str
    uses_hrv: bool  # needs the concept's HRV (Plan.head_weights)

    def settings(self, plan: Plan) -> dict:
        """The method's effective settings for edit.json (windows in UNet evaluations, ...)."""
        ...

    def edits(self, plan: Plan) -> list[Edit]: ...


def cross_window(fraction: float, n_evals: int) -> int:
    """Cross-attention replacement runs for UNet evaluations ``t < int(fraction * n_evals)`` (the
    released code's 51-row alpha table with PNDM at 50 steps: 0.8 -> 40)."""
    return int(fraction * n_evals)


def self_window(fraction: float, steps: int) -> int:
    """Self-attention replacement runs for ``t < int(fraction * steps)`` (the released code counts
    sampling steps here, not evaluations: 0.4 -> 20, 0.9 -> 45 at 50 steps)."""
    return int(fraction * steps)
