"""CLIP image-text similarity with ``open_clip``: real models by name, or a tiny random demo model.

The paper scores with OpenCLIP ViT-H/14 (laion2B weights): ``load_clip("ViT-H-14",
"laion2b_s32b_b79k")`` or a local checkpoint path as ``pretrained``. No weights can be downloaded
here, so the demo uses ``"tiny"``: a small open_clip architecture with seeded random weights and
the real CLIP tokenizer. Its scores are reproducible but carry no meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrv.errors import HRVInputError

TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass
class ClipScorer:
    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    device: torch.device
    name: str

    @torch.no_grad()
    def image_features(self, images: Sequence, batch_size: int = 32) -> torch.Tensor:
        """L2-normalised features of PIL images (or HxWx3 uint8 arrays)."""
        from PIL import Image

        feats = []
        for start in range(0, len(images), batch_size):
            chunk = [
                Image.fromarray(im) if isinstance(im, np.ndarray) else im
                for im in images[start : start + batch_size]
            ]
            x = torch.stack([self.preprocess(im.convert("RGB")) for im in chunk]).to(self.device)
            feats.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1))
        return torch.cat(feats) if feats else torch.zeros((0, 1))

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def similarity(self, images: Sequence, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Cosine similarity of image i with text i (paired), as float64."""
        if len(images) != len(texts):
            raise HRVInputError(f"{len(images)} images but {len(texts)} texts; give one text per image")
        if not images:
            return np.zeros(0)
        img = self.image_features(images, batch_size)
        unique = sorted(set(texts))
        txt = self.text_features(unique)
        rows = torch.tensor([unique.index(t) for t in texts], device=txt.device)
        return (img * txt[rows]).sum(-1).double().cpu().numpy()

    def similarity_matrix(self, images: Sequence, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Cosine similarity of every image with every text: (n_images, n_texts)."""
        return (self.image_features(images, batch_size) @ self.text_features(texts).T).double().cpu().numpy()


def load_clip(
    name: str = "tiny", pretrained: str | None = None, device: str = "auto", seed: int = 0
) -> ClipScorer:
    import open_clip

    from hrv.models import resolve_device

    dev = resolve_device(device)
    if name == "tiny":
        if "hrv-tiny-clip" not in open_clip.list_models():
            open_clip.factory._MODEL_CONFIGS["hrv-tiny-clip"] = TINY_CLIP_CONFIG
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms("hrv-tiny-clip", pretrained=None)
        tokenizer = open_clip.get_tokenizer("hrv-tiny-clip")
    else:
        if name not in open_clip.list_models():
            raise HRVInputError(f"unknown open_clip model {name!r}; e.g. ViT-H-14, ViT-B-32, or 'tiny'")
        if (
            pretrained
            and not Path(pretrained).is_file()
            and pretrained not in open_clip.list_pretrained_tags_by_model(name)
        ):
            raise HRVInputError(
                f"unknown weights {pretrained!r} for {name}; give a tag or a local checkpoint file"
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except Exception as err:
            raise HRVInputError(
                f"CLIP weights {name}/{pretrained} could not be loaded ({err}); download them on a machine with"
                " network and give the checkpoint file's path as the pretrained value"
            ) from err
        tokenizer = open_clip.get_tokenizer(name)
    model = model.to(dev).eval()
    return ClipScorer(model, preprocess, tokenizer, dev, name)
