"""Attend-and-Excite's metrics, computed as A&E's own scripts compute them (``metrics/`` of A&E).

- **Full prompt**: cosine of the CLIP image embedding with the prompt's text embedding, which is the
  mean over the 80 ImageNet templates ("a bad photo of a {}." ...) of each template's normalised
  embedding, normalised again. Templates are filled with the prompt and then cleaned with A&E's two
  plain string replacements ``"a a" -> "a"`` and ``"the a" -> "a"``.
- **Minimum object**: the prompt split at " and " (else " with "), each half embedded the same way,
  the lower of the image's two cosines.
- **BLIP**: a BLIP caption of the image (beam 3, 10 to 30 tokens, the prompt "a picture of " given
  to the decoder and stripped from the caption: LAVIS' ``BlipCaption.generate`` defaults), embedded
  by CLIP's text encoder (one text, no templates), cosine with the prompt's template embedding.

Each metric is a mean over all images of a set. The paper config uses OpenAI's ViT-B/16
(open_clip ``ViT-B-16-quickgelu``, ``pretrained=openai``; plain ``ViT-B-16`` would build GELU) and
``Salesforce/blip-image-captioning-base``. A&E used LAVIS' ``base_coco`` BLIP (fine-tuned on COCO)
and fp16 CLIP on CUDA, so absolute numbers differ slightly from A&E's; comparisons between methods
scored here are consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrv.clip import ClipScorer
from hrv.errors import HRVInputError

BLIP_PROMPT = "a picture of "  # LAVIS' captioning prompt, stripped from every caption
BLIP_DECODING: dict[str, Any] = {
    "num_beams": 3,
    "max_length": 30,
    "min_length": 10,
    "repetition_penalty": 1.0,
}


def imagenet_templates() -> list[str]:
    """The 80 ImageNet prompt templates of CLIP (the list A&E's ``imagenet_utils.py`` holds)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


def template_texts(prompt: str) -> list[str]:
    """The 80 templates filled with ``prompt``, with A&E's two string replacements."""
    return [t.format(prompt).replace("a a", "a").replace("the a", "a") for t in imagenet_templates()]


def split_prompt(prompt: str) -> tuple[str, str]:
    """The two objects of a prompt: split at " and ", else at " with " (A&E's rule)."""
    for sep in (" and ", " with "):
        if sep in prompt:
            parts = prompt.split(sep)
            return parts[0], parts[1]
    raise HRVInputError(
        f"prompt {prompt!r} has neither ' and ' nor ' with ': the minimum-object similarity needs two objects"
    )


@torch.no_grad()
def prompt_embedding(clip: ClipScorer, prompt: str) -> torch.Tensor:
    """The prompt's text embedding averaged over the 80 templates: (D,), unit length."""
    per_template = clip.text_features(template_texts(prompt))  # each row normalised
    mean = per_template.mean(dim=0)
    return mean / mean.norm()


@dataclass
class BlipCaptioner:
    """A BLIP captioning model (transformers) with A&E's decoding settings."""

    model: torch.nn.Module
    processor: Any
    device: torch.device

    @torch.no_grad()
    def captions(self, images: Sequence, batch_size: int = 8) -> list[str]:
        out: list[str] = []
        for start in range(0, len(images), batch_size):
            chunk = [im.convert("RGB") for im in images[start : start + batch_size]]
            inputs = self.processor(images=chunk, text=[BLIP_PROMPT] * len(chunk), return_tensors="pt").to(
                self.device
            )
            ids = self.model.generate(**inputs, **BLIP_DECODING)
            for text in self.processor.batch_decode(ids, skip_special_tokens=True):
                text = text.strip()
                # LAVIS cuts len(prompt) characters off the decoded caption
                out.append(
                    text[len(BLIP_PROMPT.strip()) :].strip() if text.startswith(BLIP_PROMPT.strip()) else text
                )
        return out


def load_blip(source: str | Path, device: str = "auto") -> BlipCaptioner:
    """A BLIP captioning model from a hub id (e.g. ``Salesforce/blip-image-captioning-base``) or a folder."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from hrv.models import resolve_device

    dev = resolve_device(device)
    try:
        processor = BlipProcessor.from_pretrained(str(source))
        model = BlipForConditionalGeneration.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise HRVInputError(
            f"BLIP model {source!r} could not be loaded ({type(err).__name__}); on a machine with network run"
            f" `huggingface-cli download {source}` and point multiconcept.blip at the folder, or build the"
            " tiny demo model with hrv.multiconcept.metrics.save_tiny_blip"
        ) from err
    return BlipCaptioner(model.to(dev).eval(), processor, dev)


TINY_BLIP_WORDS = [
    "a",
    "picture",
    "of",
    "the",
    "and",
    "with",
    "on",
    "in",
    "cat",
    "dog",
    "bird",
    "fish",
    "frog",
    "horse",
    "squirrel",
    "penguin",
    "fox",
    "bear",
    "lion",
    "deer",
    "red",
    "blue",
    "green",
    "white",
    "black",
    "brown",
    "pink",
    "gray",
    "yellow",
    "purple",
    "two",
    "animals",
    "grass",
    "sitting",
    "standing",
]


def save_tiny_blip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny BLIP captioner with seeded random weights, saved as an ordinary transformers folder."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from hrv.io import atomic_dir

    vocab = ["[PAD]", "[UNK]", "[SEP]", "[CLS]", "[MASK]", *dict.fromkeys(TINY_BLIP_WORDS), "[DEC]"]
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "max_position_embeddings": 64,
            "bos_token_id": len(vocab) - 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "sep_token_id": 2,
        },
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with atomic_dir(folder) as tmp:
        (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = BertTokenizer(str(tmp / "vocab.txt"), bos_token="[DEC]")
        processor = BlipProcessor(
            image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
        )
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config).eval()
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return Path(folder)


@dataclass(frozen=True)
class PromptScores:
    """Per-image metrics of one prompt's images."""

    full: np.ndarray  # cosine with the full prompt
    first: np.ndarray  # cosine with the first object ("a black cat")
    second: np.ndarray  # cosine with the second object
    blip: np.ndarray | None  # cosine of the caption with the full prompt (None: not computed)
    captions: list[str] | None

    @property
    def min_object(self) -> np.ndarray:
        return np.minimum(self.first, self.second)


@torch.no_grad()
def score_prompt(
    clip: ClipScorer, prompt: str, images: Sequence, blip: BlipCaptioner | None = None, batch_size: int = 32
) -> PromptScores:
    """A&E's metrics for the images of one prompt."""
    first, second = split_prompt(prompt)
    texts = torch.stack([prompt_embedding(clip, t) for t in (prompt, first, second)])  # (3, D)
    image = clip.image_features(images, batch_size)  # (N, D), normalised
    sims = (image @ texts.T).double().cpu().numpy()
    blip_scores, captions = None, None
    if blip is not None:
        captions = blip.captions(images)
        caption_emb = clip.text_features(captions)  # one text each, normalised, no templates
        blip_scores = (caption_emb @ texts[0]).double().cpu().numpy()
    return PromptScores(sims[:, 0], sims[:, 1], sims[:, 2], blip_scores, captions)
