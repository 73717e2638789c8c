"""Token lookup: words (multi-token, repeated, hyphenated, any case) and indices in the 77-token sequence."""

from __future__ import annotations

import pytest

from hrv.errors import HRVInputError
from hrv.tokens import prompt_tokens, select_tokens, word_positions


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from hrv.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(tmp_path_factory.mktemp("tok"))


def reference_positions(tok, prompt: str, word: str) -> list[int]:
    """Plain reference: where the word's own token ids sit in the padded prompt encoding."""
    ids = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    sub = tok(word.lower(), add_special_tokens=False).input_ids
    hits = [i for i in range(len(ids) - len(sub) + 1) if ids[i : i + len(sub)] == sub]
    assert len(hits) == 1, hits
    return list(range(hits[0], hits[0] + len(sub)))


@pytest.mark.parametrize(
    ("prompt", "word", "n_tokens"),
    [
        ("A vase in lavender color", "lavender", 1),
        ("An olive-colored plate on a table", "olive-colored", 3),
        ("An Apple device on a table", "Apple", 1),
        ("A rose-colored vase", "rose-colored", 3),
        ("A photo of a hippopotamus.", "hippopotamus", None),
    ],
)
def test_word_positions_match_the_encoded_ids(tokenizer, prompt, word, n_tokens):
    positions = word_positions(tokenizer, prompt, word)
    assert positions == reference_positions(tokenizer, prompt, word)
    if n_tokens is not None:
        assert len(positions) == n_tokens
    assert positions[0] >= 1  # SOT is position 0


def test_multi_token_word_gives_all_its_tokens(tokenizer):
    pt = prompt_tokens(tokenizer, "An olive-colored plate on a table")
    positions = word_positions(tokenizer, "An olive-colored plate on a table", "olive-colored")
    assert [pt.tokens[p] for p in positions] == ["olive</w>", "-</w>", "colored</w>"]
    assert positions == [2, 3, 4]


def test_whole_words_only_and_case_insensitive(tokenizer):
    assert word_positions(tokenizer, "A rose-colored vase", "rose") == [2]  # part of a hyphenated word
    assert word_positions(tokenizer, "An Apple device", "APPLE") == [2]
    with pytest.raises(HRVInputError, match="not a word of the prompt"):
        word_positions(tokenizer, "A pineapple on a table", "apple")
    with pytest.raises(HRVInputError, match="not a word of the prompt"):
        word_positions(tokenizer, "Two roses", "rose")


def test_phrase_of_several_words(tokenizer):
    prompt = "A bowl of ice   cream on a table"
    assert word_positions(tokenizer, prompt, "ice cream") == [4, 5]


def test_repeated_word_needs_an_explicit_choice(tokenizer):
    prompt = "A red car next to a red house"
    with pytest.raises(HRVInputError, match="occurs 2 times.*occurrence"):
        word_positions(tokenizer, prompt, "red")
    assert word_positions(tokenizer, prompt, "red", occurrence=1) == [2]
    assert word_positions(tokenizer, prompt, "red", occurrence=2) == [7]
    assert word_positions(tokenizer, prompt, "red", occurrence="all") == [2, 7]
    for bad in (0, 3, "first", True):
        with pytest.raises(HRVInputError, match="occurrence"):
            word_positions(tokenizer, prompt, "red", occurrence=bad)


def test_token_not_in_prompt_names_the_tokens(tokenizer):
    with pytest.raises(HRVInputError) as err:
        select_tokens(tokenizer, "A vase in lavender color", "violet")
    msg = str(err.value)
    assert "'violet'" in msg and "4:lavender" in msg and "token index" in msg


def test_select_by_index(tokenizer):
    prompt = "A vase in lavender color"
    assert select_tokens(tokenizer, prompt, 4) == [4]
    assert select_tokens(tokenizer, prompt, [4, 5]) == [4, 5]
    for bad in (0, 6, 76, -1):  # SOT, EOT, padding, negative
        with pytest.raises(HRVInputError, match="not a prompt token"):
            select_tokens(tokenizer, prompt, bad)


def test_word_cut_off_by_the_77_token_limit(tokenizer):
    prompt = " ".join(["cat"] * 80) + " lavender"
    with pytest.raises(HRVInputError, match="cut off"):
        select_tokens(tokenizer, prompt, "lavender")


class SlowTokenizer:
    """The tokenizer without offset mappings (as the slow CLIP tokenizer of transformers 4)."""

    is_fast = False

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, *args, **kwargs):
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError
        return self._tok(*args, **kwargs)


@pytest.mark.parametrize(
    "prompt",
    ["An olive-colored plate on a table.", "A red car,  next to a RED house!", "Café au lait in a mug"],
)
def test_alignment_fallback_equals_offsets(tokenizer, prompt):
    fast = prompt_tokens(tokenizer, prompt)
    slow = prompt_tokens(SlowTokenizer(tokenizer), prompt)
    assert slow.tokens == fast.tokens
    assert slow.spans == fast.spans
