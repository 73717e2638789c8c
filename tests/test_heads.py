"""Head registry: discovered from the UNet, in execution order, named like the released files."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from hrv.archs import meta_unet
from hrv.heads import HeadRegistry, format_head, parse_head, to_short_names


@functools.cache
def _full_size(arch: str) -> HeadRegistry:
    """The registry of a full-size architecture (on the meta device; SDXL's takes seconds to build)."""
    return HeadRegistry.from_unet(meta_unet(arch))


@pytest.mark.parametrize(
    ("arch", "layers", "heads"), [("sd14", 16, 128), ("sd21", 16, 195), ("sdxl", 70, 1300)]
)
def test_full_size_head_counts(arch, layers, heads):
    registry = _full_size(arch)
    assert (len(registry.layers), registry.n_heads) == (layers, heads)


@pytest.mark.parametrize("arch", ["sd14", "sdxl"])
def test_names_match_released_head_index(root, arch):
    released = np.load(root / f"resources/reference/head_index_{arch}_official.npy")
    registry = _full_size(arch)
    assert registry.names("paper") == [str(h) for h in released]
    assert registry.names() == to_short_names([str(h) for h in released])


def _small_unet(**overrides):
    from diffusers import UNet2DConditionModel

    cfg = dict(
        sample_size=8,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        attention_head_dim=(2, 4, 8),
        transformer_layers_per_block=(1, 2, 3),
        cross_attention_dim=16,
        norm_num_groups=8,
        use_linear_projection=True,
    )
    cfg.update(overrides)
    torch.manual_seed(0)
    return UNet2DConditionModel(**cfg)


def test_sdxl_shaped_count_formula():
    # SDXL's layout on a small config: cross-attention down blocks have layers_per_block
    # attentions, up blocks layers_per_block + 1, each with `depth` transformer blocks.
    unet = _small_unet()
    depth, heads, lpb = (1, 2, 3), (2, 4, 8), 2
    down = [(lpb * depth[b], heads[b]) for b in (1, 2)]
    mid = [(depth[-1], heads[-1])]
    up = [((lpb + 1) * depth[b], heads[b]) for b in (2, 1)]
    expected_layers = sum(n for n, _ in down + mid + up)
    expected_heads = sum(n * h for n, h in down + mid + up)
    registry = HeadRegistry.from_unet(unet)
    assert (len(registry.layers), registry.n_heads) == (expected_layers, expected_heads) == (28, 184)
    # SDXL itself (depths 2 and 10, 10 and 20 heads), layer by layer: the same formula, from its UNet
    sdxl = _full_size("sdxl")
    down = [10] * (lpb * 2) + [20] * (lpb * 10)
    up = [20] * ((lpb + 1) * 10) + [10] * ((lpb + 1) * 2)
    assert [layer.heads for layer in sdxl.layers] == down + [20] * 10 + up
    assert [layer.section for layer in sdxl.layers] == ["down"] * 24 + ["mid"] * 10 + ["up"] * 36


def _execution_order(unet, sample_shape, text_dim, **kwargs) -> list[str]:
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: order.append(name))
        for name, m in unet.named_modules()
        if name.endswith("attn2")
    ]
    with torch.no_grad():
        unet(torch.randn(sample_shape), 10, torch.randn(sample_shape[0], 7, text_dim), **kwargs)
    for h in handles:
        h.remove()
    return order


def test_registry_order_is_execution_order(tiny_pipe):
    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    order = _execution_order(tiny_pipe.unet, (1, 4, 16, 16), tiny_pipe.text_encoder.config.hidden_size)
    assert order == [layer.module_name for layer in registry.layers]
    assert registry.n_heads == 128 and [layer.heads for layer in registry.layers] == [8] * 16
    # named_modules lists up blocks before the mid block; the registry must not
    assert [layer.section for layer in registry.layers] == ["down"] * 6 + ["mid"] + ["up"] * 9


def test_registry_order_sd2_shaped():
    unet = _small_unet(
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        transformer_layers_per_block=1,
    )
    registry = HeadRegistry.from_unet(unet)
    assert _execution_order(unet, (1, 4, 8, 8), 16) == [layer.module_name for layer in registry.layers]
    assert registry.n_heads == 2 * 2 + 2 * 4 + 8 + 3 * 4 + 3 * 2


def test_offsets_and_names_are_consistent(tiny_pipe):
    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    names = registry.names()
    assert len(set(names)) == registry.n_heads
    for layer in registry.layers:
        assert names[layer.offset] == f"{layer.section}.{layer.index}/h0"
    assert registry.layer_of_head()[-1] == 15


def test_head_name_round_trip():
    for style in ("short", "paper"):
        assert parse_head(format_head("mid", 3, 7, style)) == ("mid", 3, 7)
    with pytest.raises(ValueError, match="cannot parse head name"):
        parse_head("middle 3 7")
