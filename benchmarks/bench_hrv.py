"""Throughput of HRV accumulation, measured in one run on the same model and prompts.

Prints images/s of (1) plain sampling, (2) HRV accumulation, (3) a straightforward
implementation (benchmarks/naive_hrv.py), and the ratios the targets are about:
accumulation overhead over plain sampling (target <= 5%) and speed-up over the
straightforward implementation (target >= 2x on CPU with the tiny model).

    python benchmarks/bench_hrv.py                     # tiny model, CPU
    python benchmarks/bench_hrv.py --arch sd14 --device cuda --dtype float16 --size 512 --steps 50
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

from naive_hrv import NaiveState, naive_accumulate  # noqa: E402

from hrv.accumulate import VoteMeasure, WordBank, accumulate  # noqa: E402
from hrv.concepts import read_concepts  # noqa: E402
from hrv.determinism import make_batch_invariant  # noqa: E402
from hrv.models import DTYPES, initial_latents, load_pipeline, save_tiny_model  # noqa: E402
from hrv.prompts import read_prompts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_folder() -> Path:
    folder = ROOT / "resources/models/tiny"
    if not folder.is_dir():
        save_tiny_model(folder)
    return folder


def full_size_pipeline(arch: str, device: str, dtype: str):
    """The tiny pipeline (tokenizer, scheduler, small VAE) with a full-size UNet and a 12-layer text
    encoder of random weights: the architecture's cost, with no weights to download. The tiny model is
    loaded from its folder, so this needs no open_clip (a GPU machine may not have it)."""
    from diffusers import UNet2DConditionModel

    from hrv.archs import ARCHS
    from hrv.models import clip_text_encoder

    pipe = load_pipeline(tiny_folder(), device="cpu", dtype="float32")
    cfg = ARCHS[arch]
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs: seconds on a GPU instead of a minute on the CPU
        unet = UNet2DConditionModel(**cfg)
        text_encoder = clip_text_encoder(cfg["cross_attention_dim"], 12, heads=12, intermediate=3072)
    pipe.register_modules(unet=unet, text_encoder=text_encoder)
    pipe = pipe.to(device=device, dtype=DTYPES[dtype])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_model_args(ap: argparse.ArgumentParser, device: str = "cpu") -> None:
    """--arch, --device and --dtype, read by ``benchmark_pipeline``."""
    ap.add_argument("--arch", default="tiny", choices=["tiny", "sd14"])
    ap.add_argument("--device", default=device)
    ap.add_argument("--dtype", default="float32")


def benchmark_pipeline(arch: str, device: str, dtype: str):
    """The tiny model from its folder, or a full-size architecture with random weights."""
    if arch == "tiny":
        return load_pipeline(tiny_folder(), device=device, dtype=dtype)
    return full_size_pipeline(arch, device, dtype)


class VoteClock:
    """Time spent in the vote's own work (``VoteMeasure.set_batch``, ``end_evaluation``, where the
    layers are scored, and ``flush``): a share of the cost that a drifting machine speed leaves alone.
    On the CPU by the wall clock; on a GPU by CUDA events recorded around the calls, which time the
    GPU's work (and any wait for the host) between them without synchronising the run."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.seconds = 0.0
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        for name in ("set_batch", "end_evaluation", "flush"):
            setattr(VoteMeasure, name, self._timed(getattr(VoteMeasure, name)))

    def _timed(self, inner):
        def timed(measure, *args):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                inner(measure, *args)
                end.record()
                self.events.append((start, end))
            else:
                start = time.perf_counter()
                inner(measure, *args)
                self.seconds += time.perf_counter() - start

        return timed

    def reset(self) -> None:
        self.seconds, self.events = 0.0, []

    @property
    def total(self) -> float:
        if self.events:
            torch.cuda.synchronize()
            self.seconds += sum(s.elapsed_time(e) for s, e in self.events) / 1000
            self.events = []
        return self.seconds


def plain_sampling(pipe, prompts: list[str], batch_size: int, steps: int, size: int) -> None:
    """Plain sampling of the prompts in the batches and from the latents (seed 0) the accumulation uses."""
    n = len(prompts)
    for s in range(0, n, batch_size):
        idx = list(range(s, min(n, s + batch_size)))
        pipe(
            [prompts[i] for i in idx],
            latents=initial_latents(pipe, idx, 0, size, size),
            num_inference_steps=steps,
            guidance_scale=7.5,
            height=size,
            width=size,
            output_type="latent",
        )


def timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument(
        "--naive-prompts", type=int, default=None, help="prompts for the slow baseline (default: all)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="runs of the straightforward implementation")
    ap.add_argument("--pairs", type=int, default=8, help="back-to-back (plain, HRV) pairs")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = benchmark_pipeline(args.arch, args.device, args.dtype)
    make_batch_invariant(pipe)
    sync = torch.cuda.synchronize if pipe.device.type == "cuda" else (lambda: None)
    concepts = read_concepts(ROOT / "resources/concepts/concepts_34x10.csv")
    prompts = read_prompts([ROOT / "resources/prompts/imagenet_1000.txt"], args.prompts)
    n = len(prompts)
    kw = dict(steps=args.steps, guidance_scale=7.5, height=args.size, width=args.size)

    def plain():
        plain_sampling(pipe, prompts, args.batch_size, args.steps, args.size)

    # encoding the concept-words is a one-off cost per job (for both implementations): timed apart
    t0 = time.perf_counter()
    bank = WordBank.build(pipe, concepts)
    t_bank = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive_state = NaiveState(pipe, concepts, 0)
    t_naive_setup = time.perf_counter() - t0

    def hrv():
        accumulate(
            pipe,
            concepts,
            prompts,
            range(n),
            seed=0,
            batch_size=args.batch_size,
            progress=False,
            bank=bank,
            **kw,
        )

    n_naive = args.naive_prompts or n

    def naive():
        naive_accumulate(pipe, concepts, prompts[:n_naive], 0, state=naive_state, **kw)

    clock = VoteClock(cuda=pipe.device.type == "cuda")
    with torch.no_grad():
        plain(), hrv()  # warm-up
        # plain and HRV run back to back in pairs (alternating which goes first), so slow drifts of a
        # shared machine hit both members of a pair alike; the overhead is the median paired ratio
        times = {"plain": [], "hrv": [], "naive": []}
        ratios, vote_shares = [], []
        for i in range(args.pairs):
            first, second = ("plain", "hrv") if i % 2 == 0 else ("hrv", "plain")
            clock.reset()
            t = {first: timed(plain if first == "plain" else hrv, sync)}
            t[second] = timed(plain if second == "plain" else hrv, sync)
            vote_shares.append(clock.total / t["plain"])
            for k in ("plain", "hrv"):
                times[k].append(t[k])
            ratios.append(t["hrv"] / t["plain"])
            print(f"pair {i + 1}/{args.pairs}: plain {t['plain']:.2f} s, HRV {t['hrv']:.2f} s", flush=True)
            if i < args.repeats:
                times["naive"].append(timed(naive, sync))
    ips = {k: (n_naive if k == "naive" else n) / min(v) for k, v in times.items()}
    print(
        f"device={pipe.device} dtype={pipe.unet.dtype} arch={args.arch} size={args.size} steps={args.steps} "
        f"prompts={n} batch={args.batch_size} torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    for k in ("plain", "hrv", "naive"):
        print(f"{k:>6}: {ips[k]:8.3f} images/s  (best of {len(times[k])}: {min(times[k]):.2f} s)")
    print(
        f"one-off per job: encoding the concept-words {t_bank:.2f} s (straightforward: {t_naive_setup:.2f} s)"
    )
    q1, med, q3 = (100 * (float(np.quantile(ratios, q)) - 1) for q in (0.25, 0.5, 0.75))
    print(
        f"HRV accumulation overhead over plain sampling: {med:+.1f}% median of {len(ratios)} paired runs"
        f" (quartiles {q1:+.1f}% .. {q3:+.1f}%; best-of: {100 * (ips['plain'] / ips['hrv'] - 1):+.1f}%)"
        "  (target <= 5%)"
    )
    how = "CUDA events" if clock.cuda else "wall clock"
    print(
        f"of which the vote (word tables, scoring, counting), timed inside the run ({how}):"
        f" {100 * float(np.median(vote_shares)):.1f}% of plain sampling (median; the rest is the per-call"
        " set-up, the processor, cache effects and the machine's drift)"
    )
    print(f"HRV accumulation speed-up over straightforward: {ips['hrv'] / ips['naive']:.2f}x  (target >= 2x)")
    # the fast path and the straightforward one count the same votes
    fast = accumulate(
        pipe,
        concepts,
        prompts[:n_naive],
        range(n_naive),
        seed=0,
        batch_size=n_naive,
        progress=False,
        bank=bank,
        **kw,
    )
    slow = naive_accumulate(pipe, concepts, prompts[:n_naive], 0, state=naive_state, **kw)
    print(f"votes agree with the straightforward implementation: {np.mean(fast == slow) * 100:.2f}% of cells")


if __name__ == "__main__":
    main()
