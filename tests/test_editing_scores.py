"""Editing scores: CLIP per image and per (set, method), the Table-1 layout, the human A/B sheet
and HP scores normalised to P2P-HRV = 100."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hrv.editing.human import hp_scores, write_edit_sheet
from hrv.editing.scores import read_manifests, score_images, summarize, table1, write_manifest
from hrv.errors import HRVInputError

METHODS = ["p2p", "p2p_hrv", "p2p_self09"]


def _image(path: Path, value: int) -> str:
    """A 4x4 image whose blue channel is ``value`` (the planted 'score')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((4, 4, 3), np.uint8)
    a[..., 2] = value
    Image.fromarray(a).save(path)
    return str(path)


@pytest.fixture()
def manifest(tmp_path) -> pd.DataFrame:
    """Two sets (one judged by people), 2 pairs x 2 seeds x 3 methods; blue value = a unique id."""
    rows, value = [], 1
    for s in ("color", "image_style"):
        for pair in (0, 1):
            for seed in (10, 20):
                src = _image(tmp_path / "img" / s / "source" / f"{pair}_{seed}.png", value)
                value += 1
                for m in METHODS:
                    rows.append(
                        {
                            "set": s,
                            "pair": pair,
                            "seed": seed,
                            "method": m,
                            "concept": "Color" if s == "color" else "Image Style",
                            "object": "car",
                            "source_prompt": f"{s} source {pair}",
                            "target_prompt": f"{s} target {pair}",
                            "source_word": "red",
                            "target_word": "blue",
                            "source_image": src,
                            "edited_image": _image(tmp_path / "img" / s / m / f"{pair}_{seed}.png", value),
                        }
                    )
                    value += 1
    return pd.DataFrame(rows)


class BlueClip:
    """Similarity = blue value / 100 (independent of the text), recording the texts asked for."""

    def __init__(self):
        self.texts = []

    def similarity(self, images, texts, batch_size=32):
        self.texts.extend(texts)
        return np.array([np.asarray(im)[0, 0, 2] / 100 for im in images], float)


def test_manifest_round_trip_with_relative_paths(manifest, tmp_path):
    out = tmp_path / "editing" / "manifest.csv"
    written = write_manifest(manifest, out)
    assert not any(Path(p).is_absolute() for p in written["edited_image"])
    back = read_manifests([out])
    for col in ("source_image", "edited_image"):
        assert [Path(p).resolve() for p in back[col]] == [Path(p).resolve() for p in manifest[col]]
    (tmp_path / "bad.csv").write_text("set,pair\ncolor,0\n")
    with pytest.raises(HRVInputError, match="lacks column"):
        read_manifests([tmp_path / "bad.csv"])


def test_clip_per_image_and_summary(manifest):
    clip = BlueClip()
    scores = score_images(manifest, clip, batch_size=3)
    # one source row per (set, pair, seed) plus every edit, each scored against the target prompt
    assert len(scores) == 8 + len(manifest)
    assert clip.texts == list(scores["target_prompt"])
    for r in scores.itertuples():
        assert r.clip == pytest.approx(np.asarray(Image.open(r.edited_image))[0, 0, 2] / 100)
    np.testing.assert_allclose(score_images(manifest, BlueClip(), batch_size=64)["clip"], scores["clip"])
    summary = summarize(scores).set_index(["set", "method"])
    for (s, m), row in summary.iterrows():
        x = scores[(scores["set"] == s) & (scores["method"] == m)]["clip"].to_numpy()
        mean = sum(x) / len(x)
        sd = (sum((v - mean) ** 2 for v in x) / (len(x) - 1)) ** 0.5
        assert row["n"] == 4 and row["mean"] == pytest.approx(mean) and row["sem"] == pytest.approx(sd / 2)
    assert set(summary.index.get_level_values("method")) == {"source", *METHODS}


