"""The processor, written once: attention of self- and cross-attention sites, with the active edits.

A call without an active edit is diffusers' ``AttnProcessor2_0`` (the fused
``scaled_dot_product_attention``), so plain sampling through it is bit-identical and costs nothing.
With edits: ``qkv`` hooks change the queries/keys/values before the fused kernel; ``maps`` hooks
get explicit post-softmax maps (computed as the module says: ``upcast_attention``,
``upcast_softmax``) and the rows and heads whose maps they changed take ``maps @ v`` in place of
the fused output, so every other row and head (the source branch, the unconditional half) stays
bit-identical. Where the only maps edits are ``SourceMaps`` (a target's self-attention maps := its
source's), explicit maps are computed for the source rows only. ResBlocks are hooked at their
residual branch's output (``conv2``, before the shortcut is added) only when an edit asks for
``features``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from hrv.control.edit import Call, Edit, Layout
from hrv.control.layers import Site, UNetLayers
from hrv.control.standard import SourceMaps


class Controller:
    """State shared by the processors of one UNet: the edits, the batch layout and the evaluation
    counter (``step``: the index of the current UNet evaluation, advanced after each)."""

    def __init__(
        self, edits: Sequence[Edit] = (), *, layout: Layout | None = None, batch_invariant: bool = False
    ):
        self.edits = list(edits)
        self.layout = layout or Layout()
        # explicit attention one batch element at a time: CPU matmuls pick kernels by batch size (a
        # 1-pixel mid block gives matrix-vector products), so this keeps an element's result
        # independent of the batch it is in (with hrv.determinism.make_batch_invariant)
        self.batch_invariant = batch_invariant
        self.step = 0

    def current_edits(self) -> Sequence[Edit]:
        return self.edits

    def kinds(self) -> set[str]:
        """Site kinds to install processors/hooks on (fixed when installed)."""
        return set().union(*(e.kinds for e in self.current_edits()))

    def rows(self, edit: Edit, n: int) -> tuple[slice, int]:
        """The rows of an ``n``-row batch that ``edit``'s hooks get, and how many halves they hold."""
        if not self.layout.guidance:
            return slice(0, n), 1
        if edit.halves == "both":
            return slice(0, n), 2
        return slice(n // 2, n), 1


def batched(per_element: bool, fn: Callable, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``fn(a, b)``, computed one leading-batch element at a time when ``per_element``."""
    if not per_element or a.shape[0] == 1:
        return fn(a, b)
    return torch.cat([fn(a[i : i + 1], b[i : i + 1]) for i in range(a.shape[0])])


def attention_probs(
    attn,
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None = None,
    per_element: bool = False,
) -> torch.Tensor:
    """Post-softmax maps (rows, heads, queries, keys) as the module computes them: logits in float32
    when ``attn.upcast_attention``, the softmax in float32 when ``attn.upcast_softmax``, the maps
    returned in the queries' dtype (diffusers' ``Attention.get_attention_scores``)."""
    dtype = query.dtype
    if getattr(attn, "upcast_attention", False):
        query, key = query.float(), key.float()
    logits = batched(per_element, lambda q, k: q @ k.transpose(-1, -2), query, key) * attn.scale
    if mask is not None:
        logits = logits + mask
    if getattr(attn, "upcast_softmax", False):
        logits = logits.float()
    return torch.softmax(logits, dim=-1).to(dtype)


def _put(full: torch.Tensor, rows: slice, part: torch.Tensor) -> torch.Tensor:
    """``full`` with ``rows`` replaced by ``part`` (a new tensor: autograd-safe)."""
    return torch.cat([full[: rows.start], part, full[rows.stop :]])


class ControlProcessor:
    """The attention processor of one self- or cross-attention site."""

    def __init__(self, controller: Controller, site: Site):
        self.controller = controller
        self.site = site

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        ctl, site = self.controller, self.site
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

        step, n = ctl.step, batch_size
        edits = [e for e in ctl.current_edits() if e.wants(site, step, query.shape[2])]
        for edit in edits:
            if edit.has("qkv"):
                rows, halves = ctl.rows(edit, n)
                call = Call(site, step, attn, ctl.layout, halves, rows.stop - rows.start)
                changed = edit.qkv(call, query[rows], key[rows], value[rows])
                if changed is not None:
                    query, key, value = (
                        _put(t, rows, c) for t, c in zip((query, key, value), changed, strict=True)
                    )

        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )

        map_edits = [e for e in edits if e.has("maps")]
        if map_edits and attention_mask is None and all(isinstance(e, SourceMaps) for e in map_edits):
            out = self._source_maps(attn, map_edits, query, key, value, out)
        elif map_edits:
            out = self._edit_maps(attn, map_edits, query, key, value, attention_mask, out)

        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _edit_maps(self, attn, edits: list[Edit], query, key, value, mask, out: torch.Tensor) -> torch.Tensor:
        """Explicit maps of the rows the edits ask for, handed through the edits in order; the rows
        and heads whose maps changed take ``maps @ v`` instead of the fused output."""
        ctl, n = self.controller, out.shape[0]
        spans = [ctl.rows(e, n) for e in edits]
        rows = min((s for s, _ in spans), key=lambda s: s.start)  # the widest: both halves if any asks
        probs = attention_probs(
            attn, query[rows], key[rows], None if mask is None else mask[rows], ctl.batch_invariant
        )
        maps = probs
        for edit, (span, halves) in zip(edits, spans, strict=True):
            inner = slice(span.start - rows.start, span.stop - rows.start)
            call = Call(self.site, ctl.step, attn, ctl.layout, halves, span.stop - span.start)
            new = edit.maps(call, maps[inner])
            if new is not None:
                maps = new if inner == slice(0, maps.shape[0]) else _put(maps, inner, new)
        if maps is probs:
            return out
        changed = (maps != probs).flatten(2).any(dim=-1)  # (rows, heads)
        steered = batched(ctl.batch_invariant, torch.matmul, maps.to(value.dtype), value[rows])
        out = out.clone()
        out[rows] = torch.where(changed[:, :, None, None], steered, out[rows])
        return out

    def _source_maps(
        self, attn, edits: list[SourceMaps], query, key, value, out: torch.Tensor
    ) -> torch.Tensor:
        """``_edit_maps`` for copies of the source's maps, without the targets' own maps: each
        target row takes ``source maps @ its values``. A head whose queries and keys equal the
        source's (so would its maps) keeps the fused output, as ``_edit_maps`` would keep it."""
        ctl, n = self.controller, out.shape[0]
        targets, sources = [], []
        for edit in edits:
            span, halves = ctl.rows(edit, n)
            call = Call(self.site, ctl.step, attn, ctl.layout, halves, span.stop - span.start)
            targets.append(call.rows(edit.slot) + span.start)
            sources.append(call.rows(0) + span.start)
        targets, sources = torch.cat(targets), torch.cat(sources)
        computed, source_of = torch.unique(sources, return_inverse=True)  # each source's maps once
        probs = attention_probs(attn, query[computed], key[computed], None, ctl.batch_invariant)
        copied = probs[source_of].to(value.dtype)
        steered = batched(ctl.batch_invariant, torch.matmul, copied, value[targets])
        same = [(t[targets] == t[sources]).flatten(2).all(dim=-1) for t in (query, key)]  # (rows, heads)
        out = out.clone()
        out[targets] = torch.where((same[0] & same[1])[:, :, None, None], out[targets], steered)
        return out


def _feature_hook(controller: Controller, site: Site):
    def hook(_module, _args, output: torch.Tensor) -> torch.Tensor:
        step, n = controller.step, output.shape[0]
        positions = output.shape[-2] * output.shape[-1]
        for edit in controller.current_edits():
            if edit.has("features") and edit.wants(site, step, positions):
                rows, halves = controller.rows(edit, n)
                call = Call(site, step, None, controller.layout, halves, rows.stop - rows.start)
                new = edit.features(call, output[rows])
                if new is not None:
                    output = _put(output, rows, new)
        return output

    return hook


@contextlib.contextmanager
def installed(
    unet: torch.nn.Module, controller: Controller, kinds: set[str] | None = None
) -> Iterator[Controller]:
    """Install the processors (and ResBlock hooks) on the sites of ``kinds`` (default: the kinds of
    the controller's edits) and the evaluation counter; restore the originals on exit."""
    kinds = controller.kinds() if kinds is None else set(kinds)
    layers = UNetLayers.from_unet(unet)
    originals, handles = {}, []
    try:
        for site in layers.sites:
            if site.kind not in kinds:
                continue
            module = unet.get_submodule(site.module_name)
            if site.kind == "resnet":
                handles.append(module.conv2.register_forward_hook(_feature_hook(controller, site)))
            else:
                originals[site.module_name] = module.processor
                module.set_processor(ControlProcessor(controller, site))

        def count(_module, _args, _output):
            for edit in controller.current_edits():
                edit.end_evaluation(controller.step)
            controller.step += 1

        handles.append(unet.register_forward_hook(count))
        yield controller
    finally:
        for handle in handles:
            handle.remove()
        for name, proc in originals.items():
            unet.get_submodule(name).set_processor(proc)
