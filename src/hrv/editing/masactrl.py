"""MasaCtrl, mutual self-attention control (Cao et al., ICCV 2023), on a generated source.

From UNet evaluation ``start_step`` on, in the decoder's self-attention at resolution levels
0..``max_level``, every branch's queries attend to the source's keys and values, in both halves of
the guidance batch (each half to the source's keys and values of that half). The source attends
to itself, so it is unchanged; cross attention stays the target prompt's own. Defaults (official
SD 1.x): from step 4, the last six decoder self-attention layers (``up_blocks.2`` and
``up_blocks.3``: 32x32 and 64x64 at 512 px). The official playground samples source and target in
one batch from one latent, as here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hrv.control import Call, Edit, UNetLayers
from hrv.editing.injection import choose, from_source
from hrv.errors import HRVInputError


@dataclass(eq=False)
class SourceKeysValues(Edit):
    """Target branch ``slot``'s self-attention keys and values are the source's; queries its own."""

    kinds: ClassVar[frozenset[str]] = frozenset({"self"})
    halves: ClassVar[str] = "both"
    slot: int = 1

    def qkv(self, call: Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return q, from_source(call, k, self.slot), from_source(call, v, self.slot)


@dataclass(frozen=True)
class MasaCtrl:
    name: str = "masactrl"
    start_step: int = 4  # first UNet evaluation controlled
    max_level: int = 1  # decoder self-attention at levels 0..max_level (1: 32x32 and 64x64 at 512 px)

    uses_hrv: ClassVar[bool] = False

    def settings(self, plan) -> dict:
        """The effective settings (``plan``: ``hrv.editing.method.Plan``), windows in UNet evaluations."""
        (edit,) = self.build(plan.layers, plan.n_evals)
        return {
            "start_step": self.start_step,
            "max_level": self.max_level,
            "evaluations": [min(self.start_step, plan.n_evals), plan.n_evals],
            "layers": sorted({name.split(".transformer_blocks")[0] for name in edit.sites}),
        }

    def edits(self, plan) -> list[Edit]:
        return self.build(plan.layers, plan.n_evals, plan.slot)

    def build(self, layers: UNetLayers, evaluations: int, slot: int = 1) -> list[Edit]:
        """The edit for target branch ``slot`` (``evaluations`` is not needed: the window is open-ended)."""
        if self.start_step < 0:
            raise HRVInputError(f"masactrl start_step must be a UNet evaluation >= 0, got {self.start_step}")
        if self.max_level < 0:
            raise HRVInputError(f"masactrl max_level must be a resolution level >= 0, got {self.max_level}")
        sites = choose(
            layers,
            "self",
            lambda s: s.section == "up" and s.level <= self.max_level,
            f"masactrl max_level {self.max_level}",
        )
        return [SourceKeysValues(sites=sites, start=self.start_step, slot=slot)]


METHOD = MasaCtrl()
