"""Which operations make a GPU's votes depend on the batch size, and does strict mode remove it?

1. One UNet evaluation at 8 prompts (16 rows with guidance) records the inputs of every
   convolution, linear layer, group/layer norm and attention module; each module is then re-run on
   the first 1 and 4 rows, and a module is "batch-variant" where those rows' outputs differ bitwise
   from the full batch's (with cuDNN's deterministic flag off and on).
2. The vote's own product and softmax-sum, on the same test.
3. Votes accumulated with batch sizes 1 and 4, with the default patches and with
   ``make_batch_invariant(pipe, strict=True)`` (every linear layer and convolution one sample at a
   time); and the cost of strict mode on plain sampling.

    python benchmarks/diagnose_gpu_invariance.py --arch sd14 --dtype float16 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from bench_hrv import ROOT, add_model_args, benchmark_pipeline  # noqa: E402
from check_invariance import votes_by_batch_size  # noqa: E402

from hrv.accumulate import VoteMeasure, WordBank  # noqa: E402
from hrv.concepts import read_concepts  # noqa: E402
from hrv.determinism import make_batch_invariant  # noqa: E402
from hrv.models import initial_latents  # noqa: E402
from hrv.prompts import read_prompts  # noqa: E402


def unpatch(pipe) -> None:
    for name in ("unet", "text_encoder"):
        for m in getattr(pipe, name).modules():
            if hasattr(m, "_hrv_batch_invariant"):
                del m.forward, m._hrv_batch_invariant


def cut(x, k: int, n: int):
    return x[:k] if isinstance(x, torch.Tensor) and x.ndim and x.shape[0] == n else x


def first(y):
    return y[0] if isinstance(y, tuple) else y


def module_check(pipe, n_rows: int) -> None:
    from diffusers.models.attention_processor import Attention

    kinds = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm, Attention)
    captured, handles = {}, []
    for name, m in pipe.unet.named_modules():
        if isinstance(m, kinds):

            def hook(mod, args, kwargs, name=name):
                captured.setdefault(name, (mod, args, kwargs))

            handles.append(m.register_forward_pre_hook(hook, with_kwargs=True))
    unet = pipe.unet
    gen = torch.Generator("cpu").manual_seed(0)
    shape = (n_rows, unet.config.in_channels, 32, 32)
    x = torch.randn(shape, generator=gen).to(pipe.device, unet.dtype)
    emb = torch.randn((n_rows, 77, unet.config.cross_attention_dim), generator=gen).to(
        pipe.device, unet.dtype
    )
    with torch.no_grad():
        full = unet(x, 500, encoder_hidden_states=emb).sample
        for h in handles:
            h.remove()
        for k in (2, 8):
            part = unet(x[:k], 500, encoder_hidden_states=emb[:k]).sample
            print(
                f"  whole UNet, rows 0..{k - 1} alone vs in {n_rows}: {'equal' if torch.equal(full[:k], part) else 'DIFFERENT'}"
            )
        for det in (False, True):
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = det, False
            bad, total = Counter(), Counter()
            for mod, args, kwargs in captured.values():
                kind = type(mod).__name__
                total[kind] += 1
                whole = first(mod(*args, **kwargs))
                for k in (2, 4):  # guidance always gives the UNet 2 rows or more
                    part = first(
                        mod(
                            *(cut(a, k, n_rows) for a in args),
                            **{a: cut(v, k, n_rows) for a, v in kwargs.items()},
                        )
                    )
                    if not torch.equal(whole[:k], part):
                        bad[kind] += 1
                        break
            print(
                f"  cudnn.deterministic={det}: batch-variant modules: "
                + ", ".join(f"{k} {bad[k]}/{total[k]}" for k in total)
            )
        torch.backends.cudnn.deterministic = False


def vote_ops_check(device: str) -> None:
    gen = torch.Generator("cpu").manual_seed(1)
    bias = torch.zeros((32, 1, 1, 45))
    bias[..., 40:] = -torch.inf
    for hw, d in ((4096, 40), (1024, 80), (256, 160), (64, 160)):
        q = torch.randn((32, 8, hw, d), generator=gen).to(device)
        k = torch.randn((32, 8, d, 45), generator=gen).to(device) / d**0.5
        b = bias.to(device)

        def f(q, k, b):
            return VoteMeasure._softmax_sums(torch.matmul(q, k), b)

        whole = f(q, k, b)
        same = all(torch.equal(whole[:n], f(q[:n], k[:n], b[:n])) for n in (1, 4, 8))
        print(f"  vote product + softmax-sum, HW={hw} d={d}: {'invariant' if same else 'BATCH-VARIANT'}")


def e2e(pipe, concepts, prompts, bank, kw, sizes) -> None:
    out = votes_by_batch_size(pipe, concepts, prompts, bank, kw, sizes)
    ref = out[sizes[0]]
    for b in sizes[1:]:
        same = np.array_equal(out[b], ref)
        equal = np.mean(out[b] == ref) * 100
        print(
            f"    batch {b} vs {sizes[0]}: {'IDENTICAL' if same else 'different'} ({equal:.2f}% cells equal)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, device="cuda")
    ap.add_argument("--size", type=int, default=256, help="image side for the invariance checks")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--time-size", type=int, default=512, help="image side for timing strict mode (0: skip)")
    ap.add_argument("--time-steps", type=int, default=50)
    args = ap.parse_args()
    pipe = benchmark_pipeline(args.arch, args.device, args.dtype)
    print(f"== {args.arch} {pipe.unet.dtype} on {pipe.device} (torch {torch.__version__})", flush=True)
    make_batch_invariant(pipe)
    print("1. modules (default patches: linear layers as per-sample bmm)", flush=True)
    module_check(pipe, 16)
    print("2. the vote's operations", flush=True)
    vote_ops_check(args.device)
    concepts = read_concepts(ROOT / "resources/concepts/concepts_34x10.csv")
    prompts = read_prompts([ROOT / "resources/prompts/imagenet_1000.txt"], args.prompts)
    bank = WordBank.build(pipe, concepts)
    kw = dict(steps=args.steps, guidance_scale=7.5, height=args.size, width=args.size)
    sizes = [1, args.prompts]
    print(f"3. votes, {args.prompts} prompts, {args.size} px, {args.steps} steps", flush=True)
    print("  default:", flush=True)
    e2e(pipe, concepts, prompts, bank, kw, sizes)
    make_batch_invariant(pipe, strict=True)
    print("  strict:", flush=True)
    e2e(pipe, concepts, prompts, bank, kw, sizes)
    if not args.time_size:
        return
    n, size = 8, args.time_size
    timing_prompts = read_prompts([ROOT / "resources/prompts/imagenet_1000.txt"], n)

    def plain() -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        pipe(
            timing_prompts,
            latents=initial_latents(pipe, range(n), 0, size, size),
            num_inference_steps=args.time_steps,
            guidance_scale=7.5,
            height=size,
            width=size,
            output_type="latent",
        )
        torch.cuda.synchronize()
        return time.perf_counter() - t

    times = {"default": [], "strict": []}
    with torch.no_grad():
        for rnd in range(3):
            for mode in ("default", "strict"):
                unpatch(pipe)
                make_batch_invariant(pipe, strict=mode == "strict")
                dt = plain()
                if rnd:  # the first round warms up
                    times[mode].append(dt)
    d, s = min(times["default"]), min(times["strict"])
    print(
        f"4. plain sampling, {n} prompts, {size} px, {args.time_steps} steps: default {d:.2f} s, strict {s:.2f} s"
        f" ({100 * (s / d - 1):+.1f}%)",
        flush=True,
    )


if __name__ == "__main__":
    main()
