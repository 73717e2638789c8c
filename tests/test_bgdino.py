"""BG-DINO (hrv.scores): the masked cosine, the detector -> SAM 2 -> mask path, the fallback, the files.

The tiny random Grounding DINO / SAM 2 / DINOv2 folders are built once per module with
``hrv build-tiny-gsam``. References call the transformers models directly and mask with numpy.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hrv.cli import main
from hrv.scores.bgdino import BGDino, BGDinoSettings
from hrv.scores.bgdino_run import score_manifest, summarize

H, W = 96, 80  # not square: a swapped height and width shows


@pytest.fixture(scope="module")
def gsam_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gsam") / "tiny-gsam"
    assert main(["build-tiny-gsam", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def settings(gsam_dir) -> BGDinoSettings:
    return BGDinoSettings(
        detector=str(gsam_dir / "grounding-dino"),
        segmenter=str(gsam_dir / "sam2"),
        embedder=str(gsam_dir / "dinov2"),
        device="cpu",
    )


@pytest.fixture(scope="module")
def scorer(settings) -> BGDino:
    return BGDino.load(settings)


def _with(scorer: BGDino, **changes) -> BGDino:
    """The same loaded models under other settings."""
    copy = BGDino.__new__(BGDino)
    copy.__dict__.update(scorer.__dict__, settings=dataclasses.replace(scorer.settings, **changes))
    return copy


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _box_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _reference_cls(gsam_dir, images: list[np.ndarray]) -> torch.Tensor:
    """The reference: transformers' processor and Dinov2Model, the whole image resized to the crop."""
    from transformers import AutoImageProcessor, Dinov2Model

    proc = AutoImageProcessor.from_pretrained(gsam_dir / "dinov2")
    model = Dinov2Model.from_pretrained(gsam_dir / "dinov2").eval()
    crop = proc.crop_size
    x = proc(images=images, do_center_crop=False, size=dict(crop), return_tensors="pt")["pixel_values"]
    assert x.shape[-2:] == (crop["height"], crop["width"])
    with torch.no_grad():
        return model(pixel_values=x).pooler_output


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


# ---- the masked cosine (masks given, detector bypassed) ----


def test_edit_inside_the_object_scores_exactly_one(scorer):
    src = _image(0)
    mask = _box_mask(20, 60, 10, 50)
    edited = src.copy()
    edited[mask] = 255 - edited[mask]  # every object pixel changes, no background pixel does
    none = np.zeros_like(mask)
    scores, _ = scorer.score_masked([src], [edited], [mask], [none])
    assert scores[0] == 1.0
    unmasked, _ = scorer.score_masked([src], [edited], [none], [none])
    assert unmasked[0] < 1.0  # the edit is visible to DINOv2 when it is not masked


def test_background_change_scores_lower_the_more_it_changes(scorer):
    src, other = _image(1), _image(2)
    mask = _box_mask(20, 60, 10, 50)
    none = np.zeros_like(mask)
    edits = []
    for alpha in (0.1, 0.3, 0.6, 1.0):
        e = np.where(mask[..., None], src, (1 - alpha) * src + alpha * other).round().astype(np.uint8)
        edits.append(e)
    scores, _ = scorer.score_masked([src] * 4, edits, [mask] * 4, [none] * 4)
    assert np.all(scores < 1.0)
    assert np.all(np.diff(scores) < 0), scores


def test_the_union_of_both_images_masks_is_zeroed(scorer, gsam_dir):
    src = _image(3)
    m_src, m_edt = _box_mask(5, 30, 5, 30), _box_mask(50, 90, 40, 75)  # disjoint
    edited = src.copy()
    edited[m_src | m_edt] = 0  # the object moved: changed where either image has it
    edited[m_src] = 200
    scores, union = scorer.score_masked([src], [edited], [m_src], [m_edt])
    assert scores[0] == 1.0
    np.testing.assert_array_equal(union[0], m_src | m_edt)
    # either mask alone leaves changed pixels in the background
    only_src, _ = scorer.score_masked([src], [edited], [m_src], [np.zeros_like(m_src)])
    only_edt, _ = scorer.score_masked([src], [edited], [np.zeros_like(m_src)], [m_edt])
    assert only_src[0] < 1.0 and only_edt[0] < 1.0
    # against the model called directly on numpy-masked images, for an edit that also changes
    # the background (so that the reference is not trivially 1)
    background = ~(m_src | m_edt)
    edited2 = edited.copy()
    edited2[:4] = 0
    got, _ = scorer.score_masked([src], [edited2], [m_src], [m_edt])
    ref = _reference_cls(gsam_dir, [src * background[..., None], edited2 * background[..., None]])
    assert got[0] == pytest.approx(_cos(ref[0], ref[1]), abs=1e-6)
    assert got[0] < 1.0


