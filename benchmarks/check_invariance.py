"""Are the votes of a device independent of the batch size? (and how close to another device's?)

The tests check shard and batch invariance on the CPU. This script checks it where the tests cannot
run, on a GPU: it accumulates the same prompts with several batch sizes and prints the share of
(step, concept, head) cells whose counts equal those of the first batch size. ``--out`` saves the
counts and ``--compare`` reads counts saved on another device (same settings) and prints their
agreement, which is not expected to be exact (different kernels round differently).

    python benchmarks/check_invariance.py --device cuda --batch-sizes 1,2,4 --out gpu.npz --compare cpu.npz
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from bench_hrv import ROOT, add_model_args, benchmark_pipeline  # noqa: E402

from hrv.accumulate import WordBank, accumulate  # noqa: E402
from hrv.concepts import read_concepts  # noqa: E402
from hrv.prompts import read_prompts  # noqa: E402


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    """Equal cells, and how many of the summed per-concept rankings' top heads agree."""
    equal = float(np.mean(a == b)) * 100
    top_a = np.argsort(-a.sum(0), axis=1, kind="stable")[:, :10]
    top_b = np.argsort(-b.sum(0), axis=1, kind="stable")[:, :10]
    shared = np.mean([len(set(x) & set(y)) for x, y in zip(top_a, top_b, strict=True)])
    return f"{equal:.2f}% of cells equal, top-10 heads per concept shared: {shared:.1f}/10"


def votes_by_batch_size(pipe, concepts, prompts, bank, kw: dict, sizes: list[int]) -> dict[int, np.ndarray]:
    """The votes of ``prompts`` accumulated with each batch size."""
    counts = {}
    for b in sizes:
        t = time.perf_counter()
        counts[b] = accumulate(
            pipe,
            concepts,
            prompts,
            range(len(prompts)),
            seed=0,
            batch_size=b,
            progress=False,
            bank=bank,
            **kw,
        )
        print(f"batch {b}: {counts[b].sum()} votes in {time.perf_counter() - t:.1f} s", flush=True)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--batch-sizes", default="1,2,4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None, help="save the counts (first batch size) here")
    ap.add_argument("--compare", type=Path, default=None, help="counts saved by another run")
    ap.add_argument("--batch-invariant", choices=["true", "strict"], default="true")
    ap.add_argument(
        "--repeat", action="store_true", help="run the first batch size twice: run-to-run equality"
    )
    args = ap.parse_args()

    pipe = benchmark_pipeline(args.arch, args.device, args.dtype)
    concepts = read_concepts(ROOT / "resources/concepts/concepts_34x10.csv")
    prompts = read_prompts([ROOT / "resources/prompts/imagenet_1000.txt"], args.prompts)
    bank = WordBank.build(pipe, concepts)
    invariance = True if args.batch_invariant == "true" else "strict"
    kw = dict(
        steps=args.steps, guidance_scale=7.5, height=args.size, width=args.size, batch_invariant=invariance
    )
    print(
        f"device={pipe.device} dtype={pipe.unet.dtype} arch={args.arch} size={args.size} steps={args.steps}"
        f" prompts={len(prompts)} batch_invariant={args.batch_invariant} torch={torch.__version__}",
        flush=True,
    )
    counts = votes_by_batch_size(
        pipe, concepts, prompts, bank, kw, [int(x) for x in args.batch_sizes.split(",")]
    )
    first, *others = counts
    if args.repeat:
        again = votes_by_batch_size(pipe, concepts, prompts, bank, kw, [first])[first]
        print(
            f"rerun of batch {first}: {'IDENTICAL' if np.array_equal(again, counts[first]) else 'DIFFERENT'}"
        )
    for b in others:
        same = np.array_equal(counts[b], counts[first])
        print(
            f"batch {b} vs batch {first}: {'IDENTICAL' if same else 'DIFFERENT'}; {agreement(counts[b], counts[first])}"
        )
    if args.out:
        np.savez(args.out, counts=counts[first], device=str(pipe.device), dtype=str(pipe.unet.dtype))
    if args.compare:
        ref = np.load(args.compare)
        if ref["counts"].shape != counts[first].shape:
            sys.exit(
                f"{args.compare} holds counts of shape {ref['counts'].shape}, these are {counts[first].shape}:"
                " it was saved with other settings (steps, prompts or model)"
            )
        print(
            f"vs {args.compare} ({ref['device']}, {ref['dtype']}): {agreement(counts[first], ref['counts'])}"
        )


if __name__ == "__main__":
    main()
