"""The cross-attention processor: normal output, the queries HRV votes need, and head interventions.

Only the ``attn2`` (cross-attention) modules get this processor; self attention keeps diffusers'
fused-kernel processor. The normal output is computed with ``scaled_dot_product_attention``
exactly as diffusers' ``AttnProcessor2_0`` does, so measuring never changes generation.

Interventions (spec section 2) multiply the post-softmax probabilities of the *conditional* half
by per-head, per-token factors, without renormalisation. Heads whose factors are all 1 keep the
fused kernel's output, so identity factors give bit-identical images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hrv.heads import CALayer, HeadRegistry


@dataclass
class Intervention:
    """Per-head, per-token factors on the conditional half's post-softmax CA probabilities.

    ``factors``: (B, H, S) for B conditional batch elements (or (1, H, S), broadcast), H heads of
    the registry and S text tokens. Applied at UNet evaluations ``start <= t < end`` (end None =
    to the last).
    """

    factors: torch.Tensor
    start: int = 0
    end: int | None = None

    def active(self, t: int) -> bool:
        return t >= self.start and (self.end is None or t < self.end)


@dataclass
class Controller:
    """State shared by the CA processors of one UNet: evaluation counter and optional hooks."""

    registry: HeadRegistry
    guidance: bool = True  # batch = [unconditional, conditional] halves
    step: int = 0  # index of the current UNet evaluation
    measure: object | None = None  # a VoteMeasure (hrv.accumulate): record(), end_evaluation()
    intervention: Intervention | None = None
    capture: Callable[[CALayer, int, torch.Tensor], None] | None = field(default=None)  # tests/plots
    # explicit attention one batch element at a time: CPU matmuls pick kernels by batch size (a
    # 1-pixel mid block gives matrix-vector products), so this keeps an element's result
    # independent of the batch it is in (with hrv.determinism.make_batch_invariant)
    batch_invariant: bool = False
    _identity_cache: dict = field(default_factory=dict)

    def layer_factors(self, layer: CALayer) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(factors (B|1, heads, S), identity mask (B|1, heads)) for a layer, or None if inactive."""
        iv = self.intervention
        if iv is None or not iv.active(self.step):
            return None
        # the cache holds the factors tensor itself: keying by id() alone could match a new tensor
        # that reuses a freed tensor's id, and apply stale identity masks
        if self._identity_cache.get("factors") is not iv.factors:
            self._identity_cache = {"factors": iv.factors}
        cached = self._identity_cache.get(layer.position)
        if cached is None:
            f = iv.factors[:, layer.head_slice, :]
            identity = (f == 1).all(dim=-1)
            cached = (f, identity, bool(identity.all()))
            self._identity_cache[layer.position] = cached
        f, identity, all_identity = cached
        return None if all_identity else (f, identity)


def _batched(per_element: bool, fn: Callable, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``fn(a, b)``, computed one leading-batch element at a time when ``per_element``."""
    if not per_element or a.shape[0] == 1:
        return fn(a, b)
    return torch.cat([fn(a[i : i + 1], b[i : i + 1]) for i in range(a.shape[0])])


class CrossAttnProcessor:
    def __init__(self, controller: Controller, layer: CALayer):
        self.controller = controller
        self.layer = layer

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        ctl = self.controller
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )

        # conditional half: the second half of the batch under classifier-free guidance
        cond = slice(batch_size // 2, batch_size) if ctl.guidance else slice(0, batch_size)
        if ctl.measure is not None:
            ctl.measure.record(attn, self.layer, query[cond])
        factors = ctl.layer_factors(self.layer)
        if factors is not None or ctl.capture is not None:
            q, k, v = query[cond], key[cond], value[cond]
            probs = _batched(ctl.batch_invariant, lambda q, k: q @ k.transpose(-1, -2), q, k)
            probs = torch.softmax(probs * attn.scale, dim=-1)  # (B, heads, HW, S)
            if factors is not None:
                f, identity = factors
                probs = probs * f[:, :, None, :].to(probs.dtype)
                steered = _batched(ctl.batch_invariant, torch.matmul, probs, v)
                keep = identity[:, :, None, None].expand_as(steered)
                out = out.clone()
                out[cond] = torch.where(keep, out[cond], steered)
            if ctl.capture is not None:
                ctl.capture(self.layer, ctl.step, probs)

        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def installed(unet: torch.nn.Module, controller: Controller) -> Iterator[Controller]:
    """Install the CA processors and the evaluation counter; restore the originals on exit."""
    originals = {}
    for layer in controller.registry.layers:
        module = unet.get_submodule(layer.module_name)
        originals[layer.module_name] = module.processor
        module.set_processor(CrossAttnProcessor(controller, layer))

    def count(_module, _args, _output):
        if controller.measure is not None:
            controller.measure.end_evaluation(controller.step)
        controller.step += 1

    handle = unet.register_forward_hook(count)
    try:
        yield controller
    finally:
        handle.remove()
        for name, proc in originals.items():
            unet.get_submodule(name).set_processor(proc)
