"""Ordered-weakening experiments: the paper's YAML plus user-added ones, validated into prompts.

An experiment fills a template's ``{a}``/``{b}`` slots from item lists (cartesian product, ``a``
varying slowest) and names the concept whose heads are weakened and the slot whose item alone is
the CLIP text ("copper" for "a bowl made of copper"). Item lists are given inline or by the name
of a list under the file's ``items:``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrv.errors import HRVInputError

SLOTS = ("a", "b")
ORDERS = ("MoRHF", "LeRHF", "random")  # head orders of ordered weakening


@dataclass(frozen=True)
class WeakeningPrompt:
    index: int  # position in the experiment's prompt list
    text: str
    items: dict[str, str]  # slot -> item
    scored_text: str  # the CLIP text: the weakened concept's item alone

    @property
    def slug(self) -> str:
        """File-name stem: index and items, e.g. ``p003_red_car``."""
        words = "_".join(self.items[s] for s in sorted(self.items))
        return f"p{self.index:03d}_" + (re.sub(r"[^A-Za-z0-9]+", "-", words).strip("-") or "x")


@dataclass(frozen=True)
class Experiment:
    name: str  # identifier used in paths, e.g. "image_style"
    concept: str  # HRV concept whose heads are weakened
    template: str
    items: dict[str, tuple[str, ...]]  # slot -> items
    scored: str  # slot of the CLIP text

    def prompts(self, max_items: int | None = None) -> list[WeakeningPrompt]:
        slots = sorted(self.items)
        lists = [self.items[s][:max_items] if max_items else self.items[s] for s in slots]
        out = []
        for i, combo in enumerate(itertools.product(*lists)):
            chosen = dict(zip(slots, combo, strict=True))
            text = self.template.format(**chosen)
            out.append(WeakeningPrompt(i, text, chosen, scored_text(text, self.items[self.scored])))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "concept": self.concept,
            "template": self.template,
            **{f"items_{s}": list(v) for s, v in self.items.items()},
            "scored": self.scored,
        }


def scored_text(prompt: str, items: Sequence[str]) -> str:
    """The CLIP text of a prompt: the first of the scored slot's items that occurs in it, as the
    released scoring chose it. Usually the prompt's own item, but an earlier item that is part of it
    wins: "table" for "photo of a coffee table" (the paper's furniture list has "table" first)."""
    return next(item for item in items if item in prompt)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def template_slots(template: str) -> list[str]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise HRVInputError(
            f"template {template!r} is malformed ({err}); use slots like {{a}} and {{b}}"
        ) from err
    bad = [f for f in fields if f not in SLOTS]
    if bad:
        raise HRVInputError(f"template {template!r} has slot(s) {bad}; only {{a}} and {{b}} are allowed")
    return sorted(set(fields))


def parse_experiment(
    spec: dict[str, Any], named_items: dict[str, Sequence[str]], concepts: Iterable[str] | None = None
) -> Experiment:
    """One experiment from its spec; every problem gets an error naming the experiment."""
    if not isinstance(spec, dict):
        raise HRVInputError(f"a weakening experiment must be a mapping, got {spec!r}")
    label = spec.get("name") or spec.get("concept") or "?"
    concept, template = spec.get("concept"), spec.get("template")
    if not isinstance(concept, str) or not concept.strip():
        raise HRVInputError(f"weakening experiment {label!r} has no 'concept'; name the concept to weaken")
    if not isinstance(template, str) or not template.strip():
        raise HRVInputError(f"weakening experiment {label!r} has no 'template' (e.g. 'photo of a {{a}}')")
    if concepts is not None:
        known = {c.lower(): c for c in concepts}
        if concept.lower() not in known:
            raise HRVInputError(
                f"weakening experiment {label!r}: unknown concept {concept!r}; known concepts: {', '.join(known.values())}"
            )
        concept = known[concept.lower()]
    slots = template_slots(template)
    if not slots:
        raise HRVInputError(
            f"weakening experiment {label!r}: template {template!r} has no {{a}} or {{b}} slot"
        )
    items: dict[str, tuple[str, ...]] = {}
    for slot in slots:
        raw = spec.get(f"items_{slot}")
        if raw is None:
            raise HRVInputError(
                f"weakening experiment {label!r}: template {template!r} has slot {{{slot}}} but no 'items_{slot}';"
                f" give a list of items or the name of a list under 'items:'"
            )
        if isinstance(raw, str):
            if raw not in named_items:
                raise HRVInputError(
                    f"weakening experiment {label!r}: items_{slot} names the list {raw!r}, which is not under"
                    f" 'items:' (known: {', '.join(sorted(named_items))})"
                )
            raw = named_items[raw]
        values = tuple(str(v) for v in raw)
        if not values or any(not v.strip() for v in values):
            raise HRVInputError(
                f"weakening experiment {label!r}: items_{slot} is empty or has an empty item; give at least one item"
            )
        items[slot] = values
    extra = [s for s in SLOTS if s not in slots and spec.get(f"items_{s}") is not None]
    if extra:
        raise HRVInputError(
            f"weakening experiment {label!r}: items_{extra[0]} is given but the template has no {{{extra[0]}}}"
        )
    scored = spec.get("scored", slots[0] if len(slots) == 1 else None)
    if scored not in slots:
        raise HRVInputError(
            f"weakening experiment {label!r}: 'scored' must name the slot of the weakened concept's item"
            f" ({' or '.join(slots)}), got {scored!r}"
        )
    name = spec.get("name") or slugify(concept)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
        raise HRVInputError(
            f"weakening experiment name {name!r} may hold only letters, digits, '_', '.', '-'"
        )
    return Experiment(str(name), concept, template, items, scored)


def load_experiments(
    path: str | Path | None = None,
    extra: Sequence[dict[str, Any]] = (),
    *,
    select: Sequence[str] | None = None,
    concepts: Iterable[str] | None = None,
    missing_hint: str = "",
) -> list[Experiment]:
    """The experiments of ``path`` (the paper's YAML) plus ``extra`` ones, optionally only ``select``.

    ``concepts``: the HRVs' concepts; a selected experiment that weakens another concept is an
    error that ends with ``missing_hint`` (what to do); unselected ones are not checked."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise HRVInputError(f"weakening experiments file {path} does not exist")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise HRVInputError(f"{path} must be a mapping with 'items' and 'experiments'")
    named = {str(k): list(v or []) for k, v in (data.get("items") or {}).items()}
    specs = list(data.get("experiments") or []) + list(extra or [])
    exps = [parse_experiment(s, named) for s in specs]
    names = [e.name for e in exps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise HRVInputError(
            f"weakening experiment name(s) {dupes} occur twice; give added experiments their own 'name'"
        )
    if not exps:
        raise HRVInputError("no weakening experiments: give an experiments file or added experiments")
    if select is not None:
        unknown = [s for s in select if s not in names]
        if unknown:
            raise HRVInputError(f"unknown weakening experiment(s) {unknown}; known: {', '.join(names)}")
        exps = [e for e in exps if e.name in set(select)]
        exps.sort(key=lambda e: list(select).index(e.name))
    if concepts is not None:  # only the selected experiments must name a known concept
        known = {c.lower(): c for c in concepts}
        for e in exps:
            if e.concept.lower() not in known:
                raise HRVInputError(
                    f"weakening experiment {e.name!r} weakens concept {e.concept!r}, which the HRVs lack"
                    f" (they have {', '.join(known.values())}); {missing_hint or 'choose other experiments'}"
                )
        exps = [dataclasses.replace(e, concept=known[e.concept.lower()]) for e in exps]
    return exps


def default_k_grid(n_heads: int) -> list[int]:
    """0, 1, 11, ..., H for up to a few hundred heads (SD v1.x); 0, 11, 111, ..., H beyond (SDXL)."""
    start, step = (1, 10) if n_heads <= 300 else (11, 100)
    return [0, *range(start, n_heads, step), n_heads]


def resolve_k(
    weak_cfg: dict[str, Any], model_spec: dict[str, Any], hrv_path: str | Path | None = None
) -> list[int]:
    """The k grid: ``weakening.k``, else the model preset's ``weakening_k``, else 0, 1, 11, ..., H
    with H read from an existing HRV file."""
    ks = weak_cfg.get("k")
    if ks is None:
        ks = model_spec.get("weakening_k")
    if ks is None and hrv_path is not None and Path(hrv_path).is_file():
        from hrv.hrvfile import load_hrv

        ks = default_k_grid(len(load_hrv(hrv_path).heads))
    if ks is None:
        raise HRVInputError(
            "no k grid for ordered weakening: the model preset has no weakening_k; set weakening.k"
            " (e.g. [0, 1, 11, ..., H] for a model with H cross-attention heads)"
        )
    ks = [int(k) for k in ks]
    if any(k < 0 for k in ks) or len(set(ks)) != len(ks):
        raise HRVInputError(f"weakening.k {ks} must hold distinct head counts >= 0")
    return ks


@dataclass(frozen=True)
class WeakeningJob:
    experiment: str
    order: str
    seed: int
    ks: tuple[int, ...]

    @property
    def label(self) -> str:
        return "ks" + "-".join(str(k) for k in self.ks)

    def path(self, out: str) -> str:
        return f"{out}/weakening/{self.experiment}/{self.order}/seed{self.seed}/{self.label}"


def plan_jobs(
    experiments: Sequence[Experiment],
    orders: Sequence[str],
    seeds: Sequence[int],
    ks: Sequence[int],
    k_batch: int | None,
) -> list[WeakeningJob]:
    """One sampling job per (experiment, order, seed, batch of k values).

    The k grid is cut into consecutive batches of ``k_batch`` values in config order, so appending k
    values re-runs only the last, partial batch (if any) and the new ones; a new seed or experiment
    adds jobs and changes none.
    """
    bad = [o for o in orders if o not in ORDERS]
    if bad or not orders:
        raise HRVInputError(
            f"weakening.orders {list(orders)} must be a non-empty subset of {', '.join(ORDERS)}"
        )
    if not seeds or len(set(seeds)) != len(seeds):
        raise HRVInputError(f"weakening.seeds {list(seeds)} must be a non-empty list of distinct seeds")
    ks = [int(k) for k in ks]
    if not ks:
        raise HRVInputError("the k grid is empty; give at least one head count (weakening.k)")
    size = int(k_batch) if k_batch else len(ks)
    chunks = [tuple(ks[i : i + size]) for i in range(0, len(ks), size)]
    return [
        WeakeningJob(e.name, o, int(s), c) for e in experiments for o in orders for s in seeds for c in chunks
    ]


def truncated(exp: Experiment, max_items: int | None) -> Experiment:
    """The experiment with each slot's item list cut to its first ``max_items`` (demo runs)."""
    if not max_items:
        return exp
    return Experiment(
        exp.name, exp.concept, exp.template, {s: v[:max_items] for s, v in exp.items.items()}, exp.scored
    )


def job_dirs(
    jobs: Sequence[WeakeningJob], out: str, experiment: str, seeds: Sequence[int] | None = None
) -> list[str]:
    """The sampling-job folders of one experiment (optionally only some seeds), in plan order."""
    return [j.path(out) for j in jobs if j.experiment == experiment and (seeds is None or j.seed in seeds)]
