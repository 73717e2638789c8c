"""The head registry: every cross-attention (``attn2``) head of a UNet, in UNet execution order.

Discovered from the model, never hard-coded: SD v1.x gives 16 CA layers x 8 heads = 128 heads,
SDXL 70 CA layers (10 or 20 heads each) = 1300 heads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from hrv.errors import HRVInputError

SECTIONS = ("down", "mid", "up")
_SECTION_OF_PREFIX = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
_PAPER_NAME = re.compile(r"^\s*(down|mid|up),\s*layer:\s*(\d+),\s*head:\s*(\d+)\s*$")
_SHORT_NAME = re.compile(r"^\s*(down|mid|up)\.(\d+)/h(\d+)\s*$")


@dataclass(frozen=True)
class CALayer:
    """One cross-attention layer: where it is and which global head indices it owns."""

    module_name: str  # e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    section: str  # "down", "mid" or "up"
    index: int  # CA-layer index within its section (the paper's "layer")
    heads: int
    offset: int  # global index of this layer's head 0
    position: int  # global CA-layer index in execution order

    @property
    def head_slice(self) -> slice:
        return slice(self.offset, self.offset + self.heads)


def _sort_key(module_name: str) -> tuple:
    prefix = module_name.split(".", 1)[0]
    section_rank = SECTIONS.index(_SECTION_OF_PREFIX[prefix])
    # natural order of the numeric path components: block, attention, transformer block
    numbers = tuple(int(x) for x in re.findall(r"\.(\d+)(?=\.|$)", module_name))
    return (section_rank, numbers)


def section_of(module_name: str) -> str:
    """ "down", "mid" or "up" for a module of the UNet's down_blocks, mid_block or up_blocks."""
    return _SECTION_OF_PREFIX[module_name.split(".", 1)[0]]


def unet_modules(unet: torch.nn.Module, suffix: str) -> list[str]:
    """Names of the UNet's modules in its down, mid and up blocks whose last name part is ``suffix``
    (``attn1``, ``attn2``, ``resnets.N``...), in execution order (the sort key is section, then the
    natural order of the numeric path components)."""
    names = [
        name
        for name, _ in unet.named_modules()
        if re.search(rf"(^|\.){suffix}$", name) and name.split(".", 1)[0] in _SECTION_OF_PREFIX
    ]
    return sorted(names, key=_sort_key)


@dataclass(frozen=True)
class HeadRegistry:
    layers: tuple[CALayer, ...]

    @classmethod
    def from_unet(cls, unet: torch.nn.Module) -> HeadRegistry:
        """Find every ``attn2`` module (cross attention) and order them down -> mid -> up."""
        found = []
        for name in unet_modules(unet, "attn2"):
            heads = getattr(unet.get_submodule(name), "heads", None)
            if heads is None:
                raise HRVInputError(f"module {name} has no 'heads' attribute; is this a diffusers UNet?")
            found.append((name, int(heads)))
        if not found:
            raise HRVInputError(
                "the UNet has no cross-attention (attn2) layers; HRVs need a text-conditioned UNet"
            )
        layers, offset, per_section = [], 0, dict.fromkeys(SECTIONS, 0)
        for position, (name, heads) in enumerate(found):
            section = section_of(name)
            layers.append(CALayer(name, section, per_section[section], heads, offset, position))
            per_section[section] += 1
            offset += heads
        return cls(tuple(layers))

    @property
    def n_heads(self) -> int:
        return sum(layer.heads for layer in self.layers)

    def __len__(self) -> int:
        return self.n_heads

    def names(self, style: str = "short") -> list[str]:
        """Stable head names: ``down.0/h3`` (short) or the paper's ``down, layer: 0, head: 3``."""
        out = []
        for layer in self.layers:
            for h in range(layer.heads):
                out.append(format_head(layer.section, layer.index, h, style))
        return out

    def layer_of_head(self) -> list[int]:
        """CA-layer position of every global head index (for grouping plots by layer)."""
        return [layer.position for layer in self.layers for _ in range(layer.heads)]


def format_head(section: str, layer: int, head: int, style: str = "short") -> str:
    if style == "short":
        return f"{section}.{layer}/h{head}"
    if style == "paper":
        return f"{section}, layer: {layer}, head: {head}"
    raise ValueError(f"unknown head-name style {style!r}; use 'short' or 'paper'")


def parse_head(name: str) -> tuple[str, int, int]:
    """(section, layer, head) from a short or paper-style head name."""
    for pattern in (_SHORT_NAME, _PAPER_NAME):
        m = pattern.match(name)
        if m:
            return m.group(1), int(m.group(2)), int(m.group(3))
    raise HRVInputError(f"cannot parse head name {name!r}; expected 'down.0/h3' or 'down, layer: 0, head: 3'")


def to_short_names(names: list[str]) -> list[str]:
    return [format_head(*parse_head(n), style="short") for n in names]