def test_one_image_has_no_standard_error():
    scores = pd.DataFrame(
        {"set": ["color"] * 3, "method": ["p2p", "p2p_hrv", "p2p_hrv"], "clip": [0.3, 0.2, 0.4]}
    )
    s = summarize(scores).set_index("method")
    assert s.loc["p2p", "n"] == 1 and np.isnan(s.loc["p2p", "sem"])
    t = table1(summarize(scores)).set_index("method")
    assert t.loc["p2p", "CLIP color"] == "0.3000"  # no "± 0"
    assert t.loc["p2p_hrv", "CLIP color"] == f"0.3000 ± {np.std([0.2, 0.4], ddof=1) / np.sqrt(2):.4f}"


def _sheet(manifest, out, seed=0):
    return write_edit_sheet(
        manifest, out / "sheet.csv", out / "key.csv", out / "index.html", out / "images", seed=seed
    )


def test_edit_sheet_compares_p2p_hrv_with_each_method_anonymously(manifest, tmp_path):
    out = tmp_path / "human"
    sheet = _sheet(manifest, out)
    key = pd.read_csv(out / "key.csv")
    # image_style only (color is scored by BG-DINO): 2 pairs x 2 seeds x 2 other methods
    assert len(sheet) == len(key) == 8 and set(key["set"]) == {"image_style"}
    lookup = manifest.set_index(["set", "pair", "seed", "method"])
    for item, k in zip(sheet.itertuples(), key.itertuples(), strict=True):
        assert "p2p_hrv" in (k.method_a, k.method_b) and k.method_a != k.method_b
        for side in ("a", "b"):
            want = lookup.loc[(k.set, k.pair, k.seed, getattr(k, f"method_{side}")), "edited_image"]
            assert (out / getattr(item, f"image_{side}")).read_bytes() == Path(want).read_bytes()
        src = lookup.loc[(k.set, k.pair, k.seed, "p2p"), "source_image"]
        assert (out / item.image_source).read_bytes() == Path(src).read_bytes()
        assert item.target_prompt == f"image_style target {k.pair}"
    text = (out / "sheet.csv").read_text() + (out / "index.html").read_text()
    assert not any(m in text for m in METHODS)
    assert "keeping the source's essential details" in text and text.count("<img") == 24
    assert set(key["method_a"]) == {"p2p_hrv", "p2p", "p2p_self09"}  # sides shuffled
    pd.testing.assert_frame_equal(_sheet(manifest, out), sheet)
    _sheet(manifest, out, seed=1)
    assert not pd.read_csv(out / "key.csv").equals(key)
    with pytest.raises(HRVInputError, match="p2p_hrv"):
        _sheet(manifest[manifest["method"] != "p2p_hrv"], out)


KEY = """item,set,pair,seed,method_a,method_b
1,image_style,0,10,p2p_hrv,p2p
2,image_style,1,10,p2p,p2p_hrv
3,image_style,0,10,p2p_self09,p2p_hrv
4,weather_conditions,0,10,p2p_hrv,p2p
"""
# alice: 1 -> p2p_hrv, 2 -> p2p, 3 -> p2p_hrv, 4 -> p2p
# bob:   1 -> p2p_hrv, 2 -> p2p_hrv, 3 -> p2p_self09, 4 -> blank
ALICE = "item,answer,rater\n1,A,alice\n2,a,alice\n3,B,alice\n4,B,alice\n"
BOB = "item,answer\n1,a\n2,b\n3,a\n4,\n"


