"""Finding a word's token positions in a prompt, as the text encoder sees it.

Positions index the 77-token sequence the pipeline encodes: ``<SOT>`` at 0, the prompt's tokens
from 1, then ``<EOT>`` and padding. A word can span several tokens ("olive-colored" is ``olive``,
``-``, ``colored``): all of them are returned. A word is matched case-insensitively as a whole
word (not inside a longer word), so "rose" matches the first part of "rose-colored" but not
"roses". A word that occurs more than once needs an explicit choice: ``occurrence=n`` (counting
from 1) or ``occurrence="all"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hrv.errors import HRVInputError

Occurrence = int | Literal["all"] | None


@dataclass(frozen=True)
class PromptTokens:
    """The prompt's tokens as the encoder sees them (``<SOT>`` at position 0)."""

    prompt: str
    tokens: tuple[str, ...]  # token strings of positions 0 .. n (SOT, the prompt's tokens, EOT)
    spans: tuple[
        tuple[int, int], ...
    ]  # character span of each prompt token in ``prompt``; (0, 0) for SOT/EOT
    max_length: int  # the encoder's sequence length (77)

    @property
    def n_prompt_tokens(self) -> int:
        return len(self.tokens) - 2

    def describe(self) -> str:
        """``1:an 2:olive 3:- ...`` for error messages."""
        return " ".join(
            f"{i}:{t.replace('</w>', '')}" for i, t in enumerate(self.tokens) if 0 < i <= self.n_prompt_tokens
        )


def _token_spans_by_alignment(tokenizer, prompt: str, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character spans of tokens for tokenizers without offset mappings (the slow CLIP tokenizer).

    Each token's text is searched for in the lower-cased prompt after the previous token's end.
    """
    lowered = prompt.lower()
    spans, cursor = [], 0
    for tid in ids:
        text = tokenizer.decode([int(tid)]).replace("</w>", "").strip().lower()
        start = lowered.find(text, cursor) if text else -1
        if start < 0:
            raise HRVInputError(
                f"cannot align token {text!r} with the prompt {prompt!r} (the tokenizer normalises the text);"
                " select the token by its index instead"
            )
        spans.append((start, start + len(text)))
        cursor = start + len(text)
    return spans


def prompt_tokens(tokenizer, prompt: str) -> PromptTokens:
    """Tokenize ``prompt`` as the pipeline does and keep each token's character span."""
    max_length = int(getattr(tokenizer, "model_max_length", 77))
    if max_length > 10_000:  # tokenizers without a limit report a huge sentinel
        max_length = 77
    ids = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    spans: list[tuple[int, int]] | None = None
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        spans = [tuple(s) for s in enc["offset_mapping"]]
        if list(enc.input_ids) != ids:
            spans = None
    if spans is None:
        spans = _token_spans_by_alignment(tokenizer, prompt, ids)
    names = tokenizer.convert_ids_to_tokens(ids)
    bos = tokenizer.bos_token or "<|startoftext|>"
    eos = tokenizer.eos_token or "<|endoftext|>"
    return PromptTokens(
        prompt,
        (bos, *names, eos),
        ((0, 0), *spans, (0, 0)),
        max_length,
    )


def _word_pattern(word: str) -> re.Pattern:
    parts = [re.escape(p) for p in word.split()]
    if not parts:
        raise HRVInputError("the token to steer is empty; give a word of the prompt or a token index")
    # whole words only: no letter or digit right before or after
    return re.compile(r"(?<![^\W_])" + r"\s+".join(parts) + r"(?![^\W_])", re.IGNORECASE)


def word_positions(tokenizer, prompt: str, word: str, occurrence: Occurrence = None) -> list[int]:
    """Token positions (SOT = 0) of ``word`` in ``prompt``.

    ``occurrence``: None = the word must occur once; n = its n-th occurrence (from 1); "all" = the
    positions of every occurrence. Errors name the prompt's words and tokens.
    """
    pt = prompt_tokens(tokenizer, prompt)
    matches = list(_word_pattern(word).finditer(prompt))
    if not matches:
        raise HRVInputError(
            f"{word!r} is not a word of the prompt {prompt!r}; its tokens are {pt.describe()}"
            " (select by word, or by token index)"
        )
    if occurrence is None:
        if len(matches) > 1:
            raise HRVInputError(
                f"{word!r} occurs {len(matches)} times in {prompt!r}; choose one with occurrence=1.."
                f"{len(matches)} (--occurrence N) or all of them with occurrence='all'"
            )
        chosen = matches
    elif occurrence == "all":
        chosen = matches
    elif isinstance(occurrence, int) and not isinstance(occurrence, bool) and 1 <= occurrence <= len(matches):
        chosen = [matches[occurrence - 1]]
    else:
        raise HRVInputError(
            f"occurrence {occurrence!r} of {word!r}: the word occurs {len(matches)} time(s) in {prompt!r};"
            f" give a number from 1 to {len(matches)} or 'all'"
        )
    positions: list[int] = []
    for m in chosen:
        hit = [
            i
            for i, (s, e) in enumerate(pt.spans)
            if 0 < i <= pt.n_prompt_tokens and s < m.end() and e > m.start()
        ]
        positions.extend(hit)
    return check_positions(pt, sorted(set(positions)), what=repr(word))


def check_positions(pt: PromptTokens, positions: Sequence[int], what: str = "token") -> list[int]:
    """Positions must be prompt tokens that fit the encoder's sequence (EOT keeps the last slot)."""
    last = min(pt.n_prompt_tokens, pt.max_length - 2)
    bad = [p for p in positions if not 1 <= int(p) <= last]
    if not positions or bad:
        beyond = pt.n_prompt_tokens > pt.max_length - 2 and any(p > last for p in bad)
        reason = (
            f"is cut off: the encoder keeps only the first {pt.max_length - 2} prompt tokens"
            if beyond
            else f"is not a prompt token (positions 1..{last}; 0 is <SOT>)"
        )
        raise HRVInputError(
            f"{what} at position(s) {list(bad) or list(positions)} {reason}; tokens: {pt.describe()}"
        )
    return [int(p) for p in positions]


def select_tokens(
    tokenizer,
    prompt: str,
    token: str | int | Sequence[int],
    occurrence: Occurrence = None,
) -> list[int]:
    """Positions to steer: by word (str) or by index (int, or a list of ints) in the 77-token sequence."""
    if isinstance(token, str):
        return word_positions(tokenizer, prompt, token, occurrence)
    pt = prompt_tokens(tokenizer, prompt)
    indices = [token] if isinstance(token, int) else list(token)
    return check_positions(pt, indices, what="token index")
