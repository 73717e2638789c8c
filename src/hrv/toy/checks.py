"""The paper's claims, checked by exact measurement in the toy world (issue 6).

``run_checks`` measures, in one run on one model:

1. classifier accuracy on held-out code-drawn images (clean and slightly blurred);
2. attribute accuracy of generated images, per attribute (every caption of the world);
3. HRVs of the toy concepts (``hrv.accumulate``), whether the top heads of Color and Shape differ;
4. ordered weakening (factor -2 on the prompt's word tokens in k heads) of the Color and the
   Shape HRV in MoRHF, LeRHF and random order: colour and shape accuracy against k, and areas;
5. steering: strengthening the colour (shape) word by HRV_Color (HRV_Shape) in every head, against
   plain generation and against a head-shuffled HRV of the same values, on the captions that plain
   generation gets wrong (recovered) and on some it gets right (kept).

Every verdict compares a difference with the noise floor of one image (1 / number of captions):
where a claim does not hold in this world the results say so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hrv.errors import HRVInputError
from hrv.io import atomic_dir

CHANCE = {"count": 1 / 2, "size": 1 / 2, "color": 1 / 4, "shape": 1 / 3, "background": 1 / 4}
ORDERS = ("MoRHF", "LeRHF", "random")
# (concept, attribute, index of the attribute's word in a caption "two small red circles on grass")
STEERED = (("Color", "color", 2), ("Shape", "shape", 3))


@dataclass(frozen=True)
class ToyCheckSettings:
    steps: int = 10
    guidance_scale: float = 5.0
    seed: int = 0
    hrv_prompts: int = 96
    weaken_prompts: int = 16
    ks: tuple[int, ...] = (0, 1, 6, 11, 21, 31, 51, 71, 101, 128)
    max_captions: int | None = None  # fewer captions in 2 and 5 (smoke runs)
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "hrv_prompts", "weaken_prompts", "threads"):
            if getattr(self, name) < 1:
                raise HRVInputError(f"toy checks: {name} must be >= 1, got {getattr(self, name)}")
        if not self.ks or any(k < 0 for k in self.ks):
            raise HRVInputError(f"toy checks: ks must be non-negative head counts, got {list(self.ks)}")


def blur(images: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur (a generated image is softer than a drawn one)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None]).expand(3, 1, 3, 3).contiguous()
    x = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3
    )
    return x.permute(0, 2, 3, 1).numpy()


def area(ks: list[int], values: list[float], n_heads: int) -> float:
    """Trapezoid area under a curve over k / H in [0, 1]."""
    x = np.asarray(ks, dtype=np.float64) / n_heads
    y = np.asarray(values, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def verdict(value: float, noise: float) -> str:
    if value > noise:
        return "holds"
    if value < -noise:
        return "DOES NOT HOLD"
    return "within noise (< 1 image)"


def fmt(acc: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.3f}" for k, v in acc.items())


def run_checks(
    model: str | Path,
    concepts_csv: str | Path,
    out: str | Path,
    settings: ToyCheckSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run checks 1-5; write ``checks.json``, ``hrv.npz``, the figures and the images to ``out``
    (atomically: a folder appears only complete). Returns the results."""
    s = settings or ToyCheckSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        with atomic_dir(out, owner=None) as tmp:
            results = _run(Path(model), Path(concepts_csv), tmp, s, log)
    finally:
        torch.set_num_threads(threads)
    return results


