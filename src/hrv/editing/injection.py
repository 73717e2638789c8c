"""What the baselines PnP, MasaCtrl and FPE share: the source's rows copied into the targets,
windows as fractions of the UNet evaluations, and layer choices by the UNet's structure.

Layer choices name a site by its section, its resolution level (``Site.level``: how many times
the latent was halved before it) and, in the decoder, its unit ``Site.sub``: ``up_blocks.<b>.resnets.<u>``
and ``up_blocks.<b>.attentions.<u>`` (every transformer block of it) are unit ``u`` of their level.
See docs/editing-baselines.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hrv.control import Call, Site, UNetLayers
from hrv.errors import HRVInputError


def from_source(call: Call, t: torch.Tensor, slot: int) -> torch.Tensor:
    """``t`` with the rows of target branch ``slot`` replaced by its group's source rows (a new
    tensor; the other branches of the group, other methods' targets, are left alone)."""
    out = t.clone()
    out[call.rows(slot)] = t[call.rows(0)]
    return out


def check_fraction(fraction: float | None, setting: str) -> None:
    """A window given as a fraction of the steps lies in [0, 1] (``None``: the method's default)."""
    if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
        raise HRVInputError(f"{setting} must be a fraction of the steps in [0, 1], got {fraction!r}")


def window_end(fraction: float, evaluations: int, setting: str) -> int:
    """The first UNet evaluation past ``fraction`` of ``evaluations``: evaluations t < int(f * N)."""
    check_fraction(fraction, setting)
    return int(fraction * evaluations)


def decoder_levels(layers: UNetLayers, kind: str) -> list[int]:
    """The resolution levels that hold decoder sites of ``kind``, coarse to fine."""
    return sorted({s.level for s in layers.of_kind(kind) if s.section == "up"}, reverse=True)


def choose(layers: UNetLayers, kind: str, where: Callable[[Site], bool], what: str) -> frozenset[str]:
    """Module names of the sites of ``kind`` that ``where`` accepts; none is an error naming ``what``."""
    chosen = frozenset(s.module_name for s in layers.of_kind(kind) if where(s))
    if not chosen:
        levels = ", ".join(str(v) for v in sorted({s.level for s in layers.of_kind(kind)}))
        raise HRVInputError(
            f"{what} selects no {kind} layer of this UNet (its {kind} layers are at resolution levels"
            f" {levels}; level 0 = the latent's full size, each level halves it)"
        )
    return chosen
