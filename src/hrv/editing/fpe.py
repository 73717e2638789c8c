"""FPE, Free-Prompt-Editing (Liu et al., CVPR 2024), on a generated source.

For the first ``steps`` of the evaluations, in every self-attention layer at resolution level
``min_level`` or coarser (any section), the target's self-attention maps are the source's; the
target keeps its own values. Cross attention is untouched, so no token alignment is needed. Only
the conditional half, as the original's prompt-to-prompt-style controller. Defaults (official
SD 1.x): 0.8 of the steps, layers with at most 32x32 query positions at 512 px (level >= 1; not
the 64x64 ones). The official ``edit_fake`` notebook samples source and target in one batch from
one latent, as here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hrv.control import Edit, SourceMaps, UNetLayers
from hrv.editing.injection import choose, window_end
from hrv.errors import HRVInputError


@dataclass(frozen=True)
class FPE:
    name: str = "fpe"
    steps: float = 0.8  # fraction of the evaluations with the source's self-attention maps
    min_level: int = 1  # self-attention at this resolution level or coarser (1: <= 32x32 at 512 px)

    uses_hrv: ClassVar[bool] = False

    def settings(self, plan) -> dict:
        """The effective settings (``plan``: ``hrv.editing.method.Plan``), windows in UNet evaluations."""
        (edit,) = self.build(plan.layers, plan.n_evals)
        return {
            "steps": self.steps,
            "min_level": self.min_level,
            "evaluations": edit.end,
            "layers": sorted({name.split(".transformer_blocks")[0] for name in edit.sites}),
        }

    def edits(self, plan) -> list[Edit]:
        return self.build(plan.layers, plan.n_evals, plan.slot)

    def build(self, layers: UNetLayers, evaluations: int, slot: int = 1) -> list[Edit]:
        """The edit for target branch ``slot`` of a run of ``evaluations`` UNet evaluations."""
        end = window_end(self.steps, evaluations, "fpe steps")
        if self.min_level < 0:
            raise HRVInputError(f"fpe min_level must be a resolution level >= 0, got {self.min_level}")
        sites = choose(layers, "self", lambda s: s.level >= self.min_level, f"fpe min_level {self.min_level}")
        return [SourceMaps(sites=sites, end=end, slot=slot)]


METHOD = FPE()
