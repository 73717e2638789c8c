"""The editing benchmark sets (paper section 5.2; spec section 5): 225 word-swap pairs in five CSVs.

Each file ``resources/benchmarks/editing_<set>.csv`` has the columns ``source_prompt`` and
``target_prompt``; the two prompts of a pair differ in exactly one whitespace-separated word (the
edited word: ``blue`` -> ``brown``, ``polka-dot`` -> ``leopard``; a word may be several CLIP
tokens). The HRV concept is the set's, and the object noun (what BG-DINO looks for) is read off
the set's prompt template: ``a blue car`` -> ``car``, ``a bowl made of wood`` -> ``bowl``. An
optional ``object`` column overrides the noun.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from hrv.errors import HRVInputError

BENCHMARK_DIR = Path("resources/benchmarks")


@dataclass(frozen=True)
class SetInfo:
    concept: str  # the HRV concept of the set's edits
    template: str  # regex over the source prompt; group "object" is the object noun
    human: bool  # judged by people (Image Style, Weather) rather than by BG-DINO


SETS: dict[str, SetInfo] = {
    "color": SetInfo("Color", r"a (?P<word>\S+) (?P<object>\S+)", human=False),
    "material": SetInfo("Material", r"a (?P<object>\S+) made of (?P<word>\S+)", human=False),
    "geometric_patterns": SetInfo(
        "Geometric Patterns", r"a (?P<object>\S+) with a (?P<word>\S+) pattern", human=False
    ),
    "image_style": SetInfo("Image Style", r"a (?P<word>\S+) style painting of a (?P<object>\S+)", human=True),
    "weather_conditions": SetInfo(
        "Weather Conditions", r"a (?P<object>\S+) on a (?P<word>\S+) day", human=True
    ),
}


@dataclass(frozen=True)
class EditPair:
    set: str
    index: int  # 0-based row of the pair in its CSV (the header not counted)
    source_prompt: str
    target_prompt: str
    source_word: str  # the edited word as the source prompt has it
    target_word: str  # ... and as the target prompt has it
    word_position: int  # index of the edited word among the prompt's words
    concept: str
    object: str  # the object noun, e.g. "car" (spelled as in the prompt: "ballon")

    def to_dict(self) -> dict:
        return asdict(self)


def set_path(name: str, folder: str | Path = BENCHMARK_DIR) -> Path:
    return Path(folder) / f"editing_{name}.csv"


def check_set_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise HRVInputError(f"unknown editing set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    return list(names)


def edited_word(source: str, target: str) -> tuple[int, str, str]:
    """(position, source word, target word) of the one word in which two prompts differ; a
    ValueError if they do not differ in exactly one word."""
    s, t = source.split(), target.split()
    diff = [i for i, (a, b) in enumerate(zip(s, t, strict=False)) if a != b]
    if len(s) != len(t) or len(diff) != 1:
        raise ValueError("the prompts must have the same words but one")
    i = diff[0]
    return i, s[i], t[i]


def read_set(name: str, path: str | Path | None = None) -> list[EditPair]:
    """The pairs of set ``name`` (file ``path``, default ``resources/benchmarks/editing_<name>.csv``).

    A malformed file (missing columns, an empty prompt, prompts that differ in more or less than
    one word, a prompt off the set's template without an ``object`` column) is an error naming the
    file and the row.
    """
    check_set_names([name])
    info = SETS[name]
    path = Path(path) if path is not None else set_path(name)
    if not path.is_file():
        raise HRVInputError(f"editing set file {path} does not exist; the five sets are in {BENCHMARK_DIR}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ("source_prompt", "target_prompt") if c not in columns]
        if missing:
            raise HRVInputError(
                f"editing set file {path} lacks column(s) {', '.join(missing)}; it needs source_prompt,target_prompt"
            )
        pairs = []
        for index, row in enumerate(reader):
            line = index + 2  # the header is line 1
            where = f"editing set file {path}, line {line}"
            if None in row:
                raise HRVInputError(f"{where}: more fields than the header's {len(columns)}; quote commas")
            source = (row["source_prompt"] or "").strip()
            target = (row["target_prompt"] or "").strip()
            if not source or not target:
                raise HRVInputError(f"{where}: empty source_prompt or target_prompt")
            try:
                position, a, b = edited_word(source, target)
            except ValueError:
                raise HRVInputError(
                    f"{where}: {source!r} and {target!r} must differ in exactly one word"
                ) from None
            obj = (row.get("object") or "").strip()
            if not obj:
                m = re.fullmatch(info.template, source)
                if not m or m.group("word") != a:
                    raise HRVInputError(
                        f"{where}: {source!r} does not follow the {name} template"
                        f" {info.template!r}; add an 'object' column naming the object noun"
                    )
                obj = m.group("object")
            pairs.append(EditPair(name, index, source, target, a, b, position, info.concept, obj))
    if not pairs:
        raise HRVInputError(f"editing set file {path} has no pairs")
    return pairs


def read_sets(names: list[str], folder: str | Path = BENCHMARK_DIR) -> dict[str, list[EditPair]]:
    return {n: read_set(n, set_path(n, folder)) for n in check_set_names(names)}


def truncate(pairs: list[EditPair], max_pairs: int | None) -> list[EditPair]:
    return pairs if max_pairs is None else pairs[:max_pairs]
