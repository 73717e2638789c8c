"""Where an edit can act: every self-attention, cross-attention and ResBlock site of a UNet.

Discovered from the model by section (down/mid/up), block and resolution level, never from
hard-coded module counts, so a layer choice written for SD 1.x also means something on SD 2.x
and SDXL. Cross-attention sites carry the head registry's ``CALayer`` (global head indices,
the paper's layer names), which HRVs and votes are indexed by.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from hrv.errors import HRVInputError
from hrv.heads import CALayer, HeadRegistry, section_of, unet_modules

KINDS = ("self", "cross", "resnet")
_SUFFIX = {"self": "attn1", "cross": "attn2", "resnet": r"resnets\.\d+"}


@dataclass(frozen=True)
class Site:
    """One place of the UNet an edit can act on."""

    module_name: str  # e.g. "up_blocks.1.attentions.2.transformer_blocks.0.attn1"
    kind: str  # "self" (attn1), "cross" (attn2) or "resnet" (a ResBlock)
    section: str  # "down", "mid" or "up"
    block: int  # index of its block in the section (down_blocks.<block>; 0 in the mid block)
    index: int  # index among the section's sites of this kind (for cross: the paper's "layer")
    position: int  # index among all sites of this kind, in execution order
    level: int  # times the latent was halved before this site: (h >> level) x (w >> level) queries
    ca: CALayer | None = None  # cross sites: the head registry's layer (heads, head offset)
    sub: int = 0  # index of its attentions.<sub> / resnets.<sub> module within the block

    def query_positions(self, latent_height: int, latent_width: int) -> int:
        """Query positions (pixels) of the site for a latent of this size (ceil at odd sizes)."""
        side = lambda n: -(-n // 2**self.level)  # noqa: E731
        return side(latent_height) * side(latent_width)


def _levels(unet: torch.nn.Module) -> dict[tuple[str, int], int]:
    """Resolution level of every block: how many down-samplers come before it."""
    levels, level = {}, 0
    for i, block in enumerate(unet.down_blocks):
        levels["down", i] = level
        level += getattr(block, "downsamplers", None) is not None
    levels["mid", 0] = level
    for i, block in enumerate(unet.up_blocks):
        levels["up", i] = level
        level -= getattr(block, "upsamplers", None) is not None
    return levels


def _sub_of(module_name: str) -> int:
    m = re.search(r"\.(?:attentions|resnets)\.(\d+)", module_name)
    return int(m.group(1)) if m else 0


def _block_of(module_name: str) -> int:
    m = re.match(r"^(?:down_blocks|up_blocks)\.(\d+)\.", module_name)
    return int(m.group(1)) if m else 0


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class UNetLayers:
    """Every editable site of a UNet, each kind in execution order (down -> mid -> up)."""

    sites: tuple[Site, ...]
    heads: HeadRegistry

    @classmethod
    def from_unet(cls, unet: torch.nn.Module) -> UNetLayers:
        """The UNet's sites (cached per UNet: walking its modules costs milliseconds per call)."""
        cached = _CACHE.get(unet)
        if cached is None:
            cached = _CACHE[unet] = cls._discover(unet)
        return cached

    @classmethod
    def _discover(cls, unet: torch.nn.Module) -> UNetLayers:
        heads = HeadRegistry.from_unet(unet)
        ca = {layer.module_name: layer for layer in heads.layers}
        levels = _levels(unet)
        sites = []
        for kind in KINDS:
            per_section: dict[str, int] = {}
            for position, name in enumerate(unet_modules(unet, _SUFFIX[kind])):
                section, block = section_of(name), _block_of(name)
                index = per_section.get(section, 0)
                per_section[section] = index + 1
                sites.append(
                    Site(
                        name,
                        kind,
                        section,
                        block,
                        index,
                        position,
                        levels[section, block],
                        ca.get(name),
                        _sub_of(name),
                    )
                )
        return cls(tuple(sites), heads)

    def of_kind(self, kind: str) -> tuple[Site, ...]:
        if kind not in KINDS:
            raise HRVInputError(f"unknown site kind {kind!r}; choose from {', '.join(KINDS)}")
        return tuple(s for s in self.sites if s.kind == kind)

    def select(
        self,
        kind: str,
        *,
        section: str | Iterable[str] | None = None,
        blocks: Iterable[int] | None = None,
        positions: Iterable[int] | None = None,
        where: Callable[[Site], bool] | None = None,
    ) -> frozenset[str]:
        """Module names of the sites of ``kind`` in ``section``(s), ``blocks`` of the section and
        execution ``positions`` among the sites of that kind; an empty choice is an error."""
        sections = {section} if isinstance(section, str) else set(section) if section else None
        blocks = None if blocks is None else set(blocks)
        positions = None if positions is None else set(positions)
        chosen = [
            s
            for s in self.of_kind(kind)
            if (sections is None or s.section in sections)
            and (blocks is None or s.block in blocks)
            and (positions is None or s.position in positions)
            and (where is None or where(s))
        ]
        if not chosen:
            raise HRVInputError(
                f"no {kind} site of this UNet matches section={section}, blocks={blocks}, positions={positions}"
                f" (it has {len(self.of_kind(kind))} {kind} sites)"
            )
        return frozenset(s.module_name for s in chosen)
