"""An edit: what it changes, where and when. The processor (``hrv.control.processor``) runs them.

A method is a small subclass of :class:`Edit` that overrides one or more hooks:

- ``qkv(call, q, k, v)``: queries, keys, values (rows, heads, positions, d) before attention;
  return new ones (or None to leave them, e.g. to read them);
- ``maps(call, probs)``: post-softmax attention maps (rows, heads, queries, keys); return new maps
  (or None to only read them). Heads whose maps come back unchanged keep the fused kernel's output;
- ``features(call, h)``: a ResBlock's residual-branch output (rows, C, H, W), before the shortcut;
- ``end_evaluation(step)``: called after every UNet evaluation.

WHERE: ``kinds`` (``self``, ``cross``, ``resnet``), ``sites`` (module names, from
``UNetLayers.select``; None = every site of those kinds) and ``max_query_positions`` (checked
against the actual query length of a call). WHEN: UNet evaluations ``start <= step < end``.
``halves``: the hooks get the conditional half's rows (``"cond"``) or the whole batch (``"both"``).
Captured maps carry autograd whenever the UNet call does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hrv.control.layers import Site


@dataclass(frozen=True)
class Layout:
    """How the UNet batch is laid out.

    ``guidance``: the batch is two halves, ``[unconditional..., conditional...]`` (classifier-free
    guidance; diffusers' order). Within a half, ``group`` branches per group, one group per (pair,
    seed): ``[source, target_1, ..., target_{group-1}]`` (group 1 = independent images). So two
    pairs with one target each: ``[s1, t1, s2, t2]`` per half.
    """

    guidance: bool = True
    group: int = 1

    def branch_rows(self, n_rows: int, slot: int, halves: int) -> torch.Tensor:
        """Row indices of branch ``slot`` (0 = source) of every group, in a tensor of ``n_rows`` rows
        that holds ``halves`` halves (1: the conditional half, 2: the whole guidance batch)."""
        per_half = n_rows // halves
        if per_half % self.group:
            raise RuntimeError(f"{per_half} rows per half do not split into groups of {self.group}")
        rows = torch.arange(slot, per_half, self.group)
        return torch.cat([rows + h * per_half for h in range(halves)])


@dataclass
class Call:
    """One call of an edit's hook: where (``site``), when (``step``) and how the rows are laid out."""

    site: Site
    step: int
    attn: torch.nn.Module | None  # the diffusers Attention module (None for ResBlocks)
    layout: Layout
    halves: int  # 1: the rows are the conditional half; 2: the whole guidance batch
    n_rows: int

    def rows(self, slot: int) -> torch.Tensor:
        """Rows of branch ``slot`` (0 = source, 1.. = targets) of every group, in the hook's tensor."""
        return self.layout.branch_rows(self.n_rows, slot, self.halves)


@dataclass(kw_only=True)
class Edit:
    """Base of every attention-control method (see the module docstring for the hooks)."""

    kinds: ClassVar[frozenset[str]] = frozenset({"cross"})
    halves: ClassVar[str] = "cond"  # "cond" or "both"

    start: int = 0  # first UNet evaluation the edit acts on
    end: int | None = None  # the edit stops before this evaluation (None = to the last)
    sites: frozenset[str] | None = None  # module names (UNetLayers.select); None = all of ``kinds``
    max_query_positions: int | None = None  # act only where a call has at most this many queries

    def active(self, step: int) -> bool:
        return step >= self.start and (self.end is None or step < self.end)

    def wants(self, site: Site, step: int, query_positions: int) -> bool:
        """Whether the edit acts on ``site`` at UNet evaluation ``step`` (override for finer choices)."""
        return (
            site.kind in self.kinds
            and self.active(step)
            and (self.sites is None or site.module_name in self.sites)
            and (self.max_query_positions is None or query_positions <= self.max_query_positions)
        )

    def has(self, hook: str) -> bool:
        """Whether the edit's class overrides ``hook`` ("qkv", "maps" or "features")."""
        return getattr(type(self), hook) is not getattr(Edit, hook)

    def qkv(self, call: Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return None

    def maps(self, call: Call, probs: torch.Tensor) -> torch.Tensor | None:
        return None

    def features(self, call: Call, hidden: torch.Tensor) -> torch.Tensor | None:
        return None

    def end_evaluation(self, step: int) -> None:
        return None