def test_full_mask_has_no_background_and_scores_nan(scorer):
    src = _image(4)
    full = np.ones((H, W), dtype=bool)
    scores, _ = scorer.score_masked([src], [_image(5)], [full], [np.zeros_like(full)])
    assert np.isnan(scores[0])


def test_embedding_is_the_models_cls_pooler_output(scorer, gsam_dir):
    from transformers import AutoImageProcessor, Dinov2Model

    images = [_image(6), _image(7)]
    proc = AutoImageProcessor.from_pretrained(gsam_dir / "dinov2")
    model = Dinov2Model.from_pretrained(gsam_dir / "dinov2").eval()
    crop = proc.crop_size
    with torch.no_grad():
        whole = proc(images=images, do_center_crop=False, size=dict(crop), return_tensors="pt")
        ref = model(**whole).pooler_output
        cropped = model(**proc(images=images, return_tensors="pt")).pooler_output
    torch.testing.assert_close(scorer.embed(images), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(_with(scorer, center_crop=True).embed(images), cropped, rtol=0, atol=1e-6)
    assert not torch.allclose(ref, cropped)  # the two choices differ on non-square images


# ---- detector -> boxes -> SAM 2 -> masks ----


def test_detector_boxes_are_in_the_images_pixel_coordinates(scorer, gsam_dir):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    images = [_image(8), _image(9)]
    got = _with(scorer, box_threshold=0.0).detect(images, ["Car", "teapot."])
    proc = AutoProcessor.from_pretrained(gsam_dir / "grounding-dino")
    model = AutoModelForZeroShotObjectDetection.from_pretrained(gsam_dir / "grounding-dino").eval()
    with torch.no_grad():
        out = model(**proc(images=images, text=["car.", "teapot."], padding=True, return_tensors="pt"))
    for k in range(2):
        cx, cy, w, h = out.pred_boxes[k].double().unbind(-1)  # normalised centre and size
        ref = torch.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], -1)
        ref = ref.clamp(min=0).numpy()
        ref = np.minimum(ref, [W, H, W, H])
        assert got[k].shape == (model.config.num_queries, 4)
        np.testing.assert_allclose(got[k], ref, atol=1e-3)
    assert all(len(b) == 0 for b in _with(scorer, box_threshold=1.0).detect(images, ["car", "car"]))


def test_boxes_reach_sam2_as_box_prompts_and_masks_come_back_at_image_size(scorer, monkeypatch):
    seen = {}
    encode, forward = scorer.segmenter.get_image_embeddings, scorer.segmenter.forward

    def spy_encode(pixel_values, **kwargs):
        seen["n_images"] = pixel_values.shape[0]
        return encode(pixel_values, **kwargs)

    def spy_forward(*args, **kwargs):
        seen["boxes"] = kwargs["input_boxes"].clone()
        return forward(*args, **kwargs)

    monkeypatch.setattr(scorer.segmenter, "get_image_embeddings", spy_encode)
    monkeypatch.setattr(scorer.segmenter, "forward", spy_forward)
    images = [_image(10), _image(11), _image(12)]
    b1 = np.array([[8.0, 24.0, 40.0, 72.0]])
    b3 = np.array([[0.0, 0.0, 40.0, 48.0], [40.0, 48.0, 80.0, 96.0]])
    masks = scorer.masks_from_boxes(images, [b1, np.zeros((0, 4)), b3])
    assert seen["n_images"] == 2  # the image without boxes skips SAM 2
    # one box prompt per row, in SAM 2's 64 x 64 input frame: x * 64 / W, y * 64 / H
    scale = np.array([64 / W, 64 / H, 64 / W, 64 / H])
    np.testing.assert_allclose(seen["boxes"].numpy(), np.vstack([b1, b3])[:, None] * scale, atol=1e-4)
    assert [m.shape for m in masks] == [(H, W)] * 3 and all(m.dtype == bool for m in masks)
    assert not masks[1].any()
    # the union over boxes: each box alone, united, gives the two-box mask
    alone = [scorer.masks_from_boxes([images[2]], [b[None]])[0] for b in b3]
    np.testing.assert_array_equal(masks[2], alone[0] | alone[1])
    assert masks[2].any() and (~masks[2]).any()
    # each box's mask is SAM 2's, called the documented way (processor with image and box, forward)
    from transformers import Sam2Model, Sam2Processor

    folder = scorer.settings.segmenter
    proc, model = Sam2Processor.from_pretrained(folder), Sam2Model.from_pretrained(folder).eval()
    for image, box, got in [
        (images[0], b1[0], masks[0]),
        (images[2], b3[0], alone[0]),
        (images[2], b3[1], alone[1]),
    ]:
        inputs = proc(images=image, input_boxes=[[box.tolist()]], return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs, multimask_output=False)
        ref = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], binarize=True)[0][0, 0]
        assert (ref.numpy() != got).mean() < 1e-3  # logits at 0 may round either way


