"""Edits every task shares: per-head token factors (steering, weakening), map capture, and the
source's self-attention maps copied into a target (P2P, P2P-HRV, FPE)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from hrv.control.edit import Call, Edit
from hrv.control.layers import Site


@dataclass(eq=False)
class HeadFactors(Edit):
    """Per-head, per-token factors on the conditional half's post-softmax cross-attention maps.

    ``factors``: (B, H, S) for B conditional batch elements (or (1, H, S), broadcast), H heads of
    the head registry and S text tokens; no renormalisation (spec section 2). A layer whose
    factors are all 1 is not touched (fused kernel); heads whose factors are all 1 keep the fused
    output (their maps come back unchanged).
    """

    factors: torch.Tensor
    _identity: dict = field(default_factory=dict, init=False, repr=False)

    def wants(self, site: Site, step: int, query_positions: int) -> bool:
        if not super().wants(site, step, query_positions):
            return False
        # keyed by the tensor itself: a new tensor could reuse a freed one's id()
        if self._identity.get("factors") is not self.factors:
            self._identity = {"factors": self.factors}
        identity = self._identity.get(site.position)
        if identity is None:
            identity = self._identity[site.position] = bool((self.factors[:, site.ca.head_slice] == 1).all())
        return not identity

    def maps(self, call: Call, probs: torch.Tensor) -> torch.Tensor:
        f = self.factors[:, call.site.ca.head_slice, :]
        return probs * f[:, :, None, :].to(probs.dtype)


@dataclass(eq=False)
class CaptureMaps(Edit):
    """Hands the maps of every call to ``fn(site, step, probs)`` and changes nothing.

    ``probs`` (rows, heads, queries, keys) are the maps after the edits listed before this one;
    they carry autograd when the UNet call does (detach them to keep them). ``of``: the site kinds
    to capture (cross by default).
    """

    fn: Callable[[Site, int, torch.Tensor], None]
    of: Iterable[str] = ("cross",)

    def __post_init__(self) -> None:
        self.kinds = frozenset(self.of)

    def maps(self, call: Call, probs: torch.Tensor) -> None:
        self.fn(call.site, call.step, probs)


@dataclass(eq=False)
class SourceMaps(Edit):
    """Target branch ``slot``'s self-attention maps are its group's source's (conditional half).

    The target's output is ``source maps @ its own values``. Where no other maps edit shares the
    call, the processor computes explicit maps for the source rows only (``maps`` below is the same
    rule for calls where maps edits are chained).
    """

    kinds = frozenset({"self"})
    slot: int = 1

    def maps(self, call: Call, probs: torch.Tensor) -> torch.Tensor:
        new = probs.clone()
        new[call.rows(self.slot)] = probs[call.rows(0)]
        return new
