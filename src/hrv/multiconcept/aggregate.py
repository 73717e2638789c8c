"""From captured cross-attention maps to each excited token's highest attention: the methods' maps.

Every method ends the same way (A&E, ``_compute_max_attention_per_index``): a token's map over the
prompt tokens is cut to a slice without SOT, times 100, soft-maxed over the tokens; the token's
channel is smoothed with a 3x3 kernel on a reflect-padded map and its maximum is the token's
value. They differ in how the map is made:

- ``ae`` (A&E and diffusers' pipeline): every head of the CA layers with a quarter of the latent's
  side (ceil(H/32) x ceil(W/32) queries with SD's 8x autoencoder: 16x16 at 512 px), concatenated in diffusers' order (up, down, mid) and averaged; tokens
  1..75 (``[1:-1]``); A&E's kernel (``ae_kernel``: a Gaussian of sigma 0.5 whose formula makes it
  as wide as sigma 0.5*sqrt(2)).
- ``ae_released`` (the HRV repository's ``--run_standard_attend_excite``): the same layers and
  average; tokens 1..76 (``[1:77]``); the correct Gaussian of sigma 0.5 (``gaussian_kernel``).
- ``ae_hrv`` (the HRV repository's A&E-HRV): every head of every CA layer, each head's map brought
  to an eighth of the latent's side (ceil(H/64) x ceil(W/64) with SD's autoencoder, 8x8 at 512 px; larger maps Gaussian-blurred with the OpenCV kernel
  rule and reflect padding, then bicubic, no antialias), and a token's map is the sum over heads of
  ``HRV_concept[h] / H`` times the head's map (the shipped HRVs sum to H: a convex combination);
  tokens 1..76 and the correct Gaussian.
- ``ae_uniform``: ``ae_hrv`` with every weight 1/H, so that a table separates what the HRV adds
  from what all layers at 8x8 add.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hrv.errors import HRVInputError

METHODS = ("sd", "ae", "ae_released", "ae_hrv", "ae_uniform")
EXCITING = METHODS[1:]
_DIFFUSERS_ORDER = {"up": 0, "down": 1, "mid": 2}  # AttentionStore.aggregate_attention(("up", "down", "mid"))


def ae_kernel(size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """A&E's smoothing kernel: its formula exp(-((x - mu) / (2 sigma))^2) is a Gaussian of
    sigma*sqrt(2); normalised to sum 1 (centre 0.3319 for 3x3, sigma 0.5)."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-((x / (2 * sigma)) ** 2))
    k = torch.outer(g, g)
    return k / k.sum()


def gaussian_kernel(size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """The Gaussian exp(-x^2 / (2 sigma^2)), as the HRV repository's smoothing builds it (centre 0.619)."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    k = torch.outer(g, g)
    return k / k.sum()


def blur_kernel_size(side: int, target: int) -> tuple[int, float]:
    """The released A&E-HRV's anti-alias blur before bicubic downsampling from ``side`` to
    ``target``: kernel side//target + 1 (made odd, torchvision needs it; always odd for SD's
    powers of two) and OpenCV's sigma rule 0.3 * ((k - 1) / 2 - 1) + 0.8."""
    k = side // target + 1
    k += 1 - k % 2
    return k, 0.3 * ((k - 1) * 0.5 - 1) + 0.8


