"""Throughput of the ordered-weakening sweep: all k values in one sampling batch vs one run per k.

Both variants produce the same images bit for bit (tests/test_weakening.py); this prints their
images/s measured in one run on the same model, prompts and seeds, and the ratio (target >= 2x on
CPU with the tiny model). Repeats alternate the two variants so machine load hits both alike.

    python benchmarks/bench_weakening.py                         # tiny model, CPU
    python benchmarks/bench_weakening.py --model sd14 --device cuda --size 512 --steps 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

from hrv.models import load_pipeline, save_tiny_model  # noqa: E402
from hrv.weakening import head_order, sample_weakened  # noqa: E402

PROMPTS = ["a red car", "photo of a cat"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder, preset or hub id (default: the tiny model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument(
        "--k", type=int, nargs="+", default=[0, 1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111, 121, 128]
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or save_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    pipe = load_pipeline(model, device=args.device, dtype=args.dtype)
    n_heads = sum(m.heads for n, m in pipe.unet.named_modules() if n.endswith("attn2"))
    ks = [k for k in args.k if k <= n_heads]
    order = head_order(np.random.default_rng(0).random(n_heads), "MoRHF")
    sampling = {"steps": args.steps, "guidance_scale": 7.5, "height": args.size, "width": args.size}

    def batched() -> int:
        for p in PROMPTS:
            sample_weakened(pipe, p, 10, order, ks, sampling=sampling)
        return len(PROMPTS) * len(ks)

    def per_k() -> int:
        for p in PROMPTS:
            for k in ks:
                sample_weakened(pipe, p, 10, order, [k], sampling=sampling)
        return len(PROMPTS) * len(ks)

    sample_weakened(pipe, PROMPTS[0], 10, order, ks[:2], sampling=sampling)  # warm-up
    times = {"batched": 0.0, "per_k": 0.0}
    images = {"batched": 0, "per_k": 0}
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("per_k", per_k)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            images[name] += fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name] += time.perf_counter() - t0
    rate = {n: images[n] / times[n] for n in times}
    print(f"model={model} device={args.device} size={args.size} steps={args.steps} k values={len(ks)}")
    print(
        f"batched sweep : {rate['batched']:.3f} images/s ({images['batched']} images, {times['batched']:.1f} s)"
    )
    print(f"one run per k : {rate['per_k']:.3f} images/s ({images['per_k']} images, {times['per_k']:.1f} s)")
    print(f"speed-up      : {rate['batched'] / rate['per_k']:.2f}x (target >= 2x on CPU)")


if __name__ == "__main__":
    main()
