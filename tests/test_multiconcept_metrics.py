"""A&E's metrics and the subject tokens, against plain references written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hrv.errors import HRVInputError
from hrv.multiconcept.metrics import (
    load_blip,
    prompt_embedding,
    save_tiny_blip,
    score_prompt,
    split_prompt,
    template_texts,
)
from hrv.multiconcept.subjects import find_subjects, read_prompt_set, token_layout


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from hrv.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def clip():
    from hrv.clip import load_clip

    return load_clip("tiny", device="cpu")


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    # saved as a folder and loaded back, so the real loading code runs
    return load_blip(save_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip"), device="cpu")


def _images(n: int) -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_templates_are_a_and_e_s_80_with_its_replacements():
    texts = template_texts("a cat and a dog")
    assert len(texts) == 80
    # "a bad photo of a {}." and "a photo of the {}." with the double article removed
    assert texts[0] == "a bad photo of a cat and a dog."
    assert "a photo of a cat and a dog." in texts
    assert "a photo of many a cat and a dog." in texts  # A&E leaves this one as it is
    assert "itap of my a cat and a dog." in texts


def test_prompt_embedding_is_the_normalised_template_mean(clip):
    import open_clip.zero_shot_metadata as z

    texts = [f("a frog and a deer") for f in z.OPENAI_IMAGENET_TEMPLATES]
    texts = [t.replace("a a", "a").replace("the a", "a") for t in texts]
    with torch.no_grad():
        emb = clip.model.encode_text(clip.tokenizer(texts)).float()
    emb = emb / emb.norm(dim=-1, keepdim=True)
    ref = emb.mean(0) / emb.mean(0).norm()
    got = prompt_embedding(clip, "a frog and a deer")
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_split_prompt_at_and_else_with():
    assert split_prompt("a gray lion and a purple bear") == ("a gray lion", "a purple bear")
    assert split_prompt("a cat with a hat") == ("a cat", "a hat")
    with pytest.raises(HRVInputError, match="neither"):
        split_prompt("a cat")


def test_clip_scores_against_plain_cosines(clip):
    images = _images(3)
    scores = score_prompt(clip, "a black cat and a white dog", images)
    with torch.no_grad():
        x = torch.stack([clip.preprocess(im.convert("RGB")) for im in images])
        img = clip.model.encode_image(x).float()
    img = img / img.norm(dim=-1, keepdim=True)
    for text, got in (
        ("a black cat and a white dog", scores.full),
        ("a black cat", scores.first),
        ("a white dog", scores.second),
    ):
        ref = (img @ prompt_embedding(clip, text)).double().numpy()
        np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_array_equal(scores.min_object, np.minimum(scores.first, scores.second))
    assert scores.blip is None
    # the halves swap with the prompt's order; the full score does not depend on it
    swapped = score_prompt(clip, "a white dog and a black cat", images)
    np.testing.assert_allclose(swapped.first, scores.second, atol=1e-7)


def test_blip_caption_with_a_and_e_decoding_and_its_clip_score(clip, blip):
    images = _images(2)
    scores = score_prompt(clip, "a cat and a dog", images, blip=blip)
    for image, caption, got in zip(images, scores.captions, scores.blip, strict=True):
        inputs = blip.processor(images=image, text="a picture of ", return_tensors="pt")
        with torch.no_grad():
            ids = blip.model.generate(**inputs, num_beams=3, max_length=30, min_length=10)
        text = blip.processor.decode(ids[0], skip_special_tokens=True)
        assert text.startswith("a picture of ")
        assert caption == text[len("a picture of ") :]
        assert len(ids[0]) >= 10
        with torch.no_grad():
            cap = clip.model.encode_text(clip.tokenizer([caption])).float()[0]
        ref = float(cap @ prompt_embedding(clip, "a cat and a dog") / cap.norm())
        assert got == pytest.approx(ref, abs=1e-6)


def test_missing_blip_folder_is_a_clear_error(tmp_path):
    with pytest.raises(HRVInputError, match="BLIP model"):
        load_blip(tmp_path / "nothing", device="cpu")


@pytest.mark.parametrize("name, nouns", [("type1", (2, 5)), ("type2", (3, 7))])
def test_benchmark_subjects_are_the_two_nouns(root, tokenizer, name, nouns):
    prompts = read_prompt_set(root / f"resources/benchmarks/multi_concept_{name}.txt")
    assert len(prompts) == {"type1": 66, "type2": 150}[name]
    for prompt in prompts:
        subjects = find_subjects(tokenizer, prompt)
        words = prompt.split()
        assert [s.word for s in subjects] == [words[nouns[0] - 1], words[nouns[1] - 1]]
        assert token_layout(subjects) == (nouns, ("Animals", "Animals"))


def test_repeated_and_multi_token_subjects(tokenizer):
    same = find_subjects(tokenizer, "a cat and a cat")
    assert [s.positions for s in same] == [(2,), (5,)]
    # porcupine = por cup ine (positions 2, 3, 4); armadillo = armad illo (7, 8)
    prompt = "a porcupine and an armadillo"
    ids = tokenizer(prompt).input_ids
    assert tokenizer.convert_ids_to_tokens(ids)[2:5] == ["por", "cup", "ine</w>"]
    assert [s.positions for s in find_subjects(tokenizer, prompt)] == [(2, 3, 4), (7, 8)]
    assert [s.positions for s in find_subjects(tokenizer, prompt, subword="last")] == [(4,), (8,)]
    assert [s.positions for s in find_subjects(tokenizer, prompt, subword="first")] == [(2,), (7,)]


def test_named_subjects_positions_and_concepts(tokenizer):
    prompt = "a black cat and a white dog"
    named = find_subjects(tokenizer, prompt, words=["cat", "white"], concepts=["Animals", "Color"])
    assert [(s.positions, s.concept) for s in named] == [((3,), "Animals"), ((6,), "Color")]
    by_index = find_subjects(tokenizer, prompt, positions=[3, [7]])
    assert [(s.word, s.positions) for s in by_index] == [("cat", (3,)), ("dog", (7,))]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"words": ["horse"]}, "not a word of the prompt"),
        ({"words": ["a"]}, "occurs 2 times"),
        ({"positions": [3, 12]}, "not a prompt token"),
        ({"concepts": ["Animals"] * 3}, "3 concepts for 2 subjects"),
        ({"positions": [3, 3]}, "share a token"),
        ({"subword": "middle"}, "subword must be"),
    ],
)
def test_bad_subjects_are_clear_errors(tokenizer, kwargs, match):
    with pytest.raises(HRVInputError, match=match):
        find_subjects(tokenizer, "a black cat and a white dog", **kwargs)


def test_prompt_without_and_needs_named_subjects(tokenizer):
    with pytest.raises(HRVInputError, match="name the subjects"):
        find_subjects(tokenizer, "a cat on a mat")
    assert find_subjects(tokenizer, "a cat on a mat", words=["cat", "mat"])[1].positions == (5,)
