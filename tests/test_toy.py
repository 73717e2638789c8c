"""The toy world (issue 6): drawn images match their captions, training is deterministic, and the
shipped weights reproduce their recorded accuracies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hrv.errors import HRVInputError
from hrv.toy.classifiers import accuracy, classify, components
from hrv.toy.world import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    IMAGE_SIZE,
    Scene,
    all_scenes,
    make_dataset,
    parse_caption,
    render,
)


def test_every_scene_is_drawn_as_its_caption_says():
    # every combination, 3 random placements each: the exact classifiers read back the caption
    scenes = all_scenes()
    data = make_dataset(3 * len(scenes), seed=5, scenes=scenes)
    acc = accuracy(data.images, data.scenes)
    assert acc["all"] == 1.0, acc


def test_random_held_out_images_are_classified_exactly():
    data = make_dataset(300, seed=11)
    assert {a: v for a, v in accuracy(data.images, data.scenes).items()} == {
        a: 1.0 for a in (*ATTRIBUTES, "all")
    }
    # the generator really varies every attribute
    for a in ATTRIBUTES:
        assert len({s.labels()[a] for s in data.scenes}) > 1


def test_captions_read_naturally_and_parse_back():
    scene = Scene("two", "small", "red", "circle", "sky")
    assert scene.caption() == "two small red circles in the sky"
    assert Scene("one", "large", "blue", "square", "grass").caption() == "one large blue square on grass"
    assert all(parse_caption(s.caption()) == s for s in all_scenes())
    assert len({s.caption() for s in all_scenes()}) == len(all_scenes()) == 192
    with pytest.raises(HRVInputError, match="not a toy-world caption"):
        parse_caption("a purple horse")
    with pytest.raises(HRVInputError, match="not in the toy vocabulary"):
        Scene("three", "small", "red", "circle", "sky")


def test_generation_is_seeded_per_index():
    a = make_dataset(6, seed=3)
    b = make_dataset(6, seed=3)
    c = make_dataset(6, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    # image i depends on (seed, i) only: rendering it alone gives the same pixels
    rng = np.random.default_rng([3, 4])
    scene = Scene(*(str(rng.choice(v)) for v in _vocab()))
    assert scene == a.scenes[4]
    np.testing.assert_array_equal(render(scene, rng), a.images[4])


def _vocab():
    from hrv.toy.world import VOCABULARY

    return [VOCABULARY[a] for a in ATTRIBUTES]


def test_classifier_on_planted_pixels():
    # a plain reference drawn here, not by the world module: a 10x10 yellow square on night
    img = np.tile(np.array(BACKGROUND_RGB["night"], np.float32), (IMAGE_SIZE, IMAGE_SIZE, 1))
    img[5:17, 3:15] = (0.95, 0.9, 0.1)  # 12 px: large
    assert classify(img) == {
        "background": "night",
        "count": "one",
        "size": "large",
        "color": "yellow",
        "shape": "square",
    }
    img[20:27, 20:27] = (0.95, 0.9, 0.1)
    assert classify(img)["count"] == "two"
    # a plain-coded anti-aliased disc of diameter 7 on sand (8x8 samples per pixel): small green circle
    img = np.tile(np.array(BACKGROUND_RGB["sand"], np.float32), (IMAGE_SIZE, IMAGE_SIZE, 1))
    y, x = (np.mgrid[: IMAGE_SIZE * 8, : IMAGE_SIZE * 8] + 0.5) / 8
    disc = (
        ((y - 15.3) ** 2 + (x - 10.6) ** 2 <= 3.5**2).reshape(IMAGE_SIZE, 8, IMAGE_SIZE, 8).mean(axis=(1, 3))
    )
    img = img * (1 - disc[..., None]) + np.array((0.1, 0.8, 0.15), np.float32) * disc[..., None]
    assert classify(img) == {
        "background": "sand",
        "count": "one",
        "size": "small",
        "color": "green",
        "shape": "circle",
    }
    # an empty image has no object: nothing but the background is readable
    empty = classify(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 0.5, np.float32))
    assert empty["count"] is None and empty["shape"] is None


def test_components_against_plain_flood_fill():
    rng = np.random.default_rng(0)
    mask = rng.random((12, 12)) > 0.6
    comps = components(mask)
    assert np.array_equal(np.logical_or.reduce(comps), mask)
    assert sum(int(c.sum()) for c in comps) == int(mask.sum())  # disjoint cover
    for c in comps:  # every component is 4-connected and maximal
        ys, xs = np.nonzero(c)
        for y, x in zip(ys, xs, strict=True):
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < 12 and 0 <= nx < 12 and mask[ny, nx]:
                    assert c[ny, nx]


def _short_cfg(seed: int):
    from hrv.toy.train import ToyTrainConfig

    return ToyTrainConfig(
        seed=seed,
        n_images=32,
        vae_steps=2,
        vae_batch=4,
        unet_steps=2,
        unet_batch=4,
        warmup=1,
        unet_channels=(16, 16, 16, 16),
        vae_channels=(8, 8),
        text_hidden=16,
        text_layers=1,
        pair_steps=2,
    )


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{m}.{k}": v.clone()
        for m in ("unet", "vae", "text_encoder")
        for k, v in getattr(pipe, m).state_dict().items()
    }


def test_training_is_deterministic_for_a_seed(tmp_path):
    from hrv.toy.train import train_pipeline

    a, stats_a = train_pipeline(_short_cfg(0), progress=False, tokenizer_dir=tmp_path / "tok")
    b, stats_b = train_pipeline(_short_cfg(0), progress=False, tokenizer_dir=tmp_path / "tok")
    c, _ = train_pipeline(_short_cfg(1), progress=False, tokenizer_dir=tmp_path / "tok")
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert stats_a["unet_final_loss"] == stats_b["unet_final_loss"]
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)  # the seed matters
    # training changed the weights it trains (the UNet and text encoder actually learn)
    from hrv.toy.train import build_components

    _, te0, unet0, vae0, _ = build_components(_short_cfg(0), tmp_path / "tok")
    assert not torch.equal(unet0.conv_in.weight, a.unet.conv_in.weight)
    assert not torch.equal(vae0.encoder.conv_in.weight, a.vae.encoder.conv_in.weight)
    # the SD v1 head topology: 16 CA layers x 8 heads
    from hrv.heads import HeadRegistry

    assert HeadRegistry.from_unet(a.unet).n_heads == 128


def test_object_weights_mark_the_object_pixels():
    from hrv.toy.train import object_weights

    data = make_dataset(4, seed=2)
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2) * 2 - 1
    w = object_weights(x, 10.0)
    for i in range(4):  # plain reference: pixels far from the border median colour
        img = data.images[i]
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        lower_median = np.sort(border, axis=0)[(len(border) - 1) // 2]  # torch.median's convention
        far = np.sqrt(((img * 2 - 1 - (lower_median * 2 - 1)) ** 2).sum(-1)) > 0.5
        assert np.array_equal(w[i, 0].numpy() == 11.0, far)
        assert 0 < far.mean() < 0.5


def test_bad_recipe_is_rejected():
    from hrv.toy.train import ToyTrainConfig

    with pytest.raises(HRVInputError, match="unet_batch"):
        ToyTrainConfig(unet_batch=0)
    with pytest.raises(HRVInputError, match="pair_fraction"):
        ToyTrainConfig(pair_fraction=1.0)


def test_stage_three_set_adds_two_object_scenes_to_the_single_ones():
    from hrv.toy.pairs import objects_in
    from hrv.toy.train import ToyTrainConfig, pair_training_set
    from hrv.toy.world import parse_caption

    cfg = ToyTrainConfig(n_images=30, pair_fraction=0.25)
    images, captions = pair_training_set(cfg)
    assert cfg.n_pairs == 10 and images.shape == (40, 32, 32, 3) and len(captions) == 40
    singles, pairs = captions[:30], captions[30:]
    assert all(parse_caption(c) for c in singles)  # single-object captions of the world
    assert all(" and a " in c for c in pairs) and not any(" and " in c for c in singles)
    # each pair image shows exactly the two objects its caption names
    for image, caption in zip(images[30:], pairs, strict=True):
        first, second = caption.split(" and ")
        named = {tuple(first.split(" ")[1:3]), tuple(second.split(" ")[1:3])}
        assert set(objects_in(image)) == named, caption
    # the single-object part is stages 1-2's training set, unchanged
    np.testing.assert_array_equal(images[:30], make_dataset(30, cfg.seed).images)
    other, _ = pair_training_set(ToyTrainConfig(n_images=30, pair_fraction=0.25, seed=1))
    assert not np.array_equal(other[30:], images[30:])  # the seed draws other pair images


def test_stage_three_from_a_saved_folder_equals_the_whole_recipe(tmp_path, monkeypatch):
    """train_pairs_from(folder of stages 1-2) gives the weights of train_pipeline with stage 3, bit for
    bit, and stage 3 trains the UNet and text encoder but not the autoencoder."""
    from dataclasses import replace

    from hrv.toy.train import round_to_fp16, save_toy_pipeline, train_pairs_from, train_pipeline

    cfg = replace(_short_cfg(0), pair_steps=2)
    whole, stats = train_pipeline(cfg, progress=False, tokenizer_dir=tmp_path / "tok")
    round_to_fp16(whole)
    assert stats["pair_images"] == cfg.n_pairs and stats["pair_final_loss"] > 0
    stage2, _ = train_pipeline(replace(cfg, pair_steps=0), progress=False, tokenizer_dir=tmp_path / "tok")
    round_to_fp16(stage2)
    before = _weights(stage2)
    save_toy_pipeline(stage2, tmp_path / "stage2", {"config": {}})
    # the 24-image check of the saved folder is not what this test is about
    monkeypatch.setattr("hrv.toy.train.check_record", lambda pipe: {})
    from diffusers import StableDiffusionPipeline

    train_pairs_from(tmp_path / "stage2", tmp_path / "stage3", cfg, progress=False)
    resumed = _weights(StableDiffusionPipeline.from_pretrained(tmp_path / "stage3", dtype=torch.float32))
    expected = _weights(whole)
    assert resumed.keys() == expected.keys()
    for k in expected:
        assert torch.equal(resumed[k], expected[k]), k
    assert all(torch.equal(expected[k], before[k]) for k in expected if k.startswith("vae."))
    assert any(not torch.equal(expected[k], before[k]) for k in expected if k.startswith("unet."))
    assert any(not torch.equal(expected[k], before[k]) for k in expected if k.startswith("text_encoder."))


@pytest.fixture(scope="module")
def toy_pipe(root):
    from hrv.models import load_pipeline

    folder = root / "resources/toy/model"
    if not (folder / "model_index.json").is_file():
        pytest.fail(f"the shipped toy model is missing from {folder}")
    return load_pipeline(folder, device="cpu", dtype="float32")


def test_shipped_weights_reproduce_recorded_accuracy(root, toy_pipe):
    from hrv.heads import HeadRegistry
    from hrv.toy.train import recorded_check, recorded_pair_check

    stats = json.loads((root / "resources/toy/model/training.json").read_text())
    recorded = stats["check"]["accuracy"]
    assert HeadRegistry.from_unet(toy_pipe.unet).n_heads == 128
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        measured = recorded_check(toy_pipe)
        measured_pairs = recorded_pair_check(toy_pipe)
    finally:
        torch.set_num_threads(threads)
    n = stats["check"]["images"]
    for attr, value in recorded.items():
        # one image's worth of slack for BLAS differences between machines
        assert abs(measured[attr] - value) <= 1.0 / n + 1e-9, (attr, measured, recorded)
    for key, value in stats["check"]["pairs"].items():
        assert abs(measured_pairs[key] - value) <= 1.0 / n + 1e-9, (key, measured_pairs, stats["check"])


def test_shipped_model_follows_captions(root):
    """Every attribute well above chance in the recorded check (which the test above re-measures),
    and both objects of a two-object caption drawn in a fair share of images."""
    from hrv.toy.checks import CHANCE

    check = json.loads((root / "resources/toy/model/training.json").read_text())["check"]
    recorded = check["accuracy"]
    assert check["images"] >= 96  # one image is at most 1/96 of a rate
    for attr, chance in CHANCE.items():
        # 0.2 above chance. The single-object model before stage 3 measured count 0.69 on all 192
        # captions: the 0.25 asked of a 24-image check earlier held for that sample, not the model
        assert recorded[attr] >= chance + 0.2, (attr, recorded)
    assert recorded["all"] >= 0.4, recorded  # chance of all five at once: 1/192
    pairs = check["pairs"]  # before stage 3 the second object was missing from every image
    assert pairs["first_missing"] <= 0.6 and pairs["second_missing"] <= 0.6, pairs
    assert pairs["both_present"] >= 0.2, pairs


def test_toy_checks_write_complete_results(root, tmp_path):
    from hrv.toy.checks import ToyCheckSettings, run_checks

    settings = ToyCheckSettings(steps=2, hrv_prompts=4, weaken_prompts=2, ks=(0, 64, 128), max_captions=6)
    logged: list[str] = []
    out = tmp_path / "checks"
    res = run_checks(
        root / "resources/toy/model", root / "resources/toy/concepts.csv", out, settings, logged.append
    )
    assert {p.name for p in out.iterdir()} == {
        "checks.json",
        "hrv.npz",
        "heatmap.png",
        "weakening.png",
        "samples.png",
        "plain_images.npy",
    }
    assert json.loads((out / "checks.json").read_text())["generation"] == res["generation"]
    assert res["classifier_clean"]["all"] > 0.99
    curves = res["weakening"]["curves"]
    assert set(curves) == {f"{c}-{o}" for c in ("Color", "Shape") for o in ("MoRHF", "LeRHF", "random")}
    # accuracies over the 2 weakened captions: 0, 1/2 or 1 at each of the 3 k values
    assert all(
        len(v) == 3 and all(x in (0.0, 0.5, 1.0) for x in v) for c in curves.values() for v in c.values()
    )
    # k = 0 weakens nothing: every order starts from the same images
    assert len({c["color"][0] for c in curves.values()}) == 1
    # each claim's value is a difference of areas under the curves (trapezoids over k / 128), and
    # its verdict compares it with one image's worth (1 / weaken_prompts), recomputed here
    x = np.array([0, 64, 128]) / 128

    def area(key, attr):
        y = np.array(curves[key][attr])
        return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(2))

    differences = [
        area("Color-LeRHF", "color") - area("Color-MoRHF", "color"),
        area("Color-random", "color") - area("Color-MoRHF", "color"),
        area("Shape-LeRHF", "shape") - area("Shape-MoRHF", "shape"),
        area("Shape-random", "shape") - area("Shape-MoRHF", "shape"),
        area("Color-MoRHF", "shape") - area("Shape-MoRHF", "shape"),
        area("Shape-MoRHF", "color") - area("Color-MoRHF", "color"),
    ]
    claims = list(res["weakening"]["claims"].values())
    assert len(claims) == len(differences)
    for row, value in zip(claims, differences, strict=True):
        assert row["value"] == pytest.approx(value, abs=1e-12)
        want = "holds" if value > 0.5 else "DOES NOT HOLD" if value < -0.5 else "within noise (< 1 image)"
        assert row["verdict"] == want, (row, value)
    hrv = np.load(out / "hrv.npz")
    assert np.allclose(hrv["hrv"].sum(axis=1), 128, atol=1e-3)
    from hrv.toy.checks import verdict  # the thresholds themselves, on planted values

    assert [verdict(v, 0.5) for v in (0.51, 0.5, -0.5, -0.51)] == [
        "holds", "within noise (< 1 image)", "within noise (< 1 image)", "DOES NOT HOLD"
    ]  # fmt: skip
    assert any("[4] ordered weakening" in line for line in logged)
    assert not list(tmp_path.glob(".checks.*"))  # no temporary folder left behind


def test_toy_checks_reject_bad_settings(root, tmp_path):
    from hrv.toy.checks import ToyCheckSettings, run_checks

    with pytest.raises(HRVInputError, match="ks"):
        ToyCheckSettings(ks=(-1, 3))
    bad = tmp_path / "concepts.csv"
    bad.write_text("concept,word\nColor,red\nSize,small\n")
    with pytest.raises(HRVInputError, match="Shape"):
        run_checks(root / "resources/toy/model", bad, tmp_path / "out", ToyCheckSettings())
    assert not (tmp_path / "out").exists()


def test_the_rule_recipe_is_the_shipped_models(root):
    """`train_toy_model` trains ToyTrainConfig() (seed 0): its defaults must be the shipped recipe."""
    from dataclasses import asdict

    from hrv.toy.train import ToyTrainConfig

    shipped = json.loads((root / "resources/toy/model/training.json").read_text())["config"]
    assert shipped == json.loads(json.dumps(asdict(ToyTrainConfig())))
