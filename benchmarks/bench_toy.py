"""The paper's claims, checked by exact measurement in the toy world (issue 6). One run prints:

1. classifier accuracy on held-out code-drawn images (clean and slightly blurred);
2. attribute accuracy of generated images, per attribute (all 192 captions);
3. toy-concept HRVs (``hrv.accumulate``) and whether the top heads of Color and Shape differ;
4. ordered weakening (factor -2 on the prompt's word tokens in k heads) of the Color and the
   Shape HRV in MoRHF, LeRHF and random order: colour and shape accuracy vs k, areas;
5. steering: strengthening the colour (shape) token by HRV_Color (HRV_Shape) in all heads,
   vs plain generation and vs a head-shuffled HRV of the same values, on the captions the
   plain model gets wrong.

Where a claim does not hold, the numbers say so.

    .venv/bin/python benchmarks/bench_toy.py [--model resources/toy/model] [--out results/toy/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hrv.accumulate import accumulate  # noqa: E402
from hrv.concepts import read_concepts  # noqa: E402
from hrv.determinism import make_batch_invariant  # noqa: E402
from hrv.heads import HeadRegistry  # noqa: E402
from hrv.hrvfile import HRVSet  # noqa: E402
from hrv.models import load_pipeline  # noqa: E402
from hrv.steering import token_factors  # noqa: E402
from hrv.tokens import PromptTokens  # noqa: E402,F401  (documented home of token positions)
from hrv.toy.classifiers import accuracy, classify  # noqa: E402
from hrv.toy.evaluate import generate  # noqa: E402
from hrv.toy.world import all_scenes, make_dataset  # noqa: E402
from hrv.weakening import head_order, prompt_word_count, weakening_factors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def blur(images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None]).expand(3, 1, 3, 3).contiguous()
    x = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3
    )
    return x.permute(0, 2, 3, 1).numpy()


def fmt(acc: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.3f}" for k, v in acc.items())


def word_position(tokenizer, caption: str, word_index: int) -> list[int]:
    """Token positions (SOT = 0) of the caption's word number ``word_index`` (space-separated)."""
    words = caption.split(" ")
    before = (
        len(tokenizer(" ".join(words[:word_index]), add_special_tokens=False).input_ids) if word_index else 0
    )
    n = len(tokenizer(words[word_index], add_special_tokens=False).input_ids)
    return list(range(1 + before, 1 + before + n))