def test_no_detection_in_either_image_scores_the_whole_images_and_flags(scorer, gsam_dir):
    src, edited = _image(13), _image(14)
    none = _with(scorer, box_threshold=1.0)  # sigmoid scores never exceed 1
    [result] = none.score_pairs([src], [edited], ["car"])
    assert result.fallback and result.boxes_source == result.boxes_edited == 0
    assert not result.mask.any() and result.background == 1.0
    ref = _reference_cls(gsam_dir, [src, edited])
    assert result.bgdino == pytest.approx(_cos(ref[0], ref[1]), abs=1e-6)


def test_detection_in_one_image_masks_with_that_image_alone(scorer, monkeypatch):
    src, edited = _image(15), _image(16)
    box = np.array([[10.0, 10.0, 50.0, 60.0]])
    monkeypatch.setattr(scorer, "detect", lambda images, nouns: [box, np.zeros((0, 4))])
    [result] = scorer.score_pairs([src], [edited], ["car"])
    assert not result.fallback and (result.boxes_source, result.boxes_edited) == (1, 0)
    np.testing.assert_array_equal(result.mask, scorer.masks_from_boxes([src], [box])[0])


def test_batched_scores_equal_one_pair_at_a_time(scorer):
    sources = [_image(20 + k) for k in range(4)]
    editeds = [s.copy() for s in sources]
    for k, e in enumerate(editeds):
        e[: 10 * k] = 0
    nouns = ["car", "bowl", "t-shirt", "teapot"]
    some = _with(scorer, box_threshold=0.999)
    batched = _with(some, batch_size=4).score_pairs(sources, editeds, nouns)
    single = _with(some, batch_size=1).score_pairs(sources, editeds, nouns)
    for a, b in zip(batched, single, strict=True):
        assert (a.fallback, a.boxes_source, a.boxes_edited) == (b.fallback, b.boxes_source, b.boxes_edited)
        assert a.bgdino == pytest.approx(b.bgdino, abs=1e-5, nan_ok=True)


# ---- manifest, files, command line ----


def _write_pairs(folder, n=3, sizes=None, nouns=None):
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        src = _image(30 + k)
        edited = src.copy()
        edited[:20] = 0
        h, w = (sizes or {}).get(k, (H, W))
        Image.fromarray(src).save(folder / f"src{k}.png")
        Image.fromarray(edited).resize((w, h)).save(folder / f"edit{k}.png")
        noun = (nouns or {}).get(k, "car")
        rows.append({"set": "color", "method": "p2p", "pair": k, "seed": 10, "source": f"src{k}.png",
                     "edited": f"edit{k}.png", "object": noun, "note": f"row{k}"})  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def _cli_models(settings) -> list[str]:
    return [
        "--detector",
        settings.detector,
        "--segmenter",
        settings.segmenter,
        "--embedder",
        settings.embedder,
    ]


def test_score_bgdino_writes_scores_masks_and_summary(settings, tmp_path, capsys):
    manifest = _write_pairs(tmp_path / "pairs")
    out = tmp_path / "bgdino"
    args = ["score-bgdino", str(manifest), "--out", str(out), *_cli_models(settings), "--device", "cpu"]
    assert main([*args, "--box-threshold", "0.999"]) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores["note"]) == ["row0", "row1", "row2"]  # extra columns carried
    # image paths relative to the output folder, where scores.csv is read
    assert [(out / p).resolve() for p in scores["source"]] == [
        (tmp_path / f"pairs/src{k}.png").resolve() for k in range(3)
    ]
    for row in scores.itertuples():
        mask = np.asarray(Image.open(out / row.mask))
        assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}
        assert row.background == pytest.approx(1 - (mask == 255).mean())
    summary = pd.read_csv(out / "summary.csv")
    finite = scores["bgdino"].dropna()
    assert summary.loc[0, "n"] == len(finite)
    assert summary.loc[0, "mean"] == pytest.approx(finite.mean())
    # nothing detected: every pair falls back, flagged in the scores and counted in the summary
    assert main([*args, "--box-threshold", "1.0"]) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert scores["fallback"].all() and (scores["background"] == 1.0).all()
    assert pd.read_csv(out / "summary.csv").loc[0, "fallback"] == 3