def resample_heads(maps: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    """(heads, h, w, T) maps -> (heads, th, tw, T), as the released A&E-HRV brings each head to 8x8."""
    from torchvision.transforms.functional import gaussian_blur

    h, w = maps.shape[1:3]
    if (h, w) == tuple(target):
        return maps
    x = maps.permute(0, 3, 1, 2)  # (heads, T, h, w): tokens as channels
    if h > target[0]:
        ky, sy = blur_kernel_size(h, target[0])
        kx, sx = blur_kernel_size(w, target[1])
        x = gaussian_blur(x, [kx, ky], [sx, sy])
    x = F.interpolate(x, size=tuple(target), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1)


@dataclass(frozen=True)
class MapSite:
    """A captured CA layer: name, section, execution position, head offset and its map's size."""

    name: str
    section: str
    position: int
    offset: int  # global index of its head 0 (the HRV's head order)
    heads: int
    height: int
    width: int


@dataclass(frozen=True)
class Aggregation:
    """How a method reads the captured maps of one image (see the module docstring).

    ``sites``: the CA layers it reads, in the order it combines them; ``target``: the map size of
    ``ae_hrv``/``ae_uniform``; ``n_heads``: all heads of the model (H).
    """

    method: str
    sites: tuple[MapSite, ...]
    token_end: int  # the slice [1:token_end] of the 77 tokens enters the x100 softmax
    kernel: torch.Tensor | None  # 3x3 smoothing kernel, None = no smoothing
    target: tuple[int, int] | None = None
    n_heads: int = 0

    @property
    def names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.sites)

    def token_maps(self, maps: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        """One image's map per excited token: (slots, h, w, 77) (``ae``: one map shared, slots = 1).

        ``maps``: module name -> (heads, queries, 77) of this image. ``weights``: (slots, H) head
        weights of ``ae_hrv`` (HRV rows / H) or ``ae_uniform``.
        """
        if self.target is None:
            stacked = torch.cat(
                [maps[s.name].reshape(-1, s.height, s.width, maps[s.name].shape[-1]) for s in self.sites]
            )
            return (stacked.sum(0) / stacked.shape[0])[None]
        resampled = torch.cat(
            [
                resample_heads(maps[s.name].reshape(s.heads, s.height, s.width, -1), self.target)
                for s in self.sites
            ]
        )  # (H, th, tw, 77), heads in the HRV's order
        if weights is None or weights.shape[1] != resampled.shape[0]:
            raise HRVInputError(f"{self.method} needs head weights for {resampled.shape[0]} heads")
        return torch.einsum("sh,hxyt->sxyt", weights.to(resampled.dtype), resampled)

    def maxima(
        self, maps: dict[str, torch.Tensor], positions: Sequence[int], weights: torch.Tensor | None = None
    ):
        """Each excited token's highest (smoothed) attention, 0-d tensors with autograd."""
        per_slot = self.token_maps(maps, weights)
        out = []
        shared = None
        for slot, position in enumerate(positions):
            if per_slot.shape[0] == 1:  # one map for every token: one softmax
                if shared is None:
                    shared = torch.softmax(per_slot[0][:, :, 1 : self.token_end] * 100, dim=-1)
                probs = shared
            else:
                probs = torch.softmax(per_slot[slot][:, :, 1 : self.token_end] * 100, dim=-1)
            image = probs[:, :, position - 1]
            if self.kernel is not None:
                padded = F.pad(image[None, None], (1, 1, 1, 1), mode="reflect")
                image = F.conv2d(padded, self.kernel.to(padded)[None, None])[0, 0]
            out.append(image.max())
        return out


def build_aggregation(
    method: str, sites: Sequence[MapSite], latent_size: tuple[int, int], smooth: bool = True
):
    """The ``Aggregation`` of ``method`` for a UNet's CA layers (``sites``, execution order) at a
    latent of ``latent_size`` (height, width).

    Map sizes are fixed in latent units, the UNet's levels: ``ae`` reads the maps at 1/4 of the
    latent, ``ae_hrv`` brings every map to 1/8 of it. With SD's 8x autoencoder that is 1/32 and 1/64
    of the image (16x16 and 8x8 at 512 px), as A&E and the released code define them; the toy
    model's 2x autoencoder gets its own UNet's levels (4x4 and 2x2 at 32 px), not 1x1 maps.
    """
    height, width = latent_size
    if method in ("ae", "ae_released"):
        side = (math.ceil(height / 4), math.ceil(width / 4))
        chosen = [s for s in sites if s.height * s.width == side[0] * side[1]]
        if not chosen:
            raise HRVInputError(
                f"{method}: no cross-attention layer has {side[0]}x{side[1]} queries (1/4 of a {height}x{width}"
                f" latent); its layers have {sorted({(s.height, s.width) for s in sites})}"
            )
        chosen.sort(key=lambda s: (_DIFFUSERS_ORDER[s.section], s.position))
        if method == "ae":
            return Aggregation(method, tuple(chosen), 76, ae_kernel())
        return Aggregation(method, tuple(chosen), 77, gaussian_kernel() if smooth else None)
    if method in ("ae_hrv", "ae_uniform"):
        target = (math.ceil(height / 8), math.ceil(width / 8))
        if min(target) < 2:
            raise HRVInputError(
                f"{method}: maps of 1/8 of a {height}x{width} latent are {target[0]}x{target[1]}; the 3x3"
                " smoothing needs at least 2x2: use a latent of at least 16x16 (images of 128 px with SD's"
                " 8x autoencoder)"
            )
        n_heads = sum(s.heads for s in sites)
        return Aggregation(method, tuple(sites), 77, gaussian_kernel() if smooth else None, target, n_heads)
    raise HRVInputError(f"unknown A&E method {method!r}; choose from {', '.join(EXCITING)}")


def attend_excite_loss(maxima: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """A&E's loss: the worst token's 1 - max (the first of ties); None where it is 0 (no update)."""
    worst = max(1.0 - m for m in maxima)
    return worst if worst > 0 else None
