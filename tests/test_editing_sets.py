"""The editing benchmark sets: 225 pairs, the edited word, the set's concept and the object noun."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from hrv.editing.sets import SETS, read_set, read_sets
from hrv.errors import HRVInputError

ROOT = Path(__file__).resolve().parents[1]
PAPER_DATA = ROOT.parent / "shared" / "paper-data" / "benchmarks"

# spec section 5, written out here: the object nouns of each set (five each, ten pairs per noun,
# five for Weather) and the concept
EXPECTED = {
    "color": ("Color", {"car", "bench", "bowl", "ballon", "ball"}, 50),
    "material": ("Material", {"bowl", "cup", "table", "ball", "teapot"}, 50),
    "geometric_patterns": (
        "Geometric Patterns",
        {"T-shirt", "pillow", "wallpaper", "umbrella", "blanket"},
        50,
    ),
    "image_style": ("Image Style", {"castle", "mountain", "cityscape", "farmland", "forest"}, 50),
    "weather_conditions": ("Weather Conditions", {"frog", "cat", "rabbit", "bird", "dog"}, 25),
}


def test_the_five_sets():
    sets = read_sets(list(SETS), ROOT / "resources" / "benchmarks")
    assert sum(len(p) for p in sets.values()) == 225
    for name, (concept, objects, n) in EXPECTED.items():
        pairs = sets[name]
        assert len(pairs) == n
        assert {p.concept for p in pairs} == {concept}
        assert {p.object for p in pairs} == objects
        assert [p.index for p in pairs] == list(range(n))
        for p in pairs:
            # the edited word is the one word that differs, in place; the object is in both prompts
            s, t = p.source_prompt.split(), p.target_prompt.split()
            assert s[p.word_position] == p.source_word and t[p.word_position] == p.target_word
            assert (
                s[: p.word_position] + s[p.word_position + 1 :]
                == t[: p.word_position] + t[p.word_position + 1 :]
            )
            assert p.source_word != p.target_word and p.object in s and p.object in t
    # multi-token words stay one edited word
    geo = sets["geometric_patterns"][0]
    assert (geo.source_word, geo.target_word, geo.object) == ("polka-dot", "leopard", "T-shirt")
    style = {(p.source_word, p.target_word) for p in sets["image_style"]}
    assert ("black-and-white", "steampunk") in style and ("minimalist", "pop-art") in style


@pytest.mark.skipif(not PAPER_DATA.is_dir(), reason="the shared paper data is not next to the checkout")
def test_the_sets_are_the_papers():
    for name in SETS:
        assert filecmp.cmp(
            ROOT / f"resources/benchmarks/editing_{name}.csv",
            PAPER_DATA / f"editing_{name}.csv",
            shallow=False,
        )


def _write(tmp_path, text, name="color.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, match",
    [
        ("source,target\na red car,a blue car\n", "lacks column.*source_prompt"),
        (
            "source_prompt,target_prompt\na red car,a blue car\na red car,a blue bus\n",
            "line 3.*exactly one word",
        ),
        ("source_prompt,target_prompt\na red car,a red car\n", "line 2.*exactly one word"),
        ("source_prompt,target_prompt\na red car,\n", "line 2: empty"),
        ("source_prompt,target_prompt\na red car,a blue car,extra\n", "line 2: more fields"),
        ("source_prompt,target_prompt\nthe red car is here,the blue car is here\n", "line 2.*template"),
        ("source_prompt,target_prompt\n", "no pairs"),
    ],
)
def test_malformed_set_names_file_and_row(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(HRVInputError, match=match) as err:
        read_set("color", path)
    assert str(path) in str(err.value)


def test_object_column_and_unknown_set(tmp_path):
    path = _write(
        tmp_path, "source_prompt,target_prompt,object\nthe red car is here,the blue car is here,car\n"
    )
    (pair,) = read_set("color", path)
    assert (pair.object, pair.source_word, pair.target_word, pair.word_position) == ("car", "red", "blue", 1)
    with pytest.raises(HRVInputError, match="unknown editing set.*colour"):
        read_set("colour", path)
    with pytest.raises(HRVInputError, match="does not exist"):
        read_set("color", tmp_path / "missing.csv")
