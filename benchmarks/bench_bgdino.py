"""Throughput of BG-DINO: pairs scored in batches vs one pair at a time, measured in one run.

Both variants load the models once and score the same pairs (their scores agree:
tests/test_bgdino.py); this prints pairs/s of each and the ratio (target >= 2x on CPU with the
tiny models). Repeats alternate the two variants so machine load hits both alike.

    python benchmarks/bench_bgdino.py                                     # tiny models, CPU
    python benchmarks/bench_bgdino.py --models DIR --device cuda --size 512   # DIR from build-tiny-gsam
    python benchmarks/bench_bgdino.py --detector IDEA-Research/grounding-dino-tiny \\
        --segmenter facebook/sam2.1-hiera-large --embedder facebook/dinov2-base --device cuda --size 512
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

from hrv.scores.bgdino import BGDino, BGDinoSettings  # noqa: E402
from hrv.scores.tiny import TINY_FOLDERS, save_tiny_gsam  # noqa: E402

NOUNS = ["car", "bowl", "teapot", "t-shirt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="a build-tiny-gsam folder (default: build one)")
    ap.add_argument("--detector", default=None)
    ap.add_argument("--segmenter", default=None)
    ap.add_argument("--embedder", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--box-threshold", type=float, default=0.999, help="0.999: a few boxes per tiny image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.models) if args.models else Path(tempfile.mkdtemp()) / "tiny-gsam"
    if not args.models and not all((args.detector, args.segmenter, args.embedder)):
        save_tiny_gsam(folder)
    roles = {r: getattr(args, r) or str(folder / TINY_FOLDERS[r]) for r in TINY_FOLDERS}
    settings = BGDinoSettings(**roles, box_threshold=args.box_threshold, device=args.device)
    scorer = BGDino.load(settings)
    rng = np.random.default_rng(0)
    sources = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.pairs)]
    editeds = [s.copy() for s in sources]
    for k, e in enumerate(editeds):
        e[: (k * args.size) // (2 * args.pairs)] = 0
    nouns = [NOUNS[k % len(NOUNS)] for k in range(args.pairs)]

    def run(batch: int) -> float:
        scorer.settings = dataclasses.replace(settings, batch_size=batch)
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        results = scorer.score_pairs(sources, editeds, nouns)
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()
        assert len(results) == args.pairs
        return time.perf_counter() - start

    run(args.batch_size)  # warm-up
    run(1)
    times: dict[str, list[float]] = {"batched": [], "one at a time": []}
    for _ in range(args.repeats):
        times["batched"].append(run(args.batch_size))
        times["one at a time"].append(run(1))
    rates = {name: args.pairs / min(t) for name, t in times.items()}
    print(
        f"BG-DINO on {scorer.device}, {args.pairs} pairs of {args.size}x{args.size} images,"
        f" threads {torch.get_num_threads()}"
    )
    for name, rate in rates.items():
        print(f"  {name:14s} {rate:8.2f} pairs/s")
    print(
        f"  batched / one at a time: {rates['batched'] / rates['one at a time']:.2f}x (batch {args.batch_size})"
    )


if __name__ == "__main__":
    main()
