"""Editing pairs with several methods at once, batched over pairs and seeds; saving the results.

Three lines from Python::

    from hrv.editing import edit_pairs, save_edit_outputs
    result = edit_pairs("sd14", [("a blue car", "a red car")], ["p2p", "p2p_hrv"], [10, 20],
                        hrv="sd14", concept="Color")
    save_edit_outputs(result, "out/blue-red")

Every (pair, seed) is one group of branches ``[source, target of method 1, target of method 2,
...]`` from the seed's latent (``initial_latents(pipe, [0], seed, ...)``), so all methods share
one source image; ``batch_size`` groups run per pipeline call. The source branch is never
changed, so with ``batch_invariant`` the source equals plain sampling of the source prompt, and
each image equals the one a run of its group alone would give.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hrv.control import Controller, Layout, UNetLayers, installed
from hrv.editing.injection import check_fraction
from hrv.editing.method import Method, Plan
from hrv.editing.methods import get_method
from hrv.editing.schedulers import SCHEDULERS, with_scheduler
from hrv.editing.tokens import TOKEN_MAPS, AlignedPair, align_pair
from hrv.errors import HRVInputError
from hrv.hrvfile import HRVSet, load_hrv
from hrv.io import atomic_dir, check_replaceable
from hrv.polysemy import OFFICIAL_HRVS

PairSpec = tuple[str, str] | tuple[str, str, str | None]


@dataclass
class EditResult:
    """Images per method (``"source"`` first), per pair, per seed: ``images[name][pair][seed_index]``."""

    pairs: list[AlignedPair]
    seeds: list[int]
    methods: list[str]
    images: dict[str, list[list[Any]]]
    settings: dict[str, Any] = field(default_factory=dict)


def resolve_hrv(hrv: HRVSet | str | Path) -> HRVSet:
    """An ``HRVSet``, an ``hrv.npz`` path, or ``sd14``/``sdxl`` (the released HRVs, imported here)."""
    if isinstance(hrv, HRVSet):
        return hrv
    if str(hrv) in OFFICIAL_HRVS:
        from hrv.steps import import_official

        root = Path(__file__).resolve().parents[3]
        reference = root / "resources/reference"
        if not reference.is_dir():
            reference = Path("resources/reference")
        with tempfile.TemporaryDirectory() as tmp:
            return import_official(
                str(hrv), Path(tmp) / "hrv.npz", reference, reference.parent / "concepts/concepts_34x10.csv"
            )
    return load_hrv(hrv)


def edit_pairs(
    pipe,
    pairs: Sequence[PairSpec],
    methods: Sequence[str],
    seeds: Sequence[int] | str | int,
    *,
    hrv: HRVSet | str | Path | None = None,
    concept: str | None = None,
    steps: int = 50,
    height: int | None = None,
    width: int | None = None,
    guidance_scale: float = 7.5,
    cross_steps: float | None = None,
    self_steps: float | None = None,
    token_map: str = "aligned",
    batch_size: int = 1,
    batch_invariant: bool = True,
    progress: bool = False,
    scheduler: str | None = None,
) -> EditResult:
    """Edit each pair ``(source prompt, target prompt[, edited word])`` from each seed with each method.

    ``hrv``/``concept``: the HRVs (an ``HRVSet``, an ``hrv.npz``, ``sd14`` or ``sdxl``) and the concept
    whose vector weights the heads (needed by ``p2p_hrv``). ``cross_steps``/``self_steps``: window
    fractions for every method (None = each method's own). ``token_map``: ``aligned`` or ``released``.
    ``batch_size``: (pair, seed) groups per pipeline call. ``scheduler``: ``pndm`` or ``ddim`` for the
    source and every method (None = the pipeline's own). Methods that are not a branch of the joint
    batch (``joint`` False: SDEdit) edit each finished source latent after it. Every input is
    checked before sampling.
    """
    from hrv.accumulate import n_unet_evaluations
    from hrv.determinism import make_batch_invariant
    from hrv.generate import default_size, parse_seeds
    from hrv.models import initial_latents, load_pipeline
    from hrv.weakening import decode_each

    methods = list(methods)
    if not methods:
        raise HRVInputError("no editing method given; choose from p2p, p2p_hrv, ...")
    if len(set(methods)) != len(methods):
        raise HRVInputError(f"methods {methods} repeat a method")
    chosen: list[Method] = [get_method(m) for m in methods]
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise HRVInputError(f"unknown editing scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    check_fraction(cross_steps, "cross_steps")
    check_fraction(self_steps, "self_steps")
    if token_map not in TOKEN_MAPS:
        raise HRVInputError(f"unknown token map {token_map!r}; choose from {', '.join(TOKEN_MAPS)}")
    if batch_size < 1:
        raise HRVInputError(f"batch_size must be >= 1, got {batch_size}")
    if steps < 1:
        raise HRVInputError(f"steps must be >= 1, got {steps}")
    seed_list = parse_seeds(seeds)
    if isinstance(pipe, str | Path):
        pipe = load_pipeline(pipe)
    if scheduler is not None:
        pipe = with_scheduler(pipe, scheduler)  # the same modules, a fresh scheduler of that kind
    if not pairs:
        raise HRVInputError("no editing pairs given")
    aligned = []
    for spec in pairs:
        if len(spec) not in (2, 3):
            raise HRVInputError(f"a pair is (source, target) or (source, target, word), got {spec!r}")
        aligned.append(
            align_pair(pipe.tokenizer, spec[0], spec[1], spec[2] if len(spec) == 3 else None, token_map)
        )
    layers = UNetLayers.from_unet(pipe.unet)
    weights, hrv_set = None, None
    if any(m.uses_hrv for m in chosen) or hrv is not None or concept is not None:
        if hrv is None or concept is None:
            names = [m.name for m in chosen if m.uses_hrv]
            raise HRVInputError(
                f"methods {names or methods} need HRVs and a concept: give hrv (--hrv) and concept (--concept)"
            )
        hrv_set = resolve_hrv(hrv)
        hrv_set.check_heads(layers.heads.names())
        weights = torch.from_numpy(np.asarray(hrv_set.vector(concept), dtype=np.float32))
    height = height or default_size(pipe)
    width = width or default_size(pipe)

    if batch_invariant:
        make_batch_invariant(pipe)
    n_evals = n_unet_evaluations(pipe, steps)
    device = pipe.unet.device
    # SDEdit-like methods edit the finished source instead of taking a branch of the batch
    joint = [m for m in chosen if getattr(m, "joint", True)]
    after = [m for m in chosen if not getattr(m, "joint", True)]
    group = 1 + len(joint)
    # each method's settings, checked before sampling (a layer outside the model, SDEdit's strength)
    plan = Plan(layers, tuple(aligned), 1, n_evals, steps, weights, cross_steps, self_steps, device)
    method_settings = {m.name: m.settings(plan) for m in chosen}
    groups = [(p, s) for p in range(len(aligned)) for s in range(len(seed_list))]
    images: dict[str, list[list[Any]]] = {
        name: [[None] * len(seed_list) for _ in aligned] for name in ["source", *methods]
    }
    bar = tqdm(total=len(groups), desc="edit", unit="image set", disable=not progress)
    for start in range(0, len(groups), batch_size):
        chunk = groups[start : start + batch_size]
        batch_pairs = tuple(aligned[p] for p, _ in chunk)
        edits = []
        for slot, method in enumerate(joint, start=1):
            plan = Plan(layers, batch_pairs, slot, n_evals, steps, weights, cross_steps, self_steps, device)
            edits += method.edits(plan)
        ctl = Controller(
            edits, layout=Layout(guidance=guidance_scale > 1.0, group=group), batch_invariant=batch_invariant
        )
        prompts = [text for p, _ in chunk for text in [aligned[p].source] + [aligned[p].target] * len(joint)]
        latents = torch.cat(
            [
                initial_latents(pipe, [0], seed_list[s], height, width).expand(group, -1, -1, -1)
                for _, s in chunk
            ]
        )
        with installed(pipe.unet, ctl), torch.no_grad():
            out = pipe(
                prompt=prompts,
                latents=latents.clone(),
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
                output_type="latent",
            )
        if ctl.step != n_evals:
            raise RuntimeError(f"expected {n_evals} UNet evaluations, counted {ctl.step}")
        decoded = decode_each(pipe, out.images)
        for g, (p, s) in enumerate(chunk):
            for b, name in enumerate(["source", *(m.name for m in joint)]):
                images[name][p][s] = decoded[g * group + b]
        for method in after:
            edited = method.edit_sources(
                pipe,
                out.images[::group],
                [aligned[p].target for p, _ in chunk],
                [seed_list[s] for _, s in chunk],
                steps=steps,
                guidance_scale=guidance_scale,
            )
            for (p, s), image in zip(chunk, decode_each(pipe, edited), strict=True):
                images[method.name][p][s] = image
        bar.update(len(chunk))
    bar.close()

    settings = {
        "methods": method_settings,
        "seeds": seed_list,
        "concept": concept,
        "hrv": None if hrv is None else (str(hrv) if not isinstance(hrv, HRVSet) else hrv.meta.get("source")),
        "token_map": token_map,
        "sampling": {
            "steps": steps,
            "unet_evaluations": n_evals,
            "scheduler": type(pipe.scheduler).__name__,
            "scheduler_setting": scheduler,  # pndm / ddim, None = the pipeline's own
            "guidance_scale": guidance_scale,
            "height": height,
            "width": width,
        },
        "batch_size": batch_size,
        "batch_invariant": batch_invariant,
        "pairs": [
            {
                "source": a.source,
                "target": a.target,
                "word": a.word,
                "edited_token_positions": list(a.edited),
            }
            for a in aligned
        ],
    }
    return EditResult(aligned, seed_list, methods, images, settings)


OWNER = "hrv edit"  # the marker of an output folder of save_edit_outputs


def save_edit_outputs(result: EditResult, out_dir: str | Path) -> Path:
    """Write ``source/seedNNNN.png``, ``<method>/seedNNNN.png``, ``grid.png`` (rows: source and each
    method, columns: seeds) and ``edit.json`` (every setting); several pairs go to ``pairNNN/``
    folders of that layout, ``edit.json`` at the top. Atomic: the folder appears when complete."""
    from hrv.generate import save_grid

    out = Path(out_dir)
    check_replaceable(out, OWNER)
    names = ["source", *result.methods]
    with atomic_dir(out, owner=OWNER) as tmp:
        for p, pair in enumerate(result.pairs):
            folder = tmp if len(result.pairs) == 1 else tmp / f"pair{p:03d}"
            for name in names:
                (folder / name).mkdir(parents=True, exist_ok=True)
                for seed, image in zip(result.seeds, result.images[name][p], strict=True):
                    image.save(folder / name / f"seed{seed:04d}.png", format="PNG")
            save_grid(
                {name: result.images[name][p] for name in names},
                [f"seed {s}" for s in result.seeds],
                folder / "grid.png",
                title=f"{pair.source} -> {pair.target}",
            )
        (tmp / "edit.json").write_text(json.dumps(result.settings, indent=2) + "\n", encoding="utf-8")
    return out
