"""Concept lists: a CSV with columns ``concept,word``; concept order = HRV row order."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hrv.errors import HRVInputError


@dataclass(frozen=True)
class ConceptSet:
    names: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]  # words[c] = the concept-words of concept c

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of a concept by name (case-insensitive), with a clear error if unknown."""
        lowered = [n.lower() for n in self.names]
        if name.lower() not in lowered:
            raise HRVInputError(f"unknown concept {name!r}; known concepts: {', '.join(self.names)}")
        return lowered.index(name.lower())


def read_concepts(path: str | Path) -> ConceptSet:
    """Read a ``concept,word`` CSV. Concepts keep the order of their first appearance."""
    path = Path(path)
    if not path.is_file():
        raise HRVInputError(f"concept file {path} does not exist; give a CSV with columns concept,word")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("concept", "word") if c not in fields]
        if missing:
            raise HRVInputError(
                f"concept file {path} lacks column(s) {', '.join(missing)} (found: {', '.join(fields) or 'none'});"
                " the header must be 'concept,word'"
            )
        order: list[str] = []
        words: dict[str, list[str]] = {}
        seen: dict[str, tuple[int, str]] = {}  # word (lower case) -> (line, concept) of its first row
        for line_no, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            concept, word = row["concept"], row["word"]
            if not concept:
                raise HRVInputError(f"concept file {path}, line {line_no}: empty concept name")
            if concept not in words:
                order.append(concept)
                words[concept] = []
            if word:
                if word.lower() in seen:
                    first_line, first_concept = seen[word.lower()]
                    raise HRVInputError(
                        f"concept file {path}: the word {word!r} is in line {first_line} ({first_concept})"
                        f" and line {line_no} ({concept}); each word may appear once: remove one of the rows"
                    )
                seen[word.lower()] = (line_no, concept)
                words[concept].append(word)
    if not order:
        raise HRVInputError(f"concept file {path} has no concepts")
    empty = [c for c in order if not words[c]]
    if empty:
        raise HRVInputError(
            f"concept file {path}: concept(s) {', '.join(empty)} have no words; give each at least one"
        )
    return ConceptSet(tuple(order), tuple(tuple(words[c]) for c in order))
