"""Image editing measured in the toy world, where the truth of every image is known.

Source captions are edited in one word: the colour ("one small red circle on grass" -> "... blue
circle ...", HRV concept Color) or the shape ("... red circle ..." -> "... red square ...", HRV
concept Shape). Each pair is rendered by every method (``hrv.editing``) from the same seed, and
the world's exact classifiers (``hrv.toy.classifiers``) say:

- **success**: the edited image shows the target attribute;
- **kept**: the fraction of the other four attributes (count, size, background and the other of
  colour / shape) on which the edited image agrees with the source image as classified (what the
  source shows, which is not always what its caption says; attributes the classifier cannot read
  in the source are not counted);
- **background moved**: the mean absolute change (0-255) of the pixels that are background in
  both images (outside the objects of either), 0 when the background stands still.

Row ``plain target`` is P2P with both windows 0, i.e. plain sampling of the target caption from
the same latent: the success of not editing at all, and how much the background moves then.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hrv.errors import HRVInputError
from hrv.io import atomic_path, write_text_atomic
from hrv.toy.classifiers import OBJECT_DISTANCE, _dilate, classify
from hrv.toy.world import ATTRIBUTES, COLORS, SHAPES, Scene, all_scenes

KINDS = {"color": ("Color", COLORS), "shape": ("Shape", SHAPES)}
PLAIN = "plain target"


def edit_pairs_for(kind: str, n: int, seed: int) -> list[tuple[Scene, Scene]]:
    """``n`` (source scene, target scene) pairs that differ in ``kind`` only, single objects, drawn
    with ``default_rng([seed, kind index])`` from every one-object scene."""
    if kind not in KINDS:
        raise HRVInputError(f"unknown toy edit kind {kind!r}; use {' or '.join(KINDS)}")
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    scenes = [s for s in all_scenes() if s.count == "one"]
    values = KINDS[kind][1]
    out = []
    for i in rng.permutation(len(scenes))[:n]:
        src = scenes[i]
        others = [v for v in values if v != getattr(src, kind)]
        new = others[int(rng.integers(len(others)))]
        out.append((src, Scene(**{**src.labels(), kind: new})))
    return out


def object_mask(image: np.ndarray) -> np.ndarray:
    """Pixels that are object (or its anti-aliased rim): far from the median border colour, dilated by one pixel."""
    img = _unit(image)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    dist = np.sqrt(((img - np.median(border, axis=0)) ** 2).sum(axis=-1))
    return _dilate(dist > OBJECT_DISTANCE)


def _unit(image) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    return img / 255.0 if img.max() > 1.5 else img


def measure(source, edited, kind: str, target: Scene) -> dict[str, float]:
    """Success, kept and background moved of one edit (see the module docstring)."""
    src, out = _unit(source), _unit(edited)
    a, b = classify(src), classify(out)
    others = [
        x for x in ATTRIBUTES if x != kind and a[x] is not None
    ]  # unreadable in the source: not counted
    background = ~(object_mask(src) | object_mask(out))
    moved = float(np.abs(src - out)[background].mean() * 255) if background.any() else float("nan")
    return {
        "success": float(b[kind] == getattr(target, kind)),
        "kept": float(np.mean([a[x] == b[x] for x in others])) if others else float("nan"),
        "background_moved": moved,
    }


Render = Callable[[list[tuple[str, str]], str, str, int, dict], list[dict]]


def run_toy_edits(
    render: Render,
    methods: Sequence[str],
    *,
    captions: int = 12,
    seeds: Sequence[int] = (0,),
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (kind, method, pair, seed) with the three measures.

    ``render(prompt_pairs, concept, method, seed, windows)`` returns, per pair, ``{"source": image,
    method: image}`` (the engine, or a stand-in in tests); ``windows`` is ``{}`` for a method's own
    windows and ``{"cross": 0, "self": 0}`` for the plain-target row.
    """
    rows = []
    for kind, (concept, _) in KINDS.items():
        pairs = edit_pairs_for(kind, captions, seed)
        prompts = [(s.caption(), t.caption()) for s, t in pairs]
        runs = [(m, m, {}) for m in methods] + [(PLAIN, methods[0], {"cross": 0.0, "self": 0.0})]
        for label, method, windows in runs:
            for s in seeds:
                images = render(prompts, concept, method, int(s), windows)
                for i, ((src, tgt), got) in enumerate(zip(pairs, images, strict=True)):
                    m = measure(got["source"], got[method], kind, tgt)
                    rows.append(
                        {
                            "kind": kind,
                            "method": label,
                            "pair": i,
                            "seed": int(s),
                            "source": src.caption(),
                            "target": tgt.caption(),
                            **{k: m[k] for k in ("success", "kept", "background_moved")},
                        }
                    )
    return pd.DataFrame(rows)


def summarize(edits: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, method) and over both kinds (kind ``all``): n, success, kept, background moved (means)."""
    rows = []
    for kind in [*dict.fromkeys(edits["kind"]), "all"]:
        sub = edits if kind == "all" else edits[edits["kind"] == kind]
        for method, g in sub.groupby("method", sort=False):
            rows.append(
                {
                    "kind": kind,
                    "method": method,
                    "n": len(g),
                    "success": g["success"].mean(),
                    "kept": g["kept"].mean(),
                    "background_moved": g["background_moved"].mean(),
                }
            )
    return pd.DataFrame(rows)


def _html(table: pd.DataFrame, title: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>" for v in row
        )
        + "</tr>"
        for row in table.itertuples(index=False)
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #999;padding:4px 8px}"
        f"</style></head><body><h3>{html.escape(title)}</h3><table><tr>{head}</tr>{body}</table></body></html>\n"
    )


def engine_render(pipe, hrv, *, steps: int, guidance_scale: float, size: int = 32) -> Render:
    """A ``Render`` on the editing engine with the toy model and its HRVs (one pair per batch
    element; the whole list in one call)."""
    from hrv.editing.stage import render_pairs

    def render(prompts, concept, method, seed, windows):
        return render_pairs(
            pipe,
            prompts,
            [method],
            seed,
            hrv=hrv,
            concept=concept,
            steps=steps,
            height=size,
            width=size,
            guidance_scale=guidance_scale,
            cross_steps=windows.get("cross"),
            self_steps=windows.get("self"),
            token_map="aligned",
            batch_size=len(prompts),
        )

    return render


def write_toy_edits(
    model: str | Path,
    hrv_path: str | Path,
    edits_csv: str | Path,
    table_csv: str | Path,
    table_html: str | Path,
    *,
    methods: Sequence[str],
    captions: int = 12,
    seeds: Sequence[int] = (0,),
    seed: int = 0,
    steps: int = 10,
    guidance_scale: float = 5.0,
) -> pd.DataFrame:
    """Measure the methods on the toy model with the toy HRVs; write per-edit rows and the table."""
    import torch

    from hrv.determinism import make_batch_invariant
    from hrv.hrvfile import load_hrv
    from hrv.models import load_pipeline

    torch.set_num_threads(1)
    pipe = load_pipeline(str(model), device="cpu", dtype="float32")
    make_batch_invariant(pipe)
    render = engine_render(pipe, load_hrv(hrv_path), steps=steps, guidance_scale=guidance_scale)
    edits = run_toy_edits(render, methods, captions=captions, seeds=seeds, seed=seed)
    table = summarize(edits)
    with atomic_path(edits_csv) as tmp:
        edits.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    title = f"Toy-world edits ({captions} captions per kind x {len(seeds)} seed(s), {steps} steps)"
    write_text_atomic(table_html, _html(table, title))
    return table
