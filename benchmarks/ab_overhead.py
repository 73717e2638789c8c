"""Accumulation overhead over plain sampling, of the working tree and of a git revision, in one run.

One process samples the same prompts three ways in every round: plain, HRV accumulation with the
vote of ``--base`` and with the working tree's, in an order that rotates from round to round, so
the machine's drift hits all three alike. It prints each accumulation's overhead over the plain run
of its round (median and quartiles) and their ratio. This measures the target of issue 2 (at most
5% over plain sampling) where ``bench_hrv.py``'s back-to-back pairs drift by several points.

    python benchmarks/ab_overhead.py --base HEAD --rounds 15          # tiny model, 1 thread
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from ab_vote import module_at  # noqa: E402
from bench_hrv import ROOT, VoteClock, add_model_args, benchmark_pipeline, plain_sampling  # noqa: E402

import hrv.accumulate as current  # noqa: E402
from hrv.concepts import read_concepts  # noqa: E402
from hrv.determinism import make_batch_invariant  # noqa: E402
from hrv.prompts import read_prompts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--base", default="HEAD", help="git revision whose vote is compared")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pipe = benchmark_pipeline(args.arch, args.device, args.dtype)
    pipe.set_progress_bar_config(disable=True)
    make_batch_invariant(pipe)
    concepts = read_concepts(ROOT / "resources/concepts/concepts_34x10.csv")
    prompts = read_prompts([ROOT / "resources/prompts/imagenet_1000.txt"], args.prompts)
    n, size = len(prompts), args.size

    def plain() -> None:
        plain_sampling(pipe, prompts, args.batch_size, args.steps, size)

    with tempfile.TemporaryDirectory() as tmp:
        modules = {"base": module_at(args.base, Path(tmp)), "new": current}
        bank = current.WordBank.build(pipe, concepts)
        counts = {}

        def hrv(name: str):
            def run() -> None:
                counts[name] = modules[name].accumulate(
                    pipe,
                    concepts,
                    prompts,
                    range(n),
                    seed=0,
                    steps=args.steps,
                    guidance_scale=7.5,
                    height=size,
                    width=size,
                    batch_size=args.batch_size,
                    progress=False,
                    bank=bank,
                )

            return run

        runs = {"plain": plain, "base": hrv("base"), "new": hrv("new")}
        order = list(runs)
        times: dict[str, list[float]] = {k: [] for k in runs}
        clock, vote = (
            VoteClock(cuda=pipe.device.type == "cuda"),
            [],
        )  # the working tree's vote work, timed inside its runs
        with torch.no_grad():
            for fn in runs.values():  # warm-up
                fn()
            for r in range(args.rounds):
                for name in order[r % 3 :] + order[: r % 3]:
                    clock.reset()
                    start = time.perf_counter()
                    runs[name]()
                    times[name].append(time.perf_counter() - start)
                    if name == "new":
                        vote.append(clock.total)
                print(
                    f"round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                    flush=True,
                )
    plain_t = np.array(times["plain"])
    print(
        f"device={pipe.device} arch={args.arch} size={size} steps={args.steps} prompts={n} "
        f"batch={args.batch_size} threads={torch.get_num_threads()} rounds={args.rounds}"
    )
    for name, label in (("base", f"base {args.base}"), ("new", "working tree")):
        q1, med, q3 = (100 * (np.quantile(np.array(times[name]) / plain_t, q) - 1) for q in (0.25, 0.5, 0.75))
        print(f"{label:>20}: overhead over plain sampling {med:+.1f}% (quartiles {q1:+.1f} .. {q3:+.1f})")
    share = 100 * float(np.median(np.array(vote) / plain_t))
    print(f"{'':>20}  of which its vote (word tables, scoring, counting), timed inside: {share:.1f}%")
    q1, med, q3 = np.quantile(np.array(times["new"]) / np.array(times["base"]), [0.25, 0.5, 0.75])
    print(f"working tree / base: {med:.3f} (quartiles {q1:.3f} .. {q3:.3f})")
    print(f"votes {'identical' if np.array_equal(counts['base'], counts['new']) else 'DIFFER'}")


if __name__ == "__main__":
    main()
