"""Ordered weakening: head orders, factors, batched sweep == one run per k, CLIP tables, bad input, job plan."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers_reference import assert_same_image, readme_latent, reference_sample
from helpers_workflow import copy_workflow, planned_outputs
from PIL import Image

from hrv.clip import ClipScorer
from hrv.errors import HRVInputError
from hrv.experiments import load_experiments, parse_experiment, plan_jobs, resolve_k
from hrv.scoring import area_between, summarize, write_scores
from hrv.weakening import check_ks, head_order, prompt_word_count, sample_weakened, weakening_factors

SAMPLING = {"steps": 2, "guidance_scale": 7.5, "height": 64, "width": 64}


# --- head selection ---------------------------------------------------------------------------


# the released SD v1.4 head list of Plants for k = 128 (final_result/head_roles_..._top_128_..._sd_v1_4.csv
# of SNU-DRL/HRV), as indices into resources/reference/head_index_sd14_official.npy
RELEASED_PLANTS_MORHF = [
    75,
    66,
    25,
    67,
    70,
    44,
    78,
    63,
    48,
    35,
    96,
    40,
    79,
    81,
    61,
    90,
    46,
    0,
    6,
    72,
    103,
    87,
    54,
    65,
    83,
    53,
    43,
    23,
    64,
    17,
    95,
    39,
    68,
    62,
    85,
    60,
    80,
    58,
    9,
    100,
    73,
    24,
    82,
    10,
    97,
    69,
    77,
    98,
    33,
    99,
    56,
    86,
    57,
    84,
    71,
    50,
    47,
    106,
    104,
    105,
    110,
    74,
    34,
    21,
    18,
    111,
    16,
    101,
    13,
    5,
    123,
    116,
    55,
    119,
    52,
    51,
    109,
    112,
    29,
    59,
    4,
    102,
    76,
    121,
    92,
    91,
    122,
    8,
    11,
    88,
    41,
    37,
    19,
    93,
    3,
    22,
    28,
    94,
    27,
    12,
    127,
    31,
    125,
    118,
    49,
    108,
    117,
    2,
    45,
    1,
    30,
    114,
    15,
    26,
    107,
    89,
    126,
    20,
    113,
    32,
    115,
    14,
    124,
    42,
    120,
    36,
    38,
    7,
]


def test_head_orders_break_ties_as_the_released_lists():
    """LeRHF ascending with ties to the lower head; MoRHF its exact reverse (ties to the higher head),
    as the released lists were made (``np.argsort(v)`` and ``np.argsort(v)[::-1]``)."""
    values = np.array([1.0, 3.0, 3.0, 0.0, 2.0, 0.0])
    assert head_order(values, "MoRHF").tolist() == [2, 1, 4, 0, 5, 3]
    assert head_order(values, "LeRHF").tolist() == [3, 5, 0, 4, 1, 2]
    a, b = head_order(values, "random", seed=7), head_order(values, "random", seed=7)
    assert sorted(a.tolist()) == list(range(6)) and a.tolist() == b.tolist()
    many = np.zeros(128)
    assert head_order(many, "random", 0).tolist() != head_order(many, "random", 1).tolist()
    with pytest.raises(HRVInputError, match="unknown head order"):
        head_order(values, "most")


def test_head_order_of_the_released_hrv_matches_the_released_head_list(root):
    """Plants has six groups of tied heads in the released SD v1.4 HRVs; the order agrees with the
    released list everywhere but one tied pair (heads 22 and 28, equal in the released HRV file but
    apparently not in the unrounded values the list was sorted by)."""
    names = np.load(root / "resources/reference/head_index_sd14_official.npy")
    hrv = np.load(root / "resources/reference/hrv_sd14_official.npy")
    plants = 1
    assert names[RELEASED_PLANTS_MORHF[0]] == "up, layer: 2, head: 3"
    got = head_order(hrv[plants], "MoRHF").tolist()
    differ = [i for i, (a, b) in enumerate(zip(got, RELEASED_PLANTS_MORHF, strict=True)) if a != b]
    assert differ == [95, 96] and {got[95], got[96]} == {22, 28}
    assert hrv[plants, 22] == hrv[plants, 28]
    assert head_order(hrv[plants], "LeRHF").tolist() == got[::-1]


def test_factors_land_on_prompt_words_of_the_first_k_heads(tiny_pipe):
    tok = tiny_pipe.tokenizer
    assert prompt_word_count(tok, "a red car") == 3
    assert prompt_word_count(tok, "a T-shirt with a polka-dot pattern") == 10  # multi-token words count all
    assert prompt_word_count(tok, " ".join(["cat"] * 100)) == 75  # truncated like the 77-token context
    order = np.array([5, 2, 7, 0, 1, 3, 4, 6])
    f = weakening_factors(order, [0, 1, 3, 8], n_words=3, factor=-2.0)
    assert f.shape == (4, 8, 77)
    for b, k in enumerate([0, 1, 3, 8]):
        expected = torch.ones((8, 77))
        for h in order[:k]:
            expected[h, 1:4] = -2.0  # tokens 1..3; SOT (0), EOT (4) and padding untouched
        assert torch.equal(f[b], expected)
    long = weakening_factors(order, [8], n_words=75)
    assert (long[0, :, 1:76] == -2).all() and (long[0, :, [0, 76]] == 1).all()


# --- the batched sweep --------------------------------------------------------------------------


def test_batched_sweep_equals_one_run_per_k(tiny_pipe):
    rng = np.random.default_rng(0)
    order = head_order(rng.random(128), "MoRHF")
    ks = [0, 1, 64, 128]
    batched = sample_weakened(tiny_pipe, "a red car", 10, order, ks, sampling=SAMPLING)
    for k, image in zip(ks, batched, strict=True):
        alone = sample_weakened(tiny_pipe, "a red car", 10, order, [k], sampling=SAMPLING)[0]
        assert np.array_equal(np.asarray(image), np.asarray(alone)), f"k={k} differs"
    # k = 0 is plain sampling from the seed's latent (the README's formula)
    with torch.no_grad():
        plain = tiny_pipe(
            "a red car",
            latents=readme_latent(tiny_pipe, 10, 64, 64),
            num_inference_steps=2,
            guidance_scale=7.5,
            height=64,
            width=64,
        ).images[0]
    assert np.array_equal(np.asarray(plain), np.asarray(batched[0]))
    # weakening every head changes the image
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[-1]))


def test_sweep_weakens_the_first_k_heads_on_the_prompt_words_only(tiny_pipe):
    """End to end against a plain reference: explicit cross-attention whose conditional half's
    probabilities are multiplied by -2 in the k heads with the largest planted values (MoRHF) on
    token columns 1..3 of "a red car" (never SOT, EOT or padding), every other entry by 1."""
    values = np.random.default_rng(1).random(128)
    ks = [5, 64]
    images = sample_weakened(tiny_pipe, "a red car", 10, head_order(values, "MoRHF"), ks, sampling=SAMPLING)
    for k, image in zip(ks, images, strict=True):
        table = np.ones((128, 77), np.float32)
        top = sorted(range(128), key=lambda h: -values[h])[:k]
        table[np.ix_(top, [1, 2, 3])] = -2.0
        want, _ = reference_sample(tiny_pipe, "a red car", 10, table, **SAMPLING)
        assert_same_image(np.asarray(image), want)


def test_a_sweep_job_interrupted_while_saving_keeps_the_previous_folder(
    tiny_model_dir, root, tmp_path, monkeypatch
):
    """``run_job`` killed inside the real image writer (PIL's save) after its first image: the job's
    folder keeps what a previous complete run left there, and no partial folder remains beside it."""
    from hrv.steps import import_official
    from hrv.weakening import run_job

    hrv = tmp_path / "sd14.npz"
    import_official("sd14", hrv, root / "resources/reference", root / "resources/concepts/concepts_34x10.csv")
    out = tmp_path / "color/MoRHF/seed10/ks0-128"
    out.mkdir(parents=True)
    (out / "manifest.csv").write_text("from the previous run\n")
    real_save, saved = Image.Image.save, []

    def save_then_die(image, fp, *args, **kwargs):
        if saved:
            raise KeyboardInterrupt  # the job is killed while it writes its second image
        saved.append(fp)
        return real_save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_die)
    experiment = {"name": "color", "concept": "Color", "template": "a {a} car", "items_a": ["red"]}
    with pytest.raises(KeyboardInterrupt):
        run_job(str(tiny_model_dir), hrv, experiment, "MoRHF", 10, [0, 128], out,
                sampling={"steps": 1, "guidance_scale": 7.5, "height": 32, "width": 32},
                device="cpu", dtype="float32", progress=False)  # fmt: skip
    assert len(saved) == 1  # the first image was written (beside the folder, not in it)
    assert [p.name for p in out.iterdir()] == ["manifest.csv"]
    assert (out / "manifest.csv").read_text() == "from the previous run\n"
    assert [p.name for p in out.parent.iterdir()] == ["ks0-128"]


# --- CLIP scoring -----------------------------------------------------------------------------


class _ColourModel(torch.nn.Module):
    """Image feature = mean centred RGB; text feature = a fixed colour direction per word."""

    TEXTS = {"red": [1.0, -1.0, -1.0], "blue": [-1.0, -1.0, 1.0]}

    def encode_image(self, x):
        return x.mean(dim=(2, 3))

    def encode_text(self, tokens):
        return tokens.float()


def _colour_scorer() -> ClipScorer:
    preprocess = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0 - 0.5).permute(2, 0, 1)  # noqa: E731
    tokenizer = lambda texts: torch.tensor([_ColourModel.TEXTS[t] for t in texts])  # noqa: E731
    return ClipScorer(_ColourModel(), preprocess, tokenizer, torch.device("cpu"), "colour")


def _write_job(folder, order, seed, colours):
    """A fake sweep job folder: one PNG per k of a plain colour, scored against 'red'."""
    rows = []
    for k, rgb in colours.items():
        path = folder / f"k{k}" / "p000_red-car.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), rgb).save(path)
        rows.append(
            {
                "experiment": "color",
                "concept": "Color",
                "order": order,
                "seed": seed,
                "k": k,
                "prompt_index": 0,
                "prompt": "a red car",
                "scored_text": "red",
                "image": f"k{k}/p000_red-car.png",
            }
        )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder


def test_clip_scores_and_table_follow_a_known_ordering(tmp_path, monkeypatch):
    red, dark_red, blue = (255, 0, 0), (160, 60, 60), (0, 0, 255)
    jobs = [
        _write_job(tmp_path / "a", "MoRHF", 10, {0: red, 64: blue}),
        _write_job(tmp_path / "b", "MoRHF", 20, {0: red, 64: dark_red}),
        _write_job(tmp_path / "c", "LeRHF", 10, {0: red, 64: red}),
        _write_job(tmp_path / "d", "LeRHF", 20, {0: red, 64: dark_red}),
    ]
    scorer = _colour_scorer()
    sims = scorer.similarity([Image.new("RGB", (4, 4), c) for c in (red, blue)], ["red", "red"])
    assert sims[0] > 0.99 and sims[1] < 0  # a red image is close to "red", a blue one is not
    monkeypatch.setattr("hrv.clip.load_clip", lambda *a, **k: scorer)
    write_scores(
        jobs, tmp_path / "scores.csv", tmp_path / "table.csv", clip={"model": "colour"}, progress=False
    )
    scores, table = pd.read_csv(tmp_path / "scores.csv"), pd.read_csv(tmp_path / "table.csv")
    cell = lambda o, k: table[(table.order == o) & (table.k == k)].iloc[0]  # noqa: E731
    assert cell("LeRHF", 64)["mean"] > cell("MoRHF", 64)["mean"]  # MoRHF removed more red
    # mean and standard error per (order, k) against a plain computation
    for (order, k), group in scores.groupby(["order", "k"]):
        values = group["clip"].to_numpy()
        assert cell(order, k)["n"] == 2
        assert cell(order, k)["mean"] == pytest.approx(values.mean(), abs=1e-5)
        assert cell(order, k)["sem"] == pytest.approx(values.std(ddof=1) / np.sqrt(2), abs=1e-5)
    assert cell("MoRHF", 0)["sem"] == pytest.approx(0.0, abs=1e-6)
    # a cell of one image has no standard error (an empty field), not 0
    one = summarize(scores.iloc[:1])
    assert one["n"].tolist() == [1] and one["sem"].isna().all()
    (tmp_path / "one.csv").write_text(one.to_csv(index=False))
    assert (tmp_path / "one.csv").read_text().splitlines()[1].endswith(",1,")  # n = 1, sem empty


def test_area_between_curves():
    ks = [0, 32, 64, 128]
    table = pd.DataFrame(
        [{"order": "LeRHF", "k": k, "mean": 1.0} for k in ks]
        + [{"order": "MoRHF", "k": k, "mean": 1 - k / 128} for k in ks]
    )
    assert area_between(table, "LeRHF", "MoRHF", n_heads=128) == pytest.approx(0.5)
    assert area_between(table, "MoRHF", "LeRHF", n_heads=128) == pytest.approx(-0.5)
    assert np.isnan(area_between(table, "random", "MoRHF", n_heads=128))
    summary = summarize(pd.DataFrame({"order": ["MoRHF"] * 3, "k": [0] * 3, "clip": [0.1, 0.2, 0.6]}))
    assert summary["mean"].iloc[0] == pytest.approx(0.3) and summary["n"].iloc[0] == 3


# --- experiments and bad input ----------------------------------------------------------------


def test_paper_experiments(root, concepts):
    exps = {
        e.name: e
        for e in load_experiments(
            root / "resources/benchmarks/weakening_experiments.yaml", concepts=concepts.names
        )
    }
    assert len(exps) == 9
    material = exps["material"].prompts()
    assert (
        len(material) == 50
        and material[1].text == "a bowl made of copper"
        and material[1].scored_text == "copper"
    )
    assert exps["image_style"].prompts()[0].scored_text == "cubist"
    # the released scoring took the first item of the list found in the prompt: "table" comes
    # before "coffee table" in the furniture list; every other paper prompt is scored by its own item
    furniture = {p.text: p.scored_text for p in exps["furniture"].prompts()}
    assert furniture["photo of a coffee table"] == "table" and furniture["photo of a TV stand"] == "TV stand"
    own = [p.scored_text == p.items[e.scored] for e in exps.values() for p in e.prompts()]
    assert own.count(False) == 1
    assert [len(exps[n].prompts(max_items=2)) for n in ("color", "animals")] == [4, 2]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"concept": "Spaceships", "template": "a {a}", "items_a": ["x"]}, "unknown concept"),
        ({"concept": "Color", "template": "a {a} {b}", "items_a": ["red"]}, "no 'items_b'"),
        ({"concept": "Color", "template": "a {a}", "items_a": []}, "empty"),
        ({"concept": "Color", "template": "a {a}", "items_a": "nope"}, "not under 'items:'"),
        ({"concept": "Color", "template": "a {a} {b}", "items_a": ["red"], "items_b": ["car"]}, "'scored'"),
        ({"concept": "Color", "template": "a {c}", "items_a": ["red"]}, "only {a} and {b}"),
        ({"concept": "Color", "template": "a car"}, "no {a} or {b} slot"),
    ],
)
def test_bad_experiments(spec, message, concepts):
    with pytest.raises(HRVInputError, match=re.escape(message)):
        parse_experiment(spec, {}, concepts.names)


def test_bad_k_and_plans():
    with pytest.raises(HRVInputError, match=r"outside 0\.\.128"):
        check_ks([0, 129], 128)
    with pytest.raises(HRVInputError, match="outside"):
        weakening_factors(np.arange(8), [9], n_words=2)
    with pytest.raises(HRVInputError, match="no k grid"):
        resolve_k({"k": None}, {"weakening_k": None})
    assert resolve_k({"k": None}, {"weakening_k": [0, 5]}) == [0, 5]
    with pytest.raises(HRVInputError, match="distinct"):
        resolve_k({"k": [1, 1]}, {})
    exp = parse_experiment({"concept": "Color", "template": "a {a}", "items_a": ["red"]}, {})
    with pytest.raises(HRVInputError, match="orders"):
        plan_jobs([exp], ["best"], [10], [0], None)
    jobs = plan_jobs([exp], ["MoRHF"], [10], [0, 1, 11, 21, 31], 2)
    assert [j.label for j in jobs] == ["ks0-1", "ks11-21", "ks31"]


def test_sweep_rejects_k_above_heads(tiny_pipe):
    with pytest.raises(HRVInputError, match="outside"):
        sample_weakened(tiny_pipe, "a red car", 10, np.arange(128), [0, 200], sampling=SAMPLING)


# --- the Snakemake job plan ---------------------------------------------------------------------


PLANNED_WEAKEN = r"output: (results/t/weakening/[^/\s]+/[^/\s]+/seed\d+/ks[\d-]+)"


def test_dry_run_plans_only_new_jobs(tmp_path, root):
    """Adding a k value, a seed and an experiment plans only the jobs that are new."""
    copy_workflow(tmp_path)
    from hrv.heads import format_head
    from hrv.hrvfile import HRVSet

    heads = [
        format_head(s, i, h)
        for s, n in (("down", 6), ("mid", 1), ("up", 9))
        for i in range(n)
        for h in range(8)
    ]
    HRVSet(
        np.ones((34, 128), np.float32),
        list(read_concepts_names(root)),
        heads,
        np.zeros((0, 34, 128), np.float32),
        np.zeros((0, 34, 128), np.int64),
    ).save(tmp_path / "hrv.npz")
    (tmp_path / "resources/models/tiny").mkdir(parents=True)  # stands in for the built model
    base = {
        "run": "t",
        "weakening": {
            "hrv": "hrv.npz",
            "experiments": ["animals"],
            "orders": ["MoRHF", "LeRHF"],
            "k": [0, 64],
            "k_batch": 2,
            "seeds": [10],
            "max_items": 1,
        },
    }
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(base))
    first = planned_outputs(tmp_path, "one.yaml", PLANNED_WEAKEN)
    assert first == {f"results/t/weakening/animals/{o}/seed10/ks0-64" for o in ("MoRHF", "LeRHF")}
    for job in first:  # pretend they ran
        (tmp_path / job).mkdir(parents=True)
        (tmp_path / job / "manifest.csv").write_text("k\n")
    grown = yaml.safe_load(yaml.safe_dump(base))
    grown["weakening"].update({"k": [0, 64, 128], "seeds": [10, 20], "experiments": ["animals", "color"]})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(grown))
    second = planned_outputs(tmp_path, "two.yaml", PLANNED_WEAKEN)
    expected = {
        f"results/t/weakening/{e}/{o}/seed{s}/{ks}"
        for e in ("animals", "color")
        for o in ("MoRHF", "LeRHF")
        for s in (10, 20)
        for ks in ("ks0-64", "ks128")
    } - first
    assert second == expected


def read_concepts_names(root):
    from hrv.concepts import read_concepts

    return read_concepts(root / "resources/concepts/concepts_34x10.csv").names


def test_added_experiments_and_cli_errors(root, concepts, tmp_path, capsys):
    path = root / "resources/benchmarks/weakening_experiments.yaml"
    added = {"name": "mugs", "concept": "Color", "template": "a {a} mug", "items_a": "color"}
    exps = load_experiments(path, [added], select=["mugs"], concepts=concepts.names)
    assert [p.text for p in exps[0].prompts(max_items=2)] == ["a red mug", "a blue mug"]
    with pytest.raises(HRVInputError, match="occur twice"):
        load_experiments(path, [dict(added, name="color")], concepts=concepts.names)
    with pytest.raises(HRVInputError, match="unknown weakening experiment"):
        load_experiments(path, select=["colour"], concepts=concepts.names)
    from hrv.cli import main

    args = [
        "weaken",
        "--model",
        "tiny",
        "--hrv",
        str(tmp_path / "h.npz"),
        "--experiment",
        "colour",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 2
    assert "unknown weakening experiment" in capsys.readouterr().err
