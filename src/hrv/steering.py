"""Concept strengthening and concept adjusting (spec section 2): rescaling vectors and factors.

In head h, the chosen token's post-softmax cross-attention map (conditional half) is multiplied by

- strengthening: ``HRV_desired[h]``
- adjusting: ``2 * HRV_desired[h] - HRV_undesired[h]``

each HRV element first limited to ``clamp`` (b; SDXL's released experiments used b = 9) when a
clamp is given. Strengthening is adjusting with desired = undesired. Every other token and every
head keeps factor 1. The step window counts UNet evaluations (PNDM runs steps + 1 of them).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hrv.attention import Intervention  # = hrv.control.HeadFactors
from hrv.errors import HRVInputError
from hrv.hrvfile import HRVSet


@dataclass(frozen=True)
class Steering:
    """What to steer towards: a desired concept, optionally away from an undesired one."""

    desired: str
    undesired: str | None = None  # None = strengthening
    clamp: float | None = None  # b: each HRV element is limited to b first
    start: int = 0  # first UNet evaluation steered
    end: int | None = None  # steering stops before this evaluation (None = to the last)

    @property
    def method(self) -> str:
        return "strengthening" if self.undesired is None else "adjusting"


def _concept_row(hrv: HRVSet, concept: str, role: str) -> np.ndarray:
    row = hrv.vector(concept).astype(np.float64)  # unknown concept -> HRVInputError naming the choices
    if not row.any():
        message = (
            f"the {role} concept {concept!r} has no defined HRV (no head voted for it; its row is zeros)"
        )
        if role == "desired":
            raise HRVInputError(
                f"{message}: steering with it would erase the token. Accumulate over more prompts or use"
                " imported official HRVs (`hrv import-official`)"
            )
        warnings.warn(f"{message}; it contributes nothing", stacklevel=3)
    return row


def rescaling_vector(
    hrv: HRVSet, desired: str, undesired: str | None = None, clamp: float | None = None
) -> np.ndarray:
    """(H,) float32 factors: ``2 * min(HRV_desired, b) - min(HRV_undesired, b)``.

    ``undesired=None`` (or equal to ``desired``) gives strengthening, ``min(HRV_desired, b)``.
    """
    if clamp is not None and not clamp > 0:
        raise HRVInputError(f"clamp must be a positive number (the HRV elements are >= 0), got {clamp!r}")
    d = _concept_row(hrv, desired, "desired")
    u = d if undesired is None else _concept_row(hrv, undesired, "undesired")
    if clamp is not None:
        d, u = np.minimum(d, clamp), np.minimum(u, clamp)
    return (2.0 * d - u).astype(np.float32)


def token_factors(
    vector: np.ndarray | torch.Tensor, positions: Sequence[int], n_tokens: int = 77
) -> torch.Tensor:
    """(1, H, n_tokens) factors: ``vector[h]`` on the chosen token columns of every head, 1 elsewhere."""
    vec = torch.as_tensor(np.asarray(vector, dtype=np.float32))
    if vec.ndim != 1:
        raise HRVInputError(
            f"a rescaling vector must be 1-D (one factor per head), got shape {tuple(vec.shape)}"
        )
    if not positions:
        raise HRVInputError("no token positions to steer")
    bad = [p for p in positions if not 0 <= int(p) < n_tokens]
    if bad:
        raise HRVInputError(f"token position(s) {bad} are outside the {n_tokens}-token sequence")
    factors = torch.ones((1, vec.numel(), n_tokens), dtype=torch.float32)
    factors[0][:, list(positions)] = vec[:, None]
    return factors


def build_intervention(
    hrv: HRVSet,
    head_names: Sequence[str],
    steering: Steering,
    positions: Sequence[int],
    n_tokens: int = 77,
) -> Intervention:
    """The ``Intervention`` for one prompt: checks that the HRV's heads are the model's first."""
    hrv.check_heads(list(head_names))
    vector = rescaling_vector(hrv, steering.desired, steering.undesired, steering.clamp)
    if steering.start < 0 or (steering.end is not None and steering.end <= steering.start):
        raise HRVInputError(
            f"step window [{steering.start}, {steering.end}) is empty; need 0 <= start < end (end None = all)"
        )
    return Intervention(token_factors(vector, positions, n_tokens), start=steering.start, end=steering.end)
