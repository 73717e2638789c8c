"""Throughput of editing: P2P-HRV batched over pairs and seeds vs one pair at a time, and the cost
of P2P-HRV over plain P2P, measured in one run.

Batched and one-at-a-time give the same images bit for bit (tests/test_editing.py). Prints pairs
(edited images) per second of each and the ratio (target >= 2x on the CPU with the tiny model),
and the time per edited image of p2p, p2p_self09 (P2P with P2P-HRV's longer self window) and
p2p_hrv, batched alike (target: p2p_hrv at most 5% over p2p). Repeats alternate the variants so
machine load hits them alike. The baselines (``--baselines``: sdedit_0.5, sdedit_0.7, pnp, masactrl,
fpe) are timed the same way, each batched alone with its source (SDEdit: the source batch, then
img2img on its latents), and printed as pairs per second and their time relative to p2p.

    python benchmarks/bench_editing.py                                    # tiny model, CPU
    python benchmarks/bench_editing.py --arch sd14 --device cuda --dtype float16 --size 512 --steps 50
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hrv import add_model_args, benchmark_pipeline  # noqa: E402

from hrv.editing import edit_pairs  # noqa: E402
from hrv.heads import HeadRegistry  # noqa: E402
from hrv.hrvfile import HRVSet  # noqa: E402

PAIRS = [
    ("a blue car", "a red car"),
    ("a green bench", "a white bench"),
    ("a pillow with a stripe pattern", "a pillow with a greek-key pattern"),
    ("a bowl made of wood", "a bowl made of glass"),
]


def random_hrv(pipe) -> HRVSet:
    names = HeadRegistry.from_unet(pipe.unet).names()
    values = np.random.default_rng(0).uniform(0, 3, (1, len(names))).astype(np.float32)
    empty = np.zeros((0, 1, len(names)))
    return HRVSet(values, ["Color"], names, empty.astype(np.float32), empty.astype(np.int64), {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=4, help=f"editing pairs (at most {len(PAIRS)})")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per pair")
    ap.add_argument("--batch-size", type=int, default=8, help="(pair, seed) groups per pipeline call")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-one-at-a-time", action="store_true", help="only the method costs (slow models)")
    ap.add_argument(
        "--baselines",
        nargs="*",
        default=["sdedit_0.5", "sdedit_0.7", "pnp", "masactrl", "fpe"],
        help="baselines timed beside p2p (none: give the flag alone)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = benchmark_pipeline(args.arch, args.device, args.dtype)
    pipe.set_progress_bar_config(disable=True)
    hrv = random_hrv(pipe)
    pairs, seeds = PAIRS[: args.pairs], list(range(1, args.seeds + 1))
    common = dict(hrv=hrv, concept="Color", steps=args.steps, height=args.size, width=args.size)
    cuda = pipe.device.type == "cuda"

    # on the CPU the process's own CPU time: the shared machine's load does not enter it (one thread)
    clock = time.perf_counter if cuda or torch.get_num_threads() > 1 else time.process_time

    def timed(fn) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return clock() - t0

    def batched(method: str):
        return lambda: edit_pairs(pipe, pairs, [method], seeds, batch_size=args.batch_size, **common)

    def one_at_a_time():
        for pair in pairs:
            for seed in seeds:
                edit_pairs(pipe, [pair], ["p2p_hrv"], [seed], batch_size=1, **common)

    edit_pairs(pipe, pairs[:1], ["p2p_hrv"], seeds[:1], **common)  # warm-up
    variants = {name: batched(name) for name in ("p2p", "p2p_self09", "p2p_hrv", *args.baselines)}
    if not args.skip_one_at_a_time:
        variants["one_at_a_time"] = one_at_a_time
    times = dict.fromkeys(variants, 0.0)
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name] += timed(fn)
    n = len(pairs) * len(seeds) * args.repeats
    print(
        f"device={pipe.device} dtype={pipe.unet.dtype} arch={args.arch} size={args.size} steps={args.steps}"
        f" pairs={len(pairs)} seeds={len(seeds)} batch={args.batch_size} groups clock={clock.__name__}"
    )
    for name in variants:
        print(f"{name:14s}: {n / times[name]:.3f} pairs/s ({times[name]:.1f} s for {n} edited images)")
    if "one_at_a_time" in times:
        print(
            f"batched vs one pair at a time: {times['one_at_a_time'] / times['p2p_hrv']:.2f}x (target >= 2x on CPU)"
        )
    print(f"p2p_hrv over p2p       : {100 * (times['p2p_hrv'] / times['p2p'] - 1):+.1f}% (target <= 5%)")
    for name in args.baselines:
        print(f"{name} time / p2p time: {times[name] / times['p2p']:.2f}")
    print(
        f"p2p_hrv over p2p_self09: {100 * (times['p2p_hrv'] / times['p2p_self09'] - 1):+.1f}% (the HRV rule alone)"
    )


if __name__ == "__main__":
    main()
