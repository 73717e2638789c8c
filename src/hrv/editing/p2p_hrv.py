"""P2P-HRV (spec section 5): P2P whose edited token keeps its own cross-attention map, weighted
per head by the concept's HRV.

While cross replacement is on, in head h of every cross-attention site the edited token's columns
are the target branch's own map times HRV_concept[h] (no renormalisation) and every other column
is the mapped source map; after the window the target uses its own unscaled maps. Self
replacement 0.9 instead of P2P's 0.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrv.control import Call, Edit
from hrv.editing.method import Plan
from hrv.editing.p2p import P2P, ReplaceCrossMaps, mappers


@dataclass(eq=False)
class HRVCrossMaps(ReplaceCrossMaps):
    """P2P's cross replacement, with the edited columns (groups, S) = own map x head weight (H,)."""

    columns: torch.Tensor | None = None
    head_weights: torch.Tensor | None = None

    def combine(self, call: Call, own: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
        w = self.head_weights[call.site.ca.head_slice].to(own.dtype)
        return torch.where(self.columns[:, None, None, :], own * w[None, :, None, None], mapped)


def edited_columns(plan: Plan, n_tokens: int) -> torch.Tensor:
    columns = torch.zeros((len(plan.pairs), n_tokens), dtype=torch.bool)
    for g, pair in enumerate(plan.pairs):
        columns[g, list(pair.edited)] = True
    return columns.to(plan.device)


@dataclass(frozen=True)
class P2PHRV(P2P):
    name: str = "p2p_hrv"
    self_: float = 0.9
    flat: bool = False  # every head's weight 1 (the ablation p2p_hrv_flat)

    @property
    def uses_hrv(self) -> bool:
        return not self.flat

    def settings(self, plan: Plan) -> dict:
        return {**super().settings(plan), "head_weights": "1 (flat)" if self.flat else "HRV of the concept"}

    def cross_edit(self, plan: Plan, end: int) -> Edit:
        m = mappers(plan)
        n_heads = plan.layers.heads.n_heads
        weights = torch.ones(n_heads) if self.flat else plan.head_weights
        return HRVCrossMaps(
            m,
            plan.slot,
            end=end,
            columns=edited_columns(plan, m.shape[-1]),
            head_weights=weights.to(plan.device),
        )


METHOD = P2PHRV()
