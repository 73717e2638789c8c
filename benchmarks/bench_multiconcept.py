"""Throughput of Attend-and-Excite: the project's batched ``ae`` vs diffusers' pipeline one image at a time.

Both run A&E's full schedule (thresholds {0: 0.05, 10: 0.5, 20: 0.8}, up to 20 refinement steps,
25 steps altered) on the same model, prompt and initial latents, and agree to within one grey level
(tests/test_multiconcept_excite.py). The project's sampler batches the seeds through every UNet
pass (each image with its own loss, threshold and refinement) and skips the gradient pass at steps
where A&E neither refines nor updates (diffusers runs it at all 50; ``--single`` times the
project's sampler one image at a time too, to separate the two gains). Prints images/s of both,
measured in one run (alternating when repeated), and the ratio (target >= 2x on the CPU with the
tiny model).

    python benchmarks/bench_multiconcept.py                      # tiny model, CPU, 64 px
    python benchmarks/bench_multiconcept.py --model sd14 --device cuda --size 512 --images 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

from hrv.models import initial_latents, load_pipeline, save_tiny_model  # noqa: E402
from hrv.multiconcept.sampler import ExciteSampler, ImageJob  # noqa: E402

PROMPT, TOKENS = "a cat and a frog", [2, 5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder, preset or hub id (default: the tiny model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--images", type=int, default=4, help="seeds; the project runs them as one batch")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--single", action="store_true", help="also time the project's ae one image at a time")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionAttendAndExcitePipeline

    model = args.model or save_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    pipe = load_pipeline(model, device=args.device, dtype=args.dtype)
    seeds = list(range(1, args.images + 1))
    sampler = ExciteSampler(pipe, "ae", steps=args.steps, height=args.size, width=args.size)
    jobs = [ImageJob(PROMPT, s, tuple(TOKENS), ("Animals",) * 2) for s in seeds]
    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    reference = StableDiffusionAttendAndExcitePipeline(**components, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    side = -(-args.size // 32)

    def ours() -> float:
        start = time.perf_counter()
        sampler.run(jobs)
        return time.perf_counter() - start

    def ours_one_at_a_time() -> float:
        start = time.perf_counter()
        for job in jobs:
            sampler.run([job])
        return time.perf_counter() - start

    def diffusers_one_at_a_time() -> float:
        start = time.perf_counter()
        for s in seeds:
            latents = initial_latents(pipe, [0], s, args.size, args.size)
            reference(
                PROMPT,
                token_indices=TOKENS,
                latents=latents,
                num_inference_steps=args.steps,
                height=args.size,
                width=args.size,
                attn_res=(side, side),
            )
        return time.perf_counter() - start

    t_ours, t_single, t_ref = 0.0, 0.0, 0.0
    for _ in range(args.repeats):
        t_ours += ours()
        t_single += ours_one_at_a_time() if args.single else 0.0
        t_ref += diffusers_one_at_a_time()
    n = args.images * args.repeats
    print(f"device {args.device}, {args.size} px, {args.steps} steps, {args.images} images, A&E defaults")
    print(f"project ae, batch {args.images}:       {n / t_ours:.3f} images/s ({t_ours:.1f} s)")
    if args.single:  # what batching adds beyond skipping the unused gradient passes
        print(f"project ae, one at a time:   {n / t_single:.3f} images/s ({t_single:.1f} s)")
    print(f"diffusers pipeline, one at a time: {n / t_ref:.3f} images/s ({t_ref:.1f} s)")
    print(f"ratio: {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
