"""Plain references written for the tests, sharing no code with the package under test.

- ``readme_latent``: the README's formula for prompt i's initial latent,
  ``randn((1, C, height // f, width // f), generator=Generator("cpu").manual_seed(seed + i))``.
- ``reference_sample``: sampling with every cross-attention (``attn2``) module replaced by explicit
  attention whose conditional half's post-softmax probabilities are multiplied by a plain
  (heads, tokens) factor table. Heads are numbered in the order their layers first run (down, mid,
  up), found here by watching the calls, not from ``hrv.heads``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def readme_latent(pipe, seed: int, height: int, width: int) -> torch.Tensor:
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    shape = (1, pipe.unet.config.in_channels, height // f, width // f)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


class _ExplicitCrossAttention:
    """softmax(q k^T / sqrt(d)) v per head; conditional-half probabilities times ``table[head, token]``."""

    def __init__(self, state: dict):
        self.state = state
        self.offset: int | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        assert attention_mask is None and attn.spatial_norm is None and attn.group_norm is None
        assert hidden_states.ndim == 3 and not attn.residual_connection and attn.rescale_output_factor == 1
        if self.offset is None:  # the first call of this layer: its heads follow those already seen
            self.offset = self.state["heads_seen"]
            self.state["heads_seen"] += attn.heads
        b, n, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        d = q.shape[-1] // attn.heads

        def split(x):
            return x.reshape(b, -1, attn.heads, d).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # (b, heads, n, tokens)
        table = self.state["table"][self.offset : self.offset + attn.heads]  # (heads, tokens)
        cond = torch.arange(b) >= b // 2  # [unconditional, conditional] halves
        scale = torch.where(cond[:, None, None, None], table[None, :, None, :], torch.ones(()))
        out = (probs * scale) @ v
        out = attn.to_out[0](out.transpose(1, 2).reshape(b, n, attn.heads * d))
        return attn.to_out[1](out)


@contextlib.contextmanager
def explicit_cross_attention(pipe, table: np.ndarray | torch.Tensor) -> Iterator[dict]:
    """Every ``attn2`` module of the UNet gets the explicit processor; the originals come back after."""
    state = {"heads_seen": 0, "table": torch.as_tensor(np.asarray(table), dtype=torch.float32)}
    modules = {name: m for name, m in pipe.unet.named_modules() if name.endswith("attn2")}
    originals = {name: m.processor for name, m in modules.items()}
    try:
        for m in modules.values():
            m.set_processor(_ExplicitCrossAttention(state))
        yield state
    finally:
        for name, m in modules.items():
            m.set_processor(originals[name])


@torch.no_grad()
def reference_sample(
    pipe, prompt: str, seed: int, table, *, steps: int, guidance_scale: float, height: int, width: int
):
    """(PIL image, final latent) of ``prompt`` from the README latent of ``seed`` with ``table``'s factors."""
    with explicit_cross_attention(pipe, table) as state:
        latent = pipe(
            prompt,
            latents=readme_latent(pipe, seed, height, width),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            output_type="latent",
        ).images
    assert state["heads_seen"] == len(table), "the factor table must have one row per head"
    vae = pipe.vae
    image = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
    array = (image[0].permute(1, 2, 0) / 2 + 0.5).clamp(0, 1).numpy()
    return (array * 255).round().astype(np.uint8), latent


def assert_same_image(got, want) -> None:
    """Equal up to float rounding between two attention implementations: at most one level in under
    1% of the pixel values (a head or token column steered wrongly changes a fifth of them or more)."""
    diff = np.abs(np.asarray(got).astype(int) - np.asarray(want).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (int(diff.max()), float((diff > 0).mean()))
