"""Which tokens Attend-and-Excite excites, and the benchmark prompt sets.

A&E excites the subjects' nouns only ("We apply A&E or A&E-HRV only to noun tokens"). For the
benchmarks' "a {noun} and a {noun}" and "a {colour} {noun} and a {colour} {noun}" the subjects
are the last word of each half of the prompt split at " and ": found by character position, so a
repeated word ("a cat and a cat") gives both occurrences. A subject of several CLIP tokens
("porcupine" -> ``porcu``, ``pine``) is excited through every one of its tokens by default
(``subword="all"``), or through its first or last token only. Subjects can also be named (words
of the prompt, each of which must occur once) or given as token positions (SOT = 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hrv.errors import HRVInputError
from hrv.tokens import check_positions, prompt_tokens, word_positions

SUBWORD_CHOICES = ("all", "first", "last")
BENCHMARK_SETS = {
    "type1": "resources/benchmarks/multi_concept_type1.txt",
    "type2": "resources/benchmarks/multi_concept_type2.txt",
}


@dataclass(frozen=True)
class Subject:
    """One excited subject: its word, its token positions (SOT = 0) and its HRV concept."""

    word: str
    positions: tuple[int, ...]
    concept: str


def _last_words(prompt: str) -> list[tuple[int, int]]:
    """Character spans of the last word of each " and "-separated half of ``prompt``."""
    spans, offset = [], 0
    for part in prompt.split(" and "):
        words = list(re.finditer(r"[^\W_]+(?:[-'][^\W_]+)*", part))
        if not words:
            raise HRVInputError(
                f"prompt {prompt!r}: the part {part!r} has no word to excite; name the subjects"
            )
        spans.append((offset + words[-1].start(), offset + words[-1].end()))
        offset += len(part) + len(" and ")
    return spans


def _pick(positions: list[int], subword: str) -> tuple[int, ...]:
    if subword not in SUBWORD_CHOICES:
        raise HRVInputError(f"subword must be one of {', '.join(SUBWORD_CHOICES)}, got {subword!r}")
    if subword == "first":
        return (positions[0],)
    if subword == "last":
        return (positions[-1],)
    return tuple(positions)


def find_subjects(
    tokenizer,
    prompt: str,
    words: Sequence[str] | None = None,
    positions: Sequence[int | Sequence[int]] | None = None,
    concepts: str | Sequence[str] = "Animals",
    subword: str = "all",
) -> list[Subject]:
    """The subjects to excite in ``prompt``, each with its token positions and HRV concept.

    Default: the last word of each " and "-separated part (the benchmarks' nouns). ``words``: named
    words of the prompt. ``positions``: token positions (an int or a list per subject).
    ``concepts``: one concept for all subjects, or one per subject.
    """
    if words is not None and positions is not None:
        raise HRVInputError("name the subjects by words or by token positions, not both")
    pt = prompt_tokens(tokenizer, prompt)
    found: list[tuple[str, tuple[int, ...]]] = []
    if positions is not None:
        for item in positions:
            group = [item] if isinstance(item, int) else list(item)
            checked = check_positions(pt, group, what="subject token")
            found.append((" ".join(pt.tokens[p].replace("</w>", "") for p in checked), tuple(checked)))
    elif words is not None:
        for word in words:
            found.append((word, _pick(word_positions(tokenizer, prompt, word), subword)))
    else:
        if " and " not in prompt:
            raise HRVInputError(
                f"prompt {prompt!r} has no ' and ': name the subjects (--subjects WORD WORD) or their tokens"
            )
        for start, end in _last_words(prompt):
            hit = [
                i
                for i, (s, e) in enumerate(pt.spans)
                if 0 < i <= pt.n_prompt_tokens and s < end and e > start
            ]
            hit = check_positions(pt, hit, what=repr(prompt[start:end]))
            found.append((prompt[start:end], _pick(hit, subword)))
    if not found:
        raise HRVInputError(f"no subject to excite in {prompt!r}")
    concept_list = [concepts] * len(found) if isinstance(concepts, str) else list(concepts)
    if len(concept_list) != len(found):
        raise HRVInputError(
            f"{len(concept_list)} concepts for {len(found)} subjects ({', '.join(w for w, _ in found)});"
            " give one concept, or one per subject"
        )
    flat = [p for _, ps in found for p in ps]
    if len(set(flat)) != len(flat):
        raise HRVInputError(f"subjects of {prompt!r} share a token position: {found}")
    return [Subject(w, ps, c) for (w, ps), c in zip(found, concept_list, strict=True)]


def token_layout(subjects: Sequence[Subject]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(excited token positions, the concept of each): one entry per excited token."""
    positions = tuple(p for s in subjects for p in s.positions)
    concepts = tuple(s.concept for s in subjects for _ in s.positions)
    return positions, concepts


def read_prompt_set(path: str | Path) -> list[str]:
    """Prompts of a benchmark file, one a line (blank lines skipped, order kept)."""
    path = Path(path)
    if not path.is_file():
        raise HRVInputError(f"prompt set {path} does not exist; give a text file with one prompt a line")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise HRVInputError(f"prompt set {path} has no prompts")
    if len(set(prompts)) != len(prompts):
        raise HRVInputError(f"prompt set {path} repeats a prompt; each prompt names one image folder")
    return prompts
