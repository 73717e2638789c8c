"""The polysemy benchmark: cases file, images per method, CLIP proxy rates, the human sheet and its rates."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_reference import assert_same_image, reference_sample
from PIL import Image

from hrv.errors import HRVInputError
from hrv.polysemy import (
    CASE_COLUMNS,
    PolysemyCase,
    clip_scores,
    human_rates,
    misinterpretation_rates,
    plot_rates,
    rates_html,
    read_cases,
    read_manifests,
    run_case,
    write_human_sheet,
)

SIZE = 64


@pytest.fixture(scope="module")
def cases_csv(root):
    return root / "resources/polysemy_cases.csv"


def test_shipped_cases(cases_csv, concepts, tiny_pipe):
    from hrv.tokens import word_positions

    cases = read_cases(cases_csv)
    assert len(cases) == 10
    assert sum(c.source == "project" for c in cases) == 6
    by_id = {c.case: c for c in cases}
    assert by_id["lavender"].prompt == "A vase in lavender color"
    assert (by_id["lavender"].desired, by_id["lavender"].undesired) == ("Color", "Plants")
    assert (by_id["apple"].desired, by_id["apple"].undesired) == ("Brand Logos", "Fruits and Vegetables")
    assert by_id["rose"].clamp == 9.0 and by_id["lavender"].clamp is None
    for c in cases:
        concepts.index(c.desired), concepts.index(c.undesired)  # both are known concepts
        assert c.desired != c.undesired and c.intended != c.wrong
        assert word_positions(tiny_pipe.tokenizer, c.prompt, c.token)  # the token occurs exactly once
    assert len(word_positions(tiny_pipe.tokenizer, by_id["olive"].prompt, "olive-colored")) == 3
    assert [c.case for c in read_cases(cases_csv, ["apple", "lavender"])] == ["lavender", "apple"]


def test_bad_cases_files(tmp_path, cases_csv):
    with pytest.raises(HRVInputError, match="unknown polysemy case.*'?nope"):
        read_cases(cases_csv, ["nope"])
    text = cases_csv.read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join([text[0], text[1], text[1]]) + "\n")
    with pytest.raises(HRVInputError, match="lavender repeat"):
        read_cases(tmp_path / "dup.csv")
    (tmp_path / "cols.csv").write_text("case,prompt,token\nx,A vase,vase\n")
    with pytest.raises(HRVInputError, match="lacks column"):
        read_cases(tmp_path / "cols.csv")
    (tmp_path / "clamp.csv").write_text(",".join(CASE_COLUMNS) + "\nx,A vase,vase,Color,Plants,a,b,nine\n")
    with pytest.raises(HRVInputError, match="clamp 'nine'"):
        read_cases(tmp_path / "clamp.csv")


def _png(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


@pytest.fixture()
def planted_manifest(tmp_path):
    """2 cases x 3 seeds x 3 methods of solid-colour images (each image distinct)."""
    rows, k = [], 0
    for case in ("lavender", "apple"):
        for seed in (1, 2, 3):
            for method in ("sd", "adjusting", "strengthening"):
                k += 1
                p = _png(tmp_path / "img" / case / method / f"{seed}.png", (k * 7 % 256, k * 13 % 256, k))
                rows.append({"case": case, "method": method, "seed": seed, "path": str(p)})
    return pd.DataFrame(rows)


def _case(case_id):
    return PolysemyCase(
        case_id, f"prompt {case_id}", case_id, "Color", "Plants", f"intended {case_id}", f"wrong {case_id}"
    )


def test_misinterpretation_rates_by_hand():
    scores = pd.DataFrame(
        {
            "case": ["a"] * 4 + ["b"] * 4,
            "method": ["sd", "sd", "adjusting", "adjusting"] * 2,
            "misinterpreted": [True, True, False, True, True, False, False, False],
        }
    )
    r = misinterpretation_rates(scores).set_index(["case", "method"])["rate"]
    assert r[("a", "sd")] == 1.0 and r[("a", "adjusting")] == 0.5
    assert r[("b", "sd")] == 0.5 and r[("b", "adjusting")] == 0.0
    assert r[("all", "sd")] == 0.75 and r[("all", "adjusting")] == 0.25


def test_clip_proxy_counts_images_closer_to_the_wrong_sense(planted_manifest):
    class FakeClip:
        """Similarities planted per image colour: wrong wins for even blue values."""

        def similarity_matrix(self, images, texts, batch_size=32):
            assert texts[0].startswith("intended") and texts[1].startswith("wrong")
            blue = np.array([np.asarray(im)[0, 0, 2] for im in images], float)
            return np.stack([np.full(len(blue), 0.5), np.where(blue % 2 == 0, 0.6, 0.4)], axis=1)

    scores = clip_scores(planted_manifest, [_case("lavender"), _case("apple")], FakeClip())
    blue = np.array([np.asarray(Image.open(p))[0, 0, 2] for p in scores["path"]])
    np.testing.assert_array_equal(scores["misinterpreted"].to_numpy(), blue % 2 == 0)
    with pytest.raises(HRVInputError, match="no such case"):
        clip_scores(planted_manifest, [_case("lavender")], FakeClip())


def test_human_sheet_is_anonymous_shuffled_and_keyed(planted_manifest, tmp_path):
    cases = [_case("lavender"), _case("apple")]
    out = tmp_path / "human"

    def write(seed):
        return write_human_sheet(
            planted_manifest,
            cases,
            out / "sheet.csv",
            out / "key.csv",
            out / "index.html",
            out / "images",
            seed=seed,
        )

    sheet = write(0)
    key = pd.read_csv(out / "key.csv")
    assert len(sheet) == len(key) == 6
    assert set(zip(key["case"], key["seed"], strict=True)) == {
        (c, s) for c in ("lavender", "apple") for s in (1, 2, 3)
    }
    lookup = planted_manifest.set_index(["case", "seed", "method"])["path"]
    for item, k in zip(sheet.itertuples(), key.itertuples(), strict=True):
        assert {k.method_a, k.method_b} == {"sd", "adjusting"}
        for side in ("a", "b"):
            copied = (out / getattr(item, f"image_{side}")).read_bytes()
            source = Path(lookup[(k.case, k.seed, getattr(k, f"method_{side}"))]).read_bytes()
            assert copied == source
    text = (out / "sheet.csv").read_text() + (out / "index.html").read_text()
    assert "adjusting" not in text and "/sd/" not in text  # the method is not revealed
    assert "intended lavender" in text and text.count("<img") == 12
    assert len(set(key["method_a"])) == 2  # sides are shuffled
    assert list(zip(key["case"], key["seed"], strict=True)) != sorted(
        zip(key["case"], key["seed"], strict=True)
    )
    again = write(0)
    pd.testing.assert_frame_equal(again, sheet)
    write(1)
    assert not pd.read_csv(out / "key.csv").equals(key)


KEY = """item,case,seed,method_a,method_b
1,lavender,1,sd,adjusting
2,lavender,2,adjusting,sd
3,apple,1,sd,adjusting
"""
ALICE = """item,answer_a,answer_b,rater
1,wrong,intended,alice
2,intended,wrong,alice
3,w,unclear,alice
"""
BOB = """item,answer_a,answer_b
1,intended,intended
2,wrong,
3,WRONG,intended
"""


@pytest.fixture()
def answers(tmp_path):
    (tmp_path / "key.csv").write_text(KEY)
    (tmp_path / "alice.csv").write_text(ALICE)
    (tmp_path / "bob.csv").write_text(BOB)
    return tmp_path


def test_human_answers_to_rate_by_hand(answers):
    # SD: alice wrong (1), wrong (2), wrong (3); bob intended (1), blank (2), wrong (3) -> 4 / 5
    # adjusting: alice intended, intended, unclear; bob intended, wrong, intended -> 1 / 6
    with pytest.warns(UserWarning, match="1 image"):
        r = human_rates(answers / "key.csv", [answers / "alice.csv", answers / "bob.csv"])
    r = r.set_index(["case", "method"])
    assert r.loc[("all", "sd"), "rate"] == pytest.approx(4 / 5)
    assert r.loc[("all", "adjusting"), "rate"] == pytest.approx(1 / 6)
    assert r.loc[("all", "adjusting"), "n_unclear"] == 1 and r.loc[("all", "sd"), "n_raters"] == 2
    assert r.loc[("lavender", "sd"), "rate"] == pytest.approx(2 / 3)
    assert r.loc[("apple", "sd"), "rate"] == 1.0
    assert r.loc[("lavender", "adjusting"), "rate"] == pytest.approx(1 / 4)
    assert r.loc[("apple", "adjusting"), "rate"] == 0.0
    with pytest.warns(UserWarning):
        ex = human_rates(
            answers / "key.csv", [answers / "alice.csv", answers / "bob.csv"], exclude_unclear=True
        )
    assert ex.set_index(["case", "method"]).loc[("all", "adjusting"), "rate"] == pytest.approx(1 / 5)


def test_bad_answers(answers):
    (answers / "typo.csv").write_text("item,answer_a,answer_b\n1,wrng,intended\n")
    with pytest.raises(HRVInputError, match="unknown answer.*'wrng'"):
        human_rates(answers / "key.csv", [answers / "typo.csv"])
    (answers / "other.csv").write_text("item,answer_a,answer_b\n9,wrong,intended\n")
    with pytest.raises(HRVInputError, match=r"item\(s\) \[9\] are not in the key"):
        human_rates(answers / "key.csv", [answers / "other.csv"])


def test_polysemy_rate_command(answers, capsys):
    from hrv.cli import main

    out = answers / "rates.csv"
    with pytest.warns(UserWarning):
        code = main(
            [
                "polysemy-rate",
                str(answers / "alice.csv"),
                str(answers / "bob.csv"),
                "--key",
                str(answers / "key.csv"),
                "--out",
                str(out),
            ]
        )
    assert code == 0
    t = pd.read_csv(out).set_index(["case", "method"])
    assert t.loc[("all", "sd"), "rate"] == pytest.approx(0.8)
    assert "80.0%" in capsys.readouterr().out


def test_run_case_and_proxy_on_the_tiny_model(tiny_pipe, tmp_path, root, cases_csv):
    """One case end to end: three methods' images, grid, manifest; then the tiny CLIP's rates."""
    from hrv.clip import load_clip
    from hrv.steps import import_official

    hrv = import_official(
        "sd14",
        tmp_path / "sd14.npz",
        root / "resources/reference",
        root / "resources/concepts/concepts_34x10.csv",
    )
    (case,) = read_cases(cases_csv, ["olive"])
    run_case(
        tiny_pipe,
        hrv,
        case,
        [1, 2],
        tmp_path / "olive/images",
        tmp_path / "olive/images.csv",
        tmp_path / "olive/grid.png",
        sampling={"steps": 2, "height": SIZE, "width": SIZE},
        batch_size=2,
        progress=False,
    )
    manifest = read_manifests([tmp_path / "olive/images.csv"])
    assert len(manifest) == 6 and set(manifest["method"]) == {"sd", "adjusting", "strengthening"}
    pix = {(r.method, r.seed): np.asarray(Image.open(r.path)) for r in manifest.itertuples()}
    assert not np.array_equal(pix[("sd", 1)], pix[("adjusting", 1)])
    assert not np.array_equal(pix[("adjusting", 1)], pix[("strengthening", 1)])
    assert (tmp_path / "olive/grid.png").is_file()
    scores = clip_scores(manifest, [case], load_clip("tiny", device="cpu"))
    rates = misinterpretation_rates(scores)
    assert list(rates["case"].unique()) == ["olive", "all"] and (rates["n_images"] == 2).all()
    assert all(math.isclose(r, k / 2) for r, k in zip(rates["rate"], rates["n_misinterpreted"], strict=True))
    plot_rates(rates, tmp_path / "bars.png", "tiny")
    rates_html(rates, tmp_path / "rates.html", "tiny")
    assert (tmp_path / "bars.png").stat().st_size > 0 and "SD-HRV (adjusting)" in (
        tmp_path / "rates.html"
    ).read_text()


def test_each_method_steers_the_token_as_the_paper_says(tiny_pipe, tmp_path, root):
    """run_case's images against a plain reference (explicit cross-attention, README latent): in every
    head h, the conditional half's map of the case's token is multiplied by 2 min(d_h, b) - min(u_h, b)
    (adjusting, d = HRV_desired, u = HRV_undesired, b = the clamp) or min(d_h, b) (strengthening);
    SD is plain. The clamp b = 1.5 bites on 33 of the 128 desired and 27 undesired values."""
    from hrv.steps import import_official

    hrv = import_official(
        "sd14",
        tmp_path / "sd14.npz",
        root / "resources/reference",
        root / "resources/concepts/concepts_34x10.csv",
    )
    case = PolysemyCase("lav", "A vase in lavender color", "lavender", "Color", "Plants", "i", "w", clamp=1.5)
    sampling = {"steps": 2, "height": SIZE, "width": SIZE, "guidance_scale": 7.5}
    run_case(
        tiny_pipe,
        hrv,
        case,
        [3],
        tmp_path / "images",
        tmp_path / "images.csv",
        sampling=sampling,
        progress=False,
    )
    ids = tiny_pipe.tokenizer(case.prompt).input_ids
    (word,) = tiny_pipe.tokenizer("lavender", add_special_tokens=False).input_ids
    column = ids.index(word)  # SOT a vase in lavender: 4
    d, u = np.minimum(hrv.vector("Color"), 1.5), np.minimum(hrv.vector("Plants"), 1.5)
    assert column == 4 and (d < hrv.vector("Color")).sum() > 10 and (u < hrv.vector("Plants")).sum() > 10
    for method, vector in (("sd", np.ones(128)), ("adjusting", 2 * d - u), ("strengthening", d)):
        table = np.ones((128, 77), np.float32)
        table[:, column] = vector
        want, _ = reference_sample(tiny_pipe, case.prompt, 3, table, **sampling)
        assert_same_image(Image.open(tmp_path / f"images/{method}/seed_0003.png"), want)


def test_generate_command(tiny_model_dir, tmp_path, root, capsys):
    from hrv.cli import main
    from hrv.steps import import_official

    import_official(
        "sd14",
        tmp_path / "sd14.npz",
        root / "resources/reference",
        root / "resources/concepts/concepts_34x10.csv",
    )
    common = ["generate", "--model", str(tiny_model_dir), "--hrv", str(tmp_path / "sd14.npz"), "--prompt", "A vase in lavender color",
              "--desired", "Color", "--undesired", "Plants", "--steps", "1", "--height", "64", "--width", "64", "--device", "cpu",
              "--dtype", "float32", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*common, "--token", "violet"]) == 2
    assert "'violet' is not a word of the prompt" in capsys.readouterr().err
    assert main([*common, "--token", "lavender", "--desired", "Colour"]) == 2
    assert "unknown concept 'Colour'" in capsys.readouterr().err
    assert main([*common, "--token-index", "4", "--seeds", "3"]) == 0
    assert (tmp_path / "out/steered/seed_0003.png").is_file() and (
        tmp_path / "out/baseline/seed_0003.png"
    ).is_file()
    assert (tmp_path / "out/grid.png").is_file()


def test_hrv_source_of_a_polysemy_run(tmp_path):
    from hrv.polysemy import hrv_source

    own = "results/demo/hrv/hrv.npz"
    assert hrv_source(None, own, "results/demo/polysemy") == own
    assert (
        hrv_source("sd14", own, "results/demo/hrv/official")
        == "results/demo/hrv/official/hrv_official_sd14.npz"
    )
    (tmp_path / "mine.npz").write_bytes(b"")
    assert hrv_source(str(tmp_path / "mine.npz"), own, "x") == str(tmp_path / "mine.npz")
    with pytest.raises(HRVInputError, match="neither null"):
        hrv_source("sd15", own, "x")


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_the_pages_download_is_read_back(planted_manifest, tmp_path):
    """Run the judging page's script in node (a stub DOM: every A wrong, every B intended but item 2's)."""
    out = tmp_path / "human"
    write_human_sheet(
        planted_manifest, [_case("lavender"), _case("apple")], out / "sheet.csv", out / "key.csv",
        out / "index.html", out / "images", seed=3,
    )  # fmt: skip
    page = (out / "index.html").read_text()
    script = page[page.index("<script>") + len("<script>") : page.index("</script>")]
    stub = """
