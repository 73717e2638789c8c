"""Neglect in the toy world: the scorer's verdict per image, the measurement's bookkeeping, and the
A&E variants' map sizes on the toy model's 2x autoencoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrv.errors import HRVInputError
from hrv.toy.neglect import NeglectSettings, missing, neglect_scenes
from hrv.toy.pairs import all_pair_scenes, render_pair


@pytest.fixture(scope="module")
def toy_pipe(root):
    from hrv.models import load_pipeline

    return load_pipeline(root / "resources/toy/model", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def toy_hrv(toy_pipe):
    """A toy HRV file's content: Shape on every head, Color planted on one head."""
    from hrv.heads import HeadRegistry
    from hrv.hrvfile import HRVSet

    heads = HeadRegistry.from_unet(toy_pipe.unet).names("short")
    counts = np.ones((1, 2, len(heads)), dtype=np.int64)  # (timesteps, concepts, heads)
    counts[0, 1, 5] = 1000
    return HRVSet.from_counts(counts, ["Shape", "Color"], heads, meta={})


def test_scenes_spread_over_every_colour_shape_and_backdrop():
    scenes = neglect_scenes(48)
    assert len(set(scenes)) == 48 and set(scenes) <= set(all_pair_scenes())
    assert neglect_scenes(48) == scenes  # a fixed choice
    assert {s.background for s in scenes} == {"grass", "sand", "sky", "night"}
    assert {s.first[0] for s in scenes} == {"red", "green", "blue", "yellow"}
    assert {s.second[1] for s in scenes} == {"circle", "square", "triangle"}


def test_missing_names_the_left_out_object():
    scene = all_pair_scenes()[17]
    rng = lambda: np.random.default_rng([3, 17])  # noqa: E731 - the same image with objects left out
    assert missing(render_pair(scene, rng()), scene) == (False, False)
    assert missing(render_pair(scene, rng(), draw=(False, True)), scene) == (True, False)
    assert missing(render_pair(scene, rng(), draw=(True, False)), scene) == (False, True)
    assert missing(render_pair(scene, rng(), draw=(False, False)), scene) == (True, True)


def test_verdicts_tell_an_absent_object_from_a_miscoloured_one():
    from hrv.toy.neglect import verdicts
    from hrv.toy.pairs import PairScene

    drawn = PairScene(("red", "circle"), ("blue", "square"), "sand")
    image = render_pair(drawn, np.random.default_rng([4, 1]))
    assert verdicts(image, drawn) == ("present", "present")
    # scored against a caption that asked for a green square: the square is there, in blue
    asked = PairScene(("red", "circle"), ("green", "square"), "sand")
    assert verdicts(image, asked) == ("present", "miscoloured")
    left_out = render_pair(drawn, np.random.default_rng([4, 1]), draw=(True, False))
    assert verdicts(left_out, drawn) == ("present", "absent")


def test_bad_settings_are_refused():
    with pytest.raises(HRVInputError, match="methods"):
        NeglectSettings(methods=("sd", "excite"))
    with pytest.raises(HRVInputError, match="scenes"):
        NeglectSettings(scenes=289)
    with pytest.raises(HRVInputError, match="seed"):
        NeglectSettings(seeds=())


def test_toy_maps_are_the_unet_levels_not_one_pixel(toy_pipe):
    """The toy's 32 px images have 16x16 latents: ae reads the 4x4 layers and ae_hrv brings every
    map to 2x2 (1/32 and 1/64 of the image would be 1x1, with nothing for A&E to find)."""
    from hrv.multiconcept.sampler import ExciteSampler

    ae = ExciteSampler(toy_pipe, "ae", steps=2, height=32, width=32).aggregation
    assert {(s.height, s.width) for s in ae.sites} == {(4, 4)} and len(ae.sites) == 5
    uniform = ExciteSampler(toy_pipe, "ae_uniform", steps=2, height=32, width=32).aggregation
    assert uniform.target == (2, 2) and uniform.n_heads == 128