def area(ks: list[int], values: list[float], n_heads: int) -> float:
    """Trapezoid area under a curve over k / H in [0, 1]."""
    x = np.asarray(ks, dtype=np.float64) / n_heads
    y = np.asarray(values, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


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
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    t_all = time.perf_counter()

    # 1. classifiers on held-out code-drawn images
    held = make_dataset(1000, 7)
    results["classifier_clean"] = accuracy(held.images, held.scenes)
    results["classifier_blurred"] = accuracy(blur(held.images), held.scenes)
    print(
        f"[1] classifier accuracy, 1000 held-out drawn images\n    clean:   {fmt(results['classifier_clean'])}"
    )
    print(f"    blurred: {fmt(results['classifier_blurred'])}")

    pipe = load_pipeline(args.model, device="cpu", dtype="float32")
    make_batch_invariant(pipe)
    n_heads = HeadRegistry.from_unet(pipe.unet).n_heads
    sampling = {"steps": args.steps, "guidance_scale": args.guidance}

    # 2. generation accuracy over every caption of the world
    scenes = all_scenes()[: args.max_captions]
    captions = [s.caption() for s in scenes]
    t0 = time.perf_counter()
    plain = generate(pipe, captions, args.seed, **sampling)
    results["generation"] = accuracy(plain, scenes)
    print(
        f"[2] generated-image accuracy, {len(scenes)} captions x 1 seed, {args.steps} steps, CFG {args.guidance}"
        f" ({time.perf_counter() - t0:.0f}s)\n    {fmt(results['generation'])}"
    )
    np.save(out / "plain_images.npy", (plain * 255).round().astype(np.uint8))
    chance = {"count": 1 / 2, "size": 1 / 2, "color": 1 / 4, "shape": 1 / 3, "background": 1 / 4}
    print(f"    chance: {fmt(chance)}")

    # 3. HRVs of the toy concepts
    concepts = read_concepts(args.concepts)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    hrv_prompts = [captions[i] for i in rng.permutation(len(captions))[: args.hrv_prompts]]
    counts = accumulate(
        pipe,
        concepts,
        hrv_prompts,
        range(len(hrv_prompts)),
        seed=args.seed + 1,
        steps=args.steps,
        guidance_scale=args.guidance,
        height=32,
        width=32,
        batch_size=8,
        progress=False,
    )
    heads = HeadRegistry.from_unet(pipe.unet).names("short")
    hrv = HRVSet.from_counts(
        counts, list(concepts.names), heads, meta={"model": args.model, "prompts": len(hrv_prompts)}
    )
    hrv.save(out / "hrv.npz")
    try:
        from hrv.plots import heatmap

        heatmap(hrv, out / "heatmap.png")
    except Exception as err:  # the figure is a by-product; the numbers below are the result
        print(f"    (heat map not written: {err})")
    color, shape = hrv.vector("Color"), hrv.vector("Shape")
    top = {}
    for name in hrv.concepts:
        v = hrv.vector(name)
        top[name] = [int(h) for h in np.argsort(-v, kind="stable")[:10]]
    overlap = len(set(top["Color"]) & set(top["Shape"]))
    rank_corr = float(np.corrcoef(np.argsort(np.argsort(color)), np.argsort(np.argsort(shape)))[0, 1])
    results["hrv"] = {
        "prompts": len(hrv_prompts),
        "top10": {k: [heads[h] for h in v] for k, v in top.items()},
        "top10_overlap_color_shape": overlap,
        "spearman_color_shape": rank_corr,
        "max": {k: float(hrv.vector(k).max()) for k in hrv.concepts},
    }
    print(
        f"[3] HRVs from {len(hrv_prompts)} captions ({time.perf_counter() - t0:.0f}s); heat map {out / 'heatmap.png'}"
    )
    for name in hrv.concepts:
        print(
            f"    {name:10s} max {hrv.vector(name).max():5.2f}  top-5 heads {[heads[h] for h in top[name][:5]]}"
        )
    print(
        f"    top-10 heads shared by Color and Shape: {overlap}/10; Spearman(Color, Shape) = {rank_corr:.3f}"
    )

    # 4. ordered weakening
    ks = [int(k) for k in args.ks.split(",")]
    wscenes = [
        scenes[i]
        for i in np.random.default_rng(args.seed + 2).permutation(len(scenes))[: args.weaken_prompts]
    ]
    curves: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for concept in ("Color", "Shape"):
        for order_name in ("MoRHF", "LeRHF", "random"):
            order = head_order(hrv.vector(concept), order_name, seed=args.seed)
            imgs = []
            for j, scene in enumerate(wscenes):
                cap = scene.caption()
                f = weakening_factors(order, ks, prompt_word_count(pipe.tokenizer, cap))
                imgs.append(
                    generate(
                        pipe,
                        [cap] * len(ks),
                        args.seed + 100 + j,
                        factors=f,
                        batch_size=len(ks),
                        same_latent=True,
                        **sampling,
                    )
                )
            preds = [[classify(imgs[j][b]) for j in range(len(wscenes))] for b in range(len(ks))]
            key = f"{concept}-{order_name}"
            curves[key] = {
                attr: [
                    float(
                        np.mean([p[attr] == s.labels()[attr] for p, s in zip(preds[b], wscenes, strict=True)])
                    )
                    for b in range(len(ks))
                ]
                for attr in ("color", "shape")
            }
    results["weakening"] = {"ks": ks, "prompts": len(wscenes), "curves": curves}
    print(
        f"[4] ordered weakening, factor -2, {len(wscenes)} captions x 1 seed ({time.perf_counter() - t0:.0f}s)"
    )
    print("    k:                 " + " ".join(f"{k:5d}" for k in ks))
    for key, c in curves.items():
        for attr in ("color", "shape"):
            print(f"    {key:13s} {attr:5s} " + " ".join(f"{v:5.2f}" for v in c[attr]))
    areas = {key: {attr: area(ks, c[attr], n_heads) for attr in c} for key, c in curves.items()}
    results["weakening"]["areas"] = areas
    claims = {
        "color: LeRHF - MoRHF area (>0: MoRHF destroys colour with fewer heads)": areas["Color-LeRHF"][
            "color"
        ]
        - areas["Color-MoRHF"]["color"],
        "color: random - MoRHF area": areas["Color-random"]["color"] - areas["Color-MoRHF"]["color"],
        "shape: LeRHF - MoRHF area (>0: MoRHF destroys shape with fewer heads)": areas["Shape-LeRHF"]["shape"]
        - areas["Shape-MoRHF"]["shape"],
        "shape: random - MoRHF area": areas["Shape-random"]["shape"] - areas["Shape-MoRHF"]["shape"],
        "shape acc. kept: Color-MoRHF - Shape-MoRHF area (>0 expected)": areas["Color-MoRHF"]["shape"]
        - areas["Shape-MoRHF"]["shape"],
        "colour acc. kept: Shape-MoRHF - Color-MoRHF area (>0 expected)": areas["Shape-MoRHF"]["color"]
        - areas["Color-MoRHF"]["color"],
    }
    results["weakening"]["claims"] = claims
    # an area difference below one image's worth over the whole k range (1 / prompts) is noise
    noise = 1.0 / len(wscenes)
    for text, value in claims.items():
        verdict = (
            "holds" if value > noise else ("DOES NOT HOLD" if value < -noise else "within noise (< 1 image)")
        )
        print(f"    {text}: {value:+.3f} -> {verdict}")

    # 5. steering: strengthen the attribute's token by its HRV on the captions plain generation gets wrong
    t0 = time.perf_counter()
    results["steering"] = {}
    plain_pred = [classify(im) for im in plain]
    for concept, attr, word_index in (("Color", "color", 2), ("Shape", "shape", 3)):
        wrong = [
            i for i, (p, s) in enumerate(zip(plain_pred, scenes, strict=True)) if p[attr] != s.labels()[attr]
        ]
        right = [i for i in range(len(scenes)) if i not in wrong][: max(len(wrong), 16)]
        vec = hrv.vector(concept)
        shuffled = np.random.default_rng(args.seed + 3).permutation(vec)
        row = {"plain_wrong": len(wrong), "plain_accuracy": results["generation"][attr]}
        for label, v in (("HRV", vec), ("shuffled HRV", shuffled)):
            for subset_name, subset in (("wrong", wrong), ("right", right)):
                if not subset:
                    row[f"{label} on {subset_name}"] = None
                    continue
                caps = [captions[i] for i in subset]
                f = torch.cat([token_factors(v, word_position(pipe.tokenizer, c, word_index)) for c in caps])
                imgs = generate(pipe, caps, args.seed, factors=f, latent_indices=subset, **sampling)
                ok = float(
                    np.mean(
                        [
                            classify(im)[attr] == scenes[i].labels()[attr]
                            for im, i in zip(imgs, subset, strict=True)
                        ]
                    )
                )
                row[f"{label} on {subset_name}"] = ok
        results["steering"][concept] = row
        print(f"[5] steering {concept}: plain gets {len(wrong)}/{len(scenes)} {attr}s wrong")
        for k, v in row.items():
            if k.startswith(("HRV", "shuffled")):
                what = "recovered" if k.endswith("wrong") else "still right"
                print(f"    {k:24s}: {what} {v if v is None else f'{v:.3f}'}")
    print(f"    ({time.perf_counter() - t0:.0f}s)")
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "bench_toy.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"total {results['seconds']}s; results in {out / 'bench_toy.json'}")


if __name__ == "__main__":
    main()
