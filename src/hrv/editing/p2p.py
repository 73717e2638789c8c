"""Prompt-to-Prompt word swap (``AttentionReplace``, spec section 5), without LocalBlend.

In every cross-attention site, for UNet evaluations t < int(cross * evaluations), the target's
maps are the source's re-indexed onto the target's tokens (``einsum('bhps,bst->bhpt')`` with the
pair's token mapper). In self-attention sites with at most 16x16 query positions, for
t < int(self * steps), the target's maps are the source's. Conditional half only; the source
branch is never changed. Defaults: cross 0.8, self 0.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hrv.control import Call, Edit, SourceMaps
from hrv.editing.method import Plan, cross_window, self_window

SELF_MAX_QUERIES = 16 * 16


@dataclass(eq=False)
class ReplaceCrossMaps(Edit):
    """Target maps = source maps re-indexed by the pair's token mapper (groups, S, S)."""

    mappers: torch.Tensor
    slot: int = 1

    def maps(self, call: Call, probs: torch.Tensor) -> torch.Tensor:
        source, target = call.rows(0), call.rows(self.slot)
        mapped = torch.einsum("bhps,bst->bhpt", probs[source], self.mappers.to(probs.dtype))
        new = probs.clone()
        new[target] = self.combine(call, probs[target], mapped)
        return new

    def combine(self, call: Call, own: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
        """The target's new maps from its own and the mapped source maps (P2P: the mapped ones)."""
        return mapped


def mappers(plan: Plan) -> torch.Tensor:
    return torch.from_numpy(np.stack([p.mapper for p in plan.pairs])).to(plan.device)


@dataclass(frozen=True)
class P2P:
    name: str = "p2p"
    cross: float = 0.8
    self_: float = 0.4
    uses_hrv = False

    def windows(self, plan: Plan) -> tuple[int, int]:
        cross = self.cross if plan.cross_steps is None else plan.cross_steps
        self_ = self.self_ if plan.self_steps is None else plan.self_steps
        return cross_window(cross, plan.n_evals), self_window(self_, plan.steps)

    def settings(self, plan: Plan) -> dict:
        cross, self_ = self.windows(plan)
        return {
            "cross_steps": self.cross if plan.cross_steps is None else plan.cross_steps,
            "self_steps": self.self_ if plan.self_steps is None else plan.self_steps,
            "cross_evaluations": cross,
            "self_evaluations": self_,
            "self_max_query_positions": SELF_MAX_QUERIES,
        }

    def cross_edit(self, plan: Plan, end: int) -> Edit:
        return ReplaceCrossMaps(mappers(plan), plan.slot, end=end)

    def edits(self, plan: Plan) -> list[Edit]:
        cross, self_ = self.windows(plan)
        return [
            self.cross_edit(plan, cross),
            SourceMaps(plan.slot, end=self_, max_query_positions=SELF_MAX_QUERIES),
        ]


METHOD = P2P()
