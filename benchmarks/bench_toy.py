"""The paper's claims, checked by exact measurement in the toy world (issue 6); one run prints:

1. classifier accuracy on held-out code-drawn images (clean and slightly blurred);
2. attribute accuracy of generated images, per attribute (all 192 captions);
3. toy-concept HRVs and whether the top heads of Color and Shape differ;
4. ordered weakening of the Color and the Shape HRV in MoRHF, LeRHF and random order:
   colour and shape accuracy against k, areas between the curves;
5. steering: strengthening the colour (shape) word by HRV_Color (HRV_Shape) in every head,
   against plain generation and against a head-shuffled HRV, on captions plain generation gets wrong.

The measurements live in ``hrv.toy.checks`` (the workflow's rule ``toy_checks`` runs the same).

    .venv/bin/python benchmarks/bench_toy.py [--model resources/toy/model] [--out results/toy/bench]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hrv.toy.checks import ToyCheckSettings, run_checks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "resources/toy/model"))
    ap.add_argument("--concepts", default=str(ROOT / "resources/toy/concepts.csv"))
    ap.add_argument("--out", default=str(ROOT / "results/toy/bench"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hrv-prompts", type=int, default=96)
    ap.add_argument("--weaken-prompts", type=int, default=16)
    ap.add_argument("--ks", default="0,1,6,11,21,31,51,71,101,128")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--max-captions", type=int, default=None, help="fewer captions in [2] and [5] (smoke runs)"
    )
    args = ap.parse_args()
    settings = ToyCheckSettings(
        steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        hrv_prompts=args.hrv_prompts,
        weaken_prompts=args.weaken_prompts,
        ks=tuple(int(k) for k in args.ks.split(",")),
        max_captions=args.max_captions,
        threads=args.threads,
    )
    out = Path(args.out)  # replaced as a whole, atomically
    run_checks(args.model, args.concepts, out, settings)
    print(f"results in {out}/checks.json, figures {out}/weakening.png, heatmap.png, samples.png")


if __name__ == "__main__":
    main()
