"""PnP, Plug-and-Play (Tumanyan et al., CVPR 2023), on a generated source.

The target takes the source's ResBlock features at one decoder unit (its residual branch's output,
before the shortcut is added) for the first ``feature_steps`` of the evaluations, and the
source's self-attention queries and keys from that unit to the end of the decoder for the first
``qk_steps``; the target keeps its own values. Both halves of the guidance batch: the source's
unconditional half goes into the target's unconditional half, the conditional into the
conditional, as the original loads the features it saved from the source's ``[uc, c]`` batch.

The original samples the source first, saving these features at every DDIM step, then samples
the target from the same initial noise loading the features of the same step. Here the source is
branch 0 of the same batch from the same latent, so at every UNet evaluation it computes the
features the original would have saved, and the target reads them in the same call: no
inversion and no files. Defaults (official SD 1.x): output block 4 = decoder unit 1 at level 2
(``up_blocks.1.resnets.1``, 16x16 at 512 px), q/k in output blocks 4-11, 0.8 and 0.5 of the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hrv.control import Call, Edit, UNetLayers
from hrv.editing.injection import choose, decoder_levels, from_source, window_end
from hrv.errors import HRVInputError


@dataclass(eq=False)
class SourceFeatures(Edit):
    """Target branch ``slot``'s ResBlock residual output is the source's."""

    kinds: ClassVar[frozenset[str]] = frozenset({"resnet"})
    halves: ClassVar[str] = "both"
    slot: int = 1

    def features(self, call: Call, hidden: torch.Tensor) -> torch.Tensor:
        return from_source(call, hidden, self.slot)


@dataclass(eq=False)
class SourceQueriesKeys(Edit):
    """Target branch ``slot``'s self-attention queries and keys are the source's; values its own."""

    kinds: ClassVar[frozenset[str]] = frozenset({"self"})
    halves: ClassVar[str] = "both"
    slot: int = 1

    def qkv(self, call: Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return from_source(call, q, self.slot), from_source(call, k, self.slot), v


@dataclass(frozen=True)
class PnP:
    name: str = "pnp"
    feature_steps: float = 0.8  # fraction of the evaluations with the source's ResBlock features
    qk_steps: float = 0.5  # fraction of the evaluations with the source's self-attention q, k
    level: int = 2  # resolution level of the decoder unit (2: 16x16 at 512 px on SD 1.x)
    unit: int = 1  # the unit within that level: its ResBlock is injected, q/k from it on

    uses_hrv: ClassVar[bool] = False

    def settings(self, plan) -> dict:
        """The effective settings (``plan``: ``hrv.editing.method.Plan``), windows in UNet evaluations."""
        features, qk = self.build(plan.layers, plan.n_evals)
        return {
            "feature_steps": self.feature_steps,
            "qk_steps": self.qk_steps,
            "feature_evaluations": features.end,
            "qk_evaluations": qk.end,
            "feature_layers": sorted(features.sites),
            "qk_layers": len(qk.sites),
            "level": self.level,
            "unit": self.unit,
        }

    def edits(self, plan) -> list[Edit]:
        return self.build(plan.layers, plan.n_evals, plan.slot)

    def build(self, layers: UNetLayers, evaluations: int, slot: int = 1) -> list[Edit]:
        """The edits for target branch ``slot`` of a run of ``evaluations`` UNet evaluations."""
        feature_end = window_end(self.feature_steps, evaluations, "pnp feature_steps")
        qk_end = window_end(self.qk_steps, evaluations, "pnp qk_steps")
        levels = decoder_levels(layers, "self")
        if self.level not in levels:
            raise HRVInputError(
                f"pnp level {self.level}: this UNet's decoder has self-attention at levels"
                f" {', '.join(map(str, levels))} (SD 1.x default: 2)"
            )
        units = {s.sub for s in layers.of_kind("resnet") if s.section == "up" and s.level == self.level}
        if self.unit not in units:
            raise HRVInputError(
                f"pnp unit {self.unit}: decoder level {self.level} has units"
                f" {', '.join(map(str, sorted(units)))} (SD 1.x default: 1)"
            )
        at = (self.level, self.unit)
        feature = choose(
            layers, "resnet", lambda s: s.section == "up" and (s.level, s.sub) == at, f"pnp unit {at}"
        )
        qk = choose(
            layers,
            "self",
            lambda s: (
                s.section == "up" and (s.level < self.level or (s.level == self.level and s.sub >= self.unit))
            ),
            f"pnp q/k from unit {at}",
        )
        return [
            SourceFeatures(sites=feature, end=feature_end, slot=slot),
            SourceQueriesKeys(sites=qk, end=qk_end, slot=slot),
        ]


METHOD = PnP()