def test_editing_stage_manifest_columns_and_selection(scorer, tmp_path):
    """The editing stage's manifest names the images source_image / edited_image; --sets and
    --methods select its rows."""
    manifest = _write_pairs(tmp_path / "pairs", n=3)
    table = pd.read_csv(manifest).rename(columns={"source": "source_image", "edited": "edited_image"})
    table["method"] = ["p2p", "p2p_hrv", "p2p_hrv"]
    table.to_csv(manifest, index=False)
    scores = score_manifest(manifest, tmp_path / "out", scorer=scorer, sets=["color"], methods=["p2p_hrv"])
    assert list(scores["pair"]) == [1, 2] and list(scores["method"]) == ["p2p_hrv"] * 2
    written = pd.read_csv(tmp_path / "out/scores.csv")
    assert (tmp_path / "out" / written.loc[0, "edited_image"]).resolve() == (
        tmp_path / "pairs/edit1.png"
    ).resolve()
    assert sorted(p.name for p in (tmp_path / "out/masks").iterdir()) == [
        "0000_color_p2p_hrv_1_seed10.png",
        "0001_color_p2p_hrv_2_seed10.png",
    ]
    from hrv.errors import HRVInputError

    with pytest.raises(HRVInputError, match="no rows"):
        score_manifest(manifest, tmp_path / "out2", scorer=scorer, sets=["material"])
    assert not (tmp_path / "out2").exists()


def test_summary_mean_se_n_per_set_and_method():
    scores = pd.DataFrame(
        {
            "set": ["color"] * 4 + ["material"] * 2,
            "method": ["p2p", "p2p", "p2p", "sdedit", "p2p", "p2p"],
            "bgdino": [0.9, 0.8, np.nan, 0.5, 0.6, 0.7],
            "fallback": [True, False, False, False, False, True],
            "background": [1.0, 0.5, 0.0, 0.4, 0.3, 1.0],
        }
    )
    table = summarize(scores).set_index(["set", "method"])
    row = table.loc[("color", "p2p")]
    assert (row["n"], row["fallback"], row["no_background"]) == (2, 1, 1)
    assert row["mean"] == pytest.approx(0.85)
    assert row["se"] == pytest.approx(np.std([0.9, 0.8], ddof=1) / np.sqrt(2))
    assert table.loc[("color", "sdedit"), "n"] == 1 and np.isnan(table.loc[("color", "sdedit"), "se"])
    assert table.loc[("material", "p2p"), "mean"] == pytest.approx(0.65)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing image", "does not exist"),
        ("different sizes", "row 2: the source"),  # found in the manifest, before any model loads
        ("empty noun", "noun is empty"),
        ("missing model", "build-tiny-gsam"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(case, message, settings, tmp_path, capsys):
    models = _cli_models(settings)
    if case == "missing image":
        manifest = _write_pairs(tmp_path / "pairs", n=2)
        (tmp_path / "pairs/edit1.png").unlink()
    elif case == "different sizes":
        manifest = _write_pairs(tmp_path / "pairs", n=2, sizes={1: (48, 64)})
    elif case == "empty noun":
        manifest = _write_pairs(tmp_path / "pairs", n=2, nouns={1: "  "})
    else:
        manifest = _write_pairs(tmp_path / "pairs", n=2)
        models[3] = str(tmp_path / "no-such-sam2")
    out = tmp_path / "bgdino"
    assert main(["score-bgdino", str(manifest), "--out", str(out), *models, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]  # no temporary folder left either


def test_hub_id_not_in_the_cache_says_how_to_get_it(settings):
    from hrv.errors import HRVInputError

    with pytest.raises(HRVInputError, match="huggingface-cli download no-such-org/no-such-dinov2"):
        BGDino.load(dataclasses.replace(settings, embedder="no-such-org/no-such-dinov2"))


def test_foreign_output_folder_is_not_replaced(scorer, tmp_path):
    from hrv.errors import HRVInputError

    manifest = _write_pairs(tmp_path / "pairs", n=1)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(HRVInputError, match="not an earlier output of"):
        score_manifest(manifest, out, scorer=scorer)
    assert (out / "notes.txt").read_text() == "keep me"


def test_tiny_models_are_ordinary_folders_and_seeded(gsam_dir, tmp_path):
    from hrv.scores.tiny import save_tiny_gsam

    again = save_tiny_gsam(tmp_path / "again", seed=0)
    for folder in again.values():
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"][0] in {"GroundingDinoForObjectDetection", "Sam2Model", "Dinov2Model"}
        same = (gsam_dir / folder.name / "model.safetensors").read_bytes()
        assert (folder / "model.safetensors").read_bytes() == same
    save_tiny_gsam(tmp_path / "again", seed=0)  # its own folders are rebuilt
    from hrv.errors import HRVInputError

    (tmp_path / "mine/sam2").mkdir(parents=True)
    (tmp_path / "mine/sam2/config.json").write_text("{}")
    with pytest.raises(HRVInputError, match="not an earlier output of"):
        save_tiny_gsam(tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["sam2"]