def test_hp_scores_by_hand(tmp_path):
    for name, text in (("key", KEY), ("alice", ALICE), ("bob", BOB)):
        (tmp_path / f"{name}.csv").write_text(text)
    with pytest.warns(UserWarning, match="1 item"):
        hp = hp_scores(tmp_path / "key.csv", [tmp_path / "alice.csv", tmp_path / "bob.csv"])
    hp = hp.set_index(["set", "method"])
    # image_style, p2p: items 1, 2 -> p2p 1 vote, p2p_hrv 3 votes -> 33.3
    assert (
        hp.loc[("image_style", "p2p"), "votes"] == 1
        and hp.loc[("image_style", "p2p"), "votes_reference"] == 3
    )
    assert hp.loc[("image_style", "p2p"), "hp"] == pytest.approx(100 / 3)
    # p2p_self09: item 3 -> 1 vote each -> 100
    assert hp.loc[("image_style", "p2p_self09"), "hp"] == pytest.approx(100)
    assert (
        hp.loc[("image_style", "p2p_hrv"), "hp"] == 100 and hp.loc[("image_style", "p2p_hrv"), "votes"] == 4
    )
    # weather: alice chose p2p, no vote for p2p_hrv -> undefined, not infinite
    assert np.isnan(hp.loc[("weather_conditions", "p2p"), "hp"])
    # all sets: p2p 2 votes against 3
    assert hp.loc[("all", "p2p"), "hp"] == pytest.approx(200 / 3)
    assert hp.loc[("all", "p2p"), "n_judgements"] == 5 and hp.loc[("all", "p2p"), "n_raters"] == 2
    (tmp_path / "typo.csv").write_text("item,answer\n1,C\n")
    with pytest.raises(HRVInputError, match="unknown answer.*'c'.*a or b"):
        hp_scores(tmp_path / "key.csv", [tmp_path / "typo.csv"])


def test_edit_hp_command(tmp_path, capsys):
    from hrv.cli import main

    for name, text in (("key", KEY), ("alice", ALICE)):
        (tmp_path / f"{name}.csv").write_text(text)
    out = tmp_path / "hp.csv"
    assert (
        main(["edit-hp", str(tmp_path / "alice.csv"), "--key", str(tmp_path / "key.csv"), "--out", str(out)])
        == 0
    )
    t = pd.read_csv(out).set_index(["set", "method"])
    assert t.loc[("image_style", "p2p"), "hp"] == pytest.approx(100)  # items 1 and 2: one vote each
    assert "p2p" in capsys.readouterr().out
    before = out.read_bytes()  # an existing table is replaced only with --overwrite
    args = ["edit-hp", str(tmp_path / "alice.csv"), "--key", str(tmp_path / "key.csv"), "--out", str(out)]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    assert (
        main(["edit-hp", str(tmp_path / "nope.csv"), "--key", str(tmp_path / "key.csv"), "--out", str(out)])
        == 2
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_the_edit_pages_download_is_read_back(manifest, tmp_path):
    """The page's script in node with a stub DOM: every item answered B except item 3 (blank)."""
    out = tmp_path / "human"
    _sheet(manifest, out, seed=2)
    page = (out / "index.html").read_text()
    script = page[page.index("<script>") + len("<script>") : page.index("</script>")]
    stub = """
let written = null;
const document = {
  getElementById: id => id === 'rater' ? {value: 'Jo'} : {},
  querySelector: sel => {
    const m = sel.match(/name="(\\d+)_answer"/);
    return m[1] === '3' ? null : {value: 'B'};
  },
  createElement: () => ({click() {}}),
};
class Blob { constructor(parts) { written = parts.join(''); } }
const URL = {createObjectURL: () => 'blob:'};
"""
    (tmp_path / "run.js").write_text(stub + script + "\ndownload();\nprocess.stdout.write(written);\n")
    text = subprocess.run(
        ["node", str(tmp_path / "run.js")], check=True, capture_output=True, text=True
    ).stdout
    (tmp_path / "answers.csv").write_text(text)
    with pytest.warns(UserWarning, match="1 item"):
        hp = hp_scores(out / "key.csv", [tmp_path / "answers.csv"]).set_index(["set", "method"])
    key = pd.read_csv(out / "key.csv").set_index("item").drop(index=3)
    for m in ("p2p", "p2p_self09"):
        k = key[(key["method_a"] == m) | (key["method_b"] == m)]
        assert hp.loc[("image_style", m), "votes"] == (k["method_b"] == m).sum()
        assert hp.loc[("image_style", m), "votes_reference"] == (k["method_b"] == "p2p_hrv").sum()
