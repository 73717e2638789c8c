"""Batch invariance: a prompt's result must not depend on which other prompts share its batch.

Dense layers fold the batch into the GEMM's row count, and BLAS picks different kernels (and so
different rounding) for different row counts: on CPU a prompt sampled in a batch of 4 differs from
the same prompt alone by ~1e-6, enough to flip a near-tied vote. Computing every ``nn.Linear`` as
one GEMM per batch element (``bmm`` over a broadcast weight) removes that dependence, at no
measured cost on the tiny model. On the CPU, convolutions, group norms and SDPA were measured
batch-invariant for every UNet batch of at least 2 (classifier-free guidance always gives 2 or more),
except 1x1 convolutions from 16 batch elements on: those run in chunks of 8 (bit-identical to any
batch of 2..15).

On a GPU (H200, benchmarks/diagnose_gpu_invariance.py) cuDNN chooses convolution algorithms by batch
size (24 of 97 convolutions of the tiny UNet, 39 of 98 of SD v1.4's, rounded differently in a
smaller batch; the deterministic flag does not change that), as cuBLAS does for one of the bmm'd
linear layers: 99.97% of vote cells agree across batch sizes. ``strict`` runs every linear layer and
convolution one batch element at a time, which made the votes identical there, at a cost (plain
sampling of SD v1.4 at 512 px took 3.6x as long).
"""

from __future__ import annotations

import types

import torch

from hrv.models import unet_device


def _per_sample_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    if x.ndim < 2:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    x3 = x.reshape(shape[0], -1, shape[-1])
    y = torch.bmm(x3, self.weight.t().unsqueeze(0).expand(shape[0], -1, -1))
    if self.bias is not None:
        y = y + self.bias
    return y.reshape(*shape[:-1], self.out_features)


def _looped_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.ndim < 2:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    return torch.cat(
        [torch.nn.functional.linear(x[i : i + 1], self.weight, self.bias) for i in range(len(x))]
    )


# on the CPU a 1x1 convolution (the transformer blocks' proj_in/proj_out in SD 1.x) rounds differently
# from 16 batch elements on (oneDNN picks another algorithm); 2..15 give the same bits
_CONV_CHUNK = 8


def _chunked_conv(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The convolution in chunks of 2..15 batch elements (the last chunk takes a lone remainder)."""
    n = len(x)
    if n < 2 * _CONV_CHUNK:
        return self._conv_forward(x, self.weight, self.bias)
    starts = list(range(0, n - _CONV_CHUNK - 1, _CONV_CHUNK)) + [n]
    if n - starts[-2] > 2 * _CONV_CHUNK - 1:
        starts.insert(-1, starts[-2] + _CONV_CHUNK)
    return torch.cat(
        [
            self._conv_forward(x[a:b], self.weight, self.bias)
            for a, b in zip(starts[:-1], starts[1:], strict=True)
        ]
    )


def _looped_conv(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([self._conv_forward(x[i : i + 1], self.weight, self.bias) for i in range(len(x))])


def make_batch_invariant(pipe, strict: bool = False) -> None:
    """Patch the dense layers of the UNet and text encoders of ``pipe`` (idempotent).

    ``strict`` computes every linear layer and convolution one batch element at a time, so each
    runs the same kernel whatever the batch: for GPUs, where cuBLAS and cuDNN choose kernels (and
    so rounding) by batch size.
    """
    if unet_device(pipe).type == "cuda":
        # the same algorithm for the same shape on every run (cuDNN's autotuner may pick another)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    on_cpu = unet_device(pipe).type == "cpu"
    mode = "loop" if strict else "bmm"
    linear = _looped_linear if strict else _per_sample_linear
    for name in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for m in module.modules():
            if getattr(m, "_hrv_batch_invariant", None) in (mode, "loop"):
                continue
            if type(m) is torch.nn.Linear:
                m.forward = types.MethodType(linear, m)
                m._hrv_batch_invariant = mode
            elif strict and type(m) is torch.nn.Conv2d:
                m.forward = types.MethodType(_looped_conv, m)
                m._hrv_batch_invariant = mode
            elif on_cpu and type(m) is torch.nn.Conv2d and m.kernel_size == (1, 1):
                m.forward = types.MethodType(_chunked_conv, m)
                m._hrv_batch_invariant = mode