def _run(model: Path, concepts_csv: Path, out: Path, s: ToyCheckSettings, log) -> dict:
    from hrv.accumulate import accumulate
    from hrv.concepts import read_concepts
    from hrv.determinism import make_batch_invariant
    from hrv.heads import HeadRegistry
    from hrv.hrvfile import HRVSet
    from hrv.models import load_pipeline
    from hrv.plots import heatmap
    from hrv.steering import token_factors
    from hrv.tokens import word_positions
    from hrv.toy.classifiers import accuracy, classify
    from hrv.toy.evaluate import generate
    from hrv.toy.plots import image_grid, weakening_curves
    from hrv.toy.world import IMAGE_SIZE, all_scenes, make_dataset
    from hrv.weakening import head_order, prompt_word_count, weakening_factors

    t_all = time.perf_counter()
    results: dict = {"settings": asdict(s), "model": str(model)}
    concepts = read_concepts(concepts_csv)
    missing = {"Color", "Shape"} - set(concepts.names)
    if missing:
        raise HRVInputError(f"{concepts_csv}: the toy checks need the concepts {sorted(missing)}")

    # 1. classifiers on held-out code-drawn images
    held = make_dataset(1000, 7)
    results["classifier_clean"] = accuracy(held.images, held.scenes)
    results["classifier_blurred"] = accuracy(blur(held.images), held.scenes)
    log(
        f"[1] classifier accuracy, 1000 held-out drawn images\n    clean:   {fmt(results['classifier_clean'])}"
    )
    log(f"    blurred: {fmt(results['classifier_blurred'])}")

    pipe = load_pipeline(model, device="cpu", dtype="float32")
    make_batch_invariant(pipe)
    registry = HeadRegistry.from_unet(pipe.unet)
    n_heads = registry.n_heads
    ks = [min(k, n_heads) for k in s.ks]
    sampling = {"steps": s.steps, "guidance_scale": s.guidance_scale}

    # 2. generation accuracy over every caption of the world
    scenes = all_scenes()[: s.max_captions]
    captions = [sc.caption() for sc in scenes]
    t0 = time.perf_counter()
    plain = generate(pipe, captions, s.seed, **sampling)
    results["generation"] = accuracy(plain, scenes)
    results["chance"] = CHANCE
    log(
        f"[2] generated-image accuracy, {len(scenes)} captions x 1 seed, {s.steps} steps, CFG {s.guidance_scale}"
        f" ({time.perf_counter() - t0:.0f}s)\n    {fmt(results['generation'])}\n    chance: {fmt(CHANCE)}"
    )
    np.save(out / "plain_images.npy", (plain * 255).round().astype(np.uint8))
    image_grid(plain[:48], captions[:48], out / "samples.png")

    # 3. HRVs of the toy concepts
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    hrv_prompts = [captions[i] for i in rng.permutation(len(captions))[: s.hrv_prompts]]
    counts = accumulate(
        pipe,
        concepts,
        hrv_prompts,
        range(len(hrv_prompts)),
        seed=s.seed + 1,
        steps=s.steps,
        guidance_scale=s.guidance_scale,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        batch_size=8,
        progress=False,
    )
    heads = registry.names("short")
    hrv = HRVSet.from_counts(
        counts, list(concepts.names), heads, meta={"model": str(model), "prompts": len(hrv_prompts)}
    )
    hrv.save(out / "hrv.npz")
    heatmap(hrv, out / "heatmap.png")
    top = {name: [int(h) for h in np.argsort(-hrv.vector(name), kind="stable")[:10]] for name in hrv.concepts}
    color, shape = hrv.vector("Color"), hrv.vector("Shape")
    overlap = len(set(top["Color"]) & set(top["Shape"]))
    rank_corr = float(np.corrcoef(np.argsort(np.argsort(color)), np.argsort(np.argsort(shape)))[0, 1])
    results["hrv"] = {
        "prompts": len(hrv_prompts),
        "top10": {k: [heads[h] for h in v] for k, v in top.items()},
        "top10_overlap_color_shape": overlap,
        "spearman_color_shape": rank_corr,
        "max": {k: float(hrv.vector(k).max()) for k in hrv.concepts},
    }
    log(f"[3] HRVs from {len(hrv_prompts)} captions ({time.perf_counter() - t0:.0f}s)")
    for name in hrv.concepts:
        log(
            f"    {name:10s} max {hrv.vector(name).max():5.2f}  top-5 heads {[heads[h] for h in top[name][:5]]}"
        )
    log(f"    top-10 heads shared by Color and Shape: {overlap}/10; Spearman(Color, Shape) = {rank_corr:.3f}")

    # 4. ordered weakening
    t0 = time.perf_counter()
    pick = np.random.default_rng(s.seed + 2).permutation(len(scenes))[: s.weaken_prompts]
    wscenes = [scenes[i] for i in pick]
    curves: dict[str, dict[str, list[float]]] = {}
    for concept in ("Color", "Shape"):
        for order_name in ORDERS:
            order = head_order(hrv.vector(concept), order_name, seed=s.seed)
            preds = []  # preds[j][b]: prediction for scene j at k = ks[b]
            for j, scene in enumerate(wscenes):
                cap = scene.caption()
                f = weakening_factors(order, ks, prompt_word_count(pipe.tokenizer, cap))
                imgs = generate(
                    pipe,
                    [cap] * len(ks),
                    s.seed + 100 + j,
                    factors=f,
                    batch_size=len(ks),
                    same_latent=True,
                    **sampling,
                )
                preds.append([classify(im) for im in imgs])
            curves[f"{concept}-{order_name}"] = {
                attr: [
                    float(np.mean([preds[j][b][attr] == sc.labels()[attr] for j, sc in enumerate(wscenes)]))
                    for b in range(len(ks))
                ]
                for attr in ("color", "shape")
            }
    areas = {key: {attr: area(ks, c[attr], n_heads) for attr in c} for key, c in curves.items()}
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
    # an area difference below one image's worth over the whole k range (1 / prompts) is noise
    noise = 1.0 / len(wscenes)
    results["weakening"] = {
        "ks": ks,
        "prompts": len(wscenes),
        "curves": curves,
        "areas": areas,
        "claims": {text: {"value": v, "verdict": verdict(v, noise)} for text, v in claims.items()},
    }
    weakening_curves(curves, ks, n_heads, out / "weakening.png")
    log(
        f"[4] ordered weakening, factor -2, {len(wscenes)} captions x 1 seed ({time.perf_counter() - t0:.0f}s)"
    )
    log("    k:                  " + " ".join(f"{k:5d}" for k in ks))
    for key, c in curves.items():
        for attr in ("color", "shape"):
            log(f"    {key:13s} {attr:5s} " + " ".join(f"{v:5.2f}" for v in c[attr]))
    for text, row in results["weakening"]["claims"].items():
        log(f"    {text}: {row['value']:+.3f} -> {row['verdict']}")

    # 5. steering: strengthen the attribute's word by its HRV on the captions plain generation gets wrong
    t0 = time.perf_counter()
    results["steering"] = {}
    plain_pred = [classify(im) for im in plain]
    for concept, attr, word_index in STEERED:
        wrong = [
            i
            for i, (p, sc) in enumerate(zip(plain_pred, scenes, strict=True))
            if p[attr] != sc.labels()[attr]
        ]
        right = [i for i in range(len(scenes)) if i not in set(wrong)][: max(len(wrong), 16)]
        vec = hrv.vector(concept)
        shuffled = np.random.default_rng(s.seed + 3).permutation(vec)
        row: dict = {"plain_wrong": len(wrong), "plain_accuracy": results["generation"][attr]}
        for label, v in (("HRV", vec), ("shuffled HRV", shuffled)):
            for subset_name, subset in (("wrong", wrong), ("right", right)):
                if not subset:
                    row[f"{label} on {subset_name}"] = None
                    continue
                caps = [captions[i] for i in subset]
                f = torch.cat(
                    [
                        token_factors(v, word_positions(pipe.tokenizer, c, c.split(" ")[word_index]))
                        for c in caps
                    ]
                )
                imgs = generate(pipe, caps, s.seed, factors=f, latent_indices=subset, **sampling)
                row[f"{label} on {subset_name}"] = float(
                    np.mean(
                        [
                            classify(im)[attr] == scenes[i].labels()[attr]
                            for im, i in zip(imgs, subset, strict=True)
                        ]
                    )
                )
        results["steering"][concept] = row
        log(f"[5] steering {concept}: plain gets {len(wrong)}/{len(scenes)} {attr}s wrong")
        for k, v in row.items():
            if k.startswith(("HRV", "shuffled")):
                what = "recovered" if k.endswith("wrong") else "still right"
                log(f"    {k:24s}: {what} {v if v is None else f'{v:.3f}'}")
    log(f"    ({time.perf_counter() - t0:.0f}s)")
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "checks.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    log(f"total {results['seconds']}s")
    return results
