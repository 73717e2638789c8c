"""Token alignment of an editing pair: which source token column each target token column reads.

The prompts are split on spaces (as P2P's word swap does); each word's tokens are the tokenizer's
for that word, at positions counted from 1 (``<SOT>`` is 0), and the words' tokens together must
be the prompt's (checked). The mapper M (S x S, source column x target column) sends

- every common word's tokens, SOT, EOT and the padding one to one, in order;
- a swapped word's tokens to the swapped word's: token to token when the two words have as many
  tokens, else every source token to every target token with weight 1 / (target tokens), P2P's
  rule (a target column gets the sum of the source word's columns over its token count).

``released``: the mapping of P2P's ``seq_aligner.get_replacement_mapper_`` as the HRV code ran it:
after the last swapped word it maps column j to column j (not to the matching source column), so
when the swapped words' token counts differ the trailing tokens read the wrong source columns
("polka-dot -> leopard": the target's "pattern" reads the source's "-").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hrv.errors import HRVInputError

TOKEN_MAPS = ("aligned", "released")


def word_token_positions(tokenizer, prompt: str) -> list[list[int]]:
    """Positions (SOT = 0) of each space-separated word's tokens, as the encoder sees the prompt."""
    words = prompt.split(" ")
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    per_word = [tokenizer(w, add_special_tokens=False).input_ids for w in words]
    if [i for w in per_word for i in w] != list(ids):
        raise HRVInputError(
            f"the prompt {prompt!r} does not tokenize word by word (extra spaces or punctuation between"
            " words?); write it with single spaces between words"
        )
    limit = int(getattr(tokenizer, "model_max_length", 77)) - 2
    if len(ids) > limit:
        raise HRVInputError(f"the prompt {prompt!r} has {len(ids)} tokens; at most {limit} fit")
    positions, next_pos = [], 1
    for w in per_word:
        positions.append(list(range(next_pos, next_pos + len(w))))
        next_pos += len(w)
    return positions


@dataclass(frozen=True)
class AlignedPair:
    """An editing pair with its token alignment and the target's edited token positions."""

    source: str
    target: str
    word: str  # the edited word of the target prompt
    edited: tuple[int, ...]  # its token positions in the target prompt
    swapped: tuple[int, ...]  # indices of the words that differ
    mapper: np.ndarray  # (S, S) float32: target column j = sum_i source column i * mapper[i, j]
    token_map: str


def align_pair(
    tokenizer,
    source: str,
    target: str,
    word: str | None = None,
    token_map: str = "aligned",
    n_tokens: int = 77,
) -> AlignedPair:
    """The alignment of ``source`` -> ``target``; the edited word is the one differing word, or
    ``word`` (a word of the target prompt) when they differ in several."""
    if token_map not in TOKEN_MAPS:
        raise HRVInputError(f"unknown token map {token_map!r}; choose from {', '.join(TOKEN_MAPS)}")
    src_words, tgt_words = source.split(" "), target.split(" ")
    if len(src_words) != len(tgt_words):
        raise HRVInputError(
            f"a word swap needs prompts with as many words: {source!r} has {len(src_words)},"
            f" {target!r} has {len(tgt_words)}"
        )
    swapped = tuple(i for i, (a, b) in enumerate(zip(src_words, tgt_words, strict=True)) if a != b)
    if word is None:
        if len(swapped) != 1:
            raise HRVInputError(
                f"{source!r} -> {target!r} differ in {len(swapped)} words; name the edited word of the"
                " target prompt (--word)"
            )
        edited_words = list(swapped)
        word = tgt_words[swapped[0]]
    else:
        edited_words = [i for i, w in enumerate(tgt_words) if w == word]
        if not edited_words:
            raise HRVInputError(f"the edited word {word!r} is not a word of the target prompt {target!r}")
    src_pos = word_token_positions(tokenizer, source)
    tgt_pos = word_token_positions(tokenizer, target)
    build = _released_mapper if token_map == "released" else _aligned_mapper
    mapper = build(src_pos, tgt_pos, swapped, n_tokens)
    edited = tuple(p for i in edited_words for p in tgt_pos[i])
    return AlignedPair(source, target, word, edited, swapped, mapper, token_map)


def _swap(mapper: np.ndarray, src: list[int], tgt: list[int]) -> None:
    if len(src) == len(tgt):
        mapper[src, tgt] = 1.0
    else:
        for j in tgt:
            mapper[src, j] = 1.0 / len(tgt)


def _aligned_mapper(src_pos, tgt_pos, swapped, n: int) -> np.ndarray:
    mapper = np.zeros((n, n), np.float32)
    mapper[0, 0] = 1.0  # SOT
    for w, (src, tgt) in enumerate(zip(src_pos, tgt_pos, strict=True)):
        if w in swapped:
            _swap(mapper, src, tgt)
        else:
            mapper[src, tgt] = 1.0  # the same word: as many tokens, one to one
    i, j = 1 + sum(map(len, src_pos)), 1 + sum(map(len, tgt_pos))
    while i < n and j < n:  # EOT and padding, in order
        mapper[i, j] = 1.0
        i, j = i + 1, j + 1
    return mapper


def _released_mapper(src_pos, tgt_pos, swapped, n: int) -> np.ndarray:
    """P2P's token walk, its last branch included (``mapper[j, j]`` after the last swap)."""
    mapper = np.zeros((n, n), np.float32)
    inds_source = [src_pos[w] for w in swapped]
    inds_target = [tgt_pos[w] for w in swapped]
    i = j = cur = 0
    while i < n and j < n:
        if cur < len(inds_source) and inds_source[cur][0] == i:
            _swap(mapper, inds_source[cur], inds_target[cur])
            i, j = i + len(inds_source[cur]), j + len(inds_target[cur])
            cur += 1
        elif cur < len(inds_source):
            mapper[i, j] = 1.0
            i, j = i + 1, j + 1
        else:
            mapper[j, j] = 1.0
            i, j = i + 1, j + 1
    return mapper