let written = null;
const document = {
  getElementById: id => id === 'rater' ? {value: 'Ann "A" Lee'} : {},
  querySelector: sel => {
    const m = sel.match(/name="(\\d+)_([ab])"/);
    if (m[1] === '2' && m[2] === 'b') return null;
    return {value: m[2] === 'a' ? 'wrong' : 'intended'};
  },
  createElement: () => ({click() {}}),
};
class Blob { constructor(parts) { written = parts.join(''); } }
const URL = {createObjectURL: () => 'blob:'};
"""
    (tmp_path / "run.js").write_text(stub + script + "\ndownload();\nprocess.stdout.write(written);\n")
    csv_text = subprocess.run(
        ["node", str(tmp_path / "run.js")], check=True, capture_output=True, text=True
    ).stdout
    (tmp_path / "answers.csv").write_text(csv_text)
    with pytest.warns(UserWarning, match="1 image"):
        rates = human_rates(out / "key.csv", [tmp_path / "answers.csv"])
    key = pd.read_csv(out / "key.csv").set_index("item")
    # expected from the key: every A judged wrong, every B intended (item 2's B unanswered)
    wrong = {m: 0 for m in ("sd", "adjusting")}
    judged = {m: 0 for m in ("sd", "adjusting")}
    for item, k in key.iterrows():
        wrong[k["method_a"]] += 1
        judged[k["method_a"]] += 1
        judged[k["method_b"]] += item != 2
    r = rates[rates["case"] == "all"].set_index("method")
    for m in ("sd", "adjusting"):
        assert r.loc[m, "n_judgements"] == judged[m] and r.loc[m, "n_wrong"] == wrong[m]
    assert set(pd.read_csv(tmp_path / "answers.csv")["rater"]) == {'Ann "A" Lee'}