def test_measurement_counts_every_image_and_pairs_the_methods(toy_pipe, toy_hrv):
    from hrv.toy.neglect import measure_neglect

    s = NeglectSettings(scenes=3, seeds=(0, 1), steps=3, batch_size=4)
    results, images = measure_neglect(toy_pipe, toy_hrv, s, log=lambda line: None)
    scenes = [sc for sc in neglect_scenes(3) for _ in s.seeds]
    n = len(scenes)
    assert results["images_per_method"] == n == 6
    for method in s.methods:
        assert len(images[method]) == n
        flags = np.array([missing(im, sc) for im, sc in zip(images[method], scenes, strict=True)])
        r = results["methods"][method]
        assert r["first_missing"]["rate"] == pytest.approx(flags[:, 0].mean())
        assert r["any_missing"]["rate"] == pytest.approx(flags.any(axis=1).mean())
        p = r["any_missing"]["rate"]
        assert r["any_missing"]["se"] == pytest.approx(np.sqrt(p * (1 - p) / n))
        # every missing object is either absent or miscoloured
        missing_objects = flags.sum() / (2 * n)
        assert r["object_absent"]["rate"] + r["object_miscoloured"]["rate"] == pytest.approx(missing_objects)
        if method != "sd":  # recovered - lost = the change in images missing an object
            paired = r["paired_vs_sd"]
            sd_any = results["methods"]["sd"]["any_missing"]["rate"]
            assert paired["recovered"] - paired["lost"] == round((sd_any - p) * n)
    # sd's images do not depend on the other methods run beside it
    again, again_images = measure_neglect(
        toy_pipe,
        None,
        NeglectSettings(methods=("sd",), scenes=3, seeds=(0, 1), steps=3),
        log=lambda line: None,
    )
    assert [np.asarray(a).tolist() for a in again_images["sd"]] == [
        np.asarray(a).tolist() for a in images["sd"]
    ]


def test_ae_hrv_needs_its_concept(toy_pipe, toy_hrv):
    from hrv.toy.neglect import measure_neglect

    with pytest.raises(HRVInputError, match="toy HRVs"):
        measure_neglect(toy_pipe, None, NeglectSettings(methods=("ae_hrv",), scenes=1))
    with pytest.raises(HRVInputError, match="'Texture' is not in the HRV file"):
        measure_neglect(toy_pipe, toy_hrv, NeglectSettings(methods=("ae_hrv",), scenes=1, concept="Texture"))


def test_run_writes_a_complete_folder(root, toy_hrv, tmp_path):
    from hrv.toy.neglect import run_neglect

    toy_hrv.save(tmp_path / "hrv.npz")
    out = tmp_path / "neglect"
    s = NeglectSettings(methods=("sd", "ae_hrv"), scenes=2, steps=2)
    res = run_neglect(root / "resources/toy/model", tmp_path / "hrv.npz", out, s, log=lambda line: None)
    assert {p.name for p in out.iterdir()} >= {"neglect.json", "neglect.csv", "neglect.png", "grid.png"}
    assert json.loads((out / "neglect.json").read_text())["methods"] == res["methods"]
    import pandas as pd

    table = pd.read_csv(out / "neglect.csv")
    assert set(table["method"]) == {"sd", "ae_hrv"} and (table["n"] == 2).all()
    run_neglect(root / "resources/toy/model", tmp_path / "hrv.npz", out, s, log=lambda line: None)  # its own
    with pytest.raises(HRVInputError, match="not empty"):  # a folder it did not write is not touched
        run_neglect(root / "resources/toy/model", tmp_path / "hrv.npz", tmp_path, s, log=lambda line: None)
    assert (tmp_path / "hrv.npz").is_file()


def test_per_method_files_and_the_table_refuse_a_mix_of_settings(root, toy_pipe, tmp_path):
    from hrv.toy.neglect import run_neglect_method, run_neglect_table, sample_neglect

    model = root / "resources/toy/model"
    s = NeglectSettings(methods=("sd",), scenes=2, steps=2)
    npz = run_neglect_method(model, None, "sd", tmp_path / "sd.npz", s, log=lambda line: None)
    with np.load(npz) as data:  # the job's images are the in-process ones
        np.testing.assert_array_equal(data["images"], sample_neglect(toy_pipe, None, "sd", s))
    res = run_neglect_table({"sd": npz}, tmp_path / "summary", s, log=lambda line: None)
    assert res["images_per_method"] == 2 and (tmp_path / "summary/grid.png").is_file()
    other = NeglectSettings(methods=("sd",), scenes=2, steps=3)
    with pytest.raises(HRVInputError, match="sd.npz.*re-run"):
        run_neglect_table({"sd": npz}, tmp_path / "summary", other, log=lambda line: None)
    with pytest.raises(HRVInputError, match="expected ae"):  # a file of another method
        run_neglect_table({"ae": npz}, tmp_path / "summary", s, log=lambda line: None)
