"""BG-DINO: how well an edit preserves the background of its source image (spec section 5).

For a (source, edited) pair and the edited object's noun:

1. Grounding DINO finds the noun ("car.") in each image; every box whose score passes the box
   threshold is kept (the text threshold only picks the label words, as in Grounded-SAM-2).
2. SAM 2 turns each box (a box prompt in the image's pixel coordinates) into one mask; an image's
   mask is the union of its boxes' masks, all False when nothing was detected.
3. The object is the union of the two images' masks; its pixels are set to 0 in both images.
4. DINOv2 embeds both masked images; the score is the cosine of the two CLS embeddings
   (``pooler_output``, the layer-normed CLS token), computed in float64.

When neither image has a detection the pair is scored on the whole images and flagged
(``fallback``). When the object covers every pixel there is no background: the score is NaN.
Choice stated here (the paper's is unknown): DINOv2 sees the whole image resized to its processor's
crop size, not a center crop, so that every background pixel counts (``center_crop=True`` uses the
processor as configured).

The three models are loaded once (``BGDino.load``) and run on batches of pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrv.errors import HRVInputError

PAPER_MODELS = {
    "detector": "IDEA-Research/grounding-dino-tiny",
    "segmenter": "facebook/sam2.1-hiera-large",
    "embedder": "facebook/dinov2-base",
}


@dataclass(frozen=True)
class BGDinoSettings:
    """Which models score and how; each model is a hub id or a local folder (save_pretrained)."""

    detector: str = PAPER_MODELS["detector"]
    segmenter: str = PAPER_MODELS["segmenter"]
    embedder: str = PAPER_MODELS["embedder"]
    box_threshold: float = 0.4
    text_threshold: float = 0.3
    batch_size: int = 8  # pairs per batch
    center_crop: bool = False
    device: str = "auto"


@dataclass(frozen=True)
class PairScore:
    """One pair's result: the score, the union mask that was zeroed, and how it was found."""

    bgdino: float
    fallback: bool  # nothing detected in either image: scored on the whole images
    boxes_source: int
    boxes_edited: int
    mask: np.ndarray  # (H, W) bool, True = object pixel (zeroed)

    @property
    def background(self) -> float:
        """Fraction of the pixels that were scored."""
        return float(1.0 - self.mask.mean())


def text_query(noun: str) -> str:
    """Grounding DINO's query for a noun: lower case, ending with a dot ("car.")."""
    text = str(noun).strip().lower()
    if not text or text == "nan":
        raise HRVInputError(
            "the object noun is empty; give the edited object's noun (e.g. car) for every pair"
        )
    return text if text.endswith(".") else text + "."


def zero_object(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the masked (object) pixels set to 0."""
    return np.where(mask[..., None], np.zeros_like(image), image)


def cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise cosine in float64; exactly 1 for bitwise-equal rows (sqrt(x*x) == x in IEEE)."""
    a, b = a.double(), b.double()
    dot = (a * b).sum(-1)
    return (dot / torch.sqrt((a * a).sum(-1) * (b * b).sum(-1))).cpu().numpy()


def _check_pair(source: np.ndarray, edited: np.ndarray, name: str = "pair") -> None:
    if source.shape != edited.shape:
        raise HRVInputError(
            f"{name}: the source image is {source.shape[1]}x{source.shape[0]} but the edited image is"
            f" {edited.shape[1]}x{edited.shape[0]}; BG-DINO compares images of one size"
        )


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") != 1


def _check_source(source: str, role: str) -> str:
    """A local folder or a hub id, as given; a path that is not a folder is an error."""
    local = Path(source).expanduser()
    if local.is_dir():
        return str(local)
    if _looks_like_path(source) or local.exists():
        raise HRVInputError(
            f"{role} model folder {source} does not exist; build the tiny models with"
            f" `hrv build-tiny-gsam DIR` or set the {role} to a hub id or a save_pretrained folder"
        )
    return source


def _load(source: str, role: str, model_cls: Any, processor_cls: Any, device: torch.device):
    """Load (processor, model) from a checked folder or hub id; a hub failure says what to do."""
    try:
        processor = processor_cls.from_pretrained(source)
        model = model_cls.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise HRVInputError(
            f"{role} model {source!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0]})."
            f" On a machine with network run `huggingface-cli download {source}` and point the {role} at"
            " the downloaded folder, or set HF_HUB_OFFLINE=1 with a filled cache"
        ) from err
    return processor, model.to(device).eval()


class BGDino:
    """The three models, loaded once; ``score_pairs`` scores batches of pairs."""

    def __init__(self, settings: BGDinoSettings, detector, segmenter, embedder, device: torch.device):
        self.settings = settings
        self.detector_processor, self.detector = detector
        self.segmenter_processor, self.segmenter = segmenter
        self.embedder_processor, self.embedder = embedder
        self.device = device

    @classmethod
    def load(cls, settings: BGDinoSettings | None = None) -> BGDino:
        import transformers
        from transformers import (
            AutoImageProcessor,
            AutoModel,
            AutoModelForZeroShotObjectDetection,
            AutoProcessor,
            Sam2Model,
            Sam2Processor,
        )

        from hrv.models import resolve_device

        settings = settings or BGDinoSettings()
        device = resolve_device(settings.device)
        # every path is checked before any model is loaded
        detector, segmenter, embedder = (
            _check_source(getattr(settings, role), role) for role in ("detector", "segmenter", "embedder")
        )
        transformers.utils.logging.disable_progress_bar()
        return cls(
            settings,
            _load(detector, "detector", AutoModelForZeroShotObjectDetection, AutoProcessor, device),
            _load(segmenter, "segmenter", Sam2Model, Sam2Processor, device),
            _load(embedder, "embedder", AutoModel, AutoImageProcessor, device),
            device,
        )

    @torch.no_grad()
    def detect(self, images: Sequence[np.ndarray], nouns: Sequence[str]) -> list[np.ndarray]:
        """Boxes (n, 4) of each image's noun: float xyxy in the image's pixel coordinates."""
        if not images:
            return []
        texts = [text_query(n) for n in nouns]
        inputs = self.detector_processor(images=list(images), text=texts, padding=True, return_tensors="pt")
        outputs = self.detector(**inputs.to(self.device))
        sizes = [im.shape[:2] for im in images]
        found = self.detector_processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.settings.box_threshold,
            text_threshold=self.settings.text_threshold,
            target_sizes=sizes,
        )
        boxes = []
        for result, (h, w) in zip(found, sizes, strict=True):
            b = result["boxes"].float().cpu().numpy().reshape(-1, 4)
            boxes.append(np.clip(b, 0, [w, h, w, h]))
        return boxes

    @torch.no_grad()
    def masks_from_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each image's object mask (H, W) bool: the union of SAM 2's masks of its box prompts.

        Images with no box get an all-False mask and skip SAM 2. The others are encoded in one
        batch; then every box, paired with its image's embedding, is decoded in one batch (one box
        per row, so images with different box counts need no padding).
        """
        masks = [np.zeros(im.shape[:2], dtype=bool) for im in images]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        if not todo:
            return masks
        pixels = self.segmenter_processor(images=[images[i] for i in todo], return_tensors="pt")
        embeddings = self.segmenter.get_image_embeddings(pixels["pixel_values"].to(self.device))
        owner = [i for i in todo for _ in boxes[i]]
        sizes = [list(images[i].shape[:2]) for i in owner]
        prompts = self.segmenter_processor(
            input_boxes=[[list(map(float, box))] for i in todo for box in boxes[i]],
            original_sizes=sizes,
            return_tensors="pt",
        )
        rows = torch.tensor([todo.index(i) for i in owner], device=self.device)
        outputs = self.segmenter(
            image_embeddings=[e[rows] for e in embeddings],
            input_boxes=prompts["input_boxes"].to(self.device),
            multimask_output=False,
        )
        per_box = self.segmenter_processor.post_process_masks(
            outputs.pred_masks.cpu(), torch.tensor(sizes), mask_threshold=0.0, binarize=True
        )
        for i, m in zip(owner, per_box, strict=True):
            masks[i] |= m.bool().any(dim=(0, 1)).numpy()
        return masks

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """DINOv2 CLS embeddings (``pooler_output``), one row per image."""
        kwargs: dict[str, Any] = {}
        if not self.settings.center_crop:  # the whole image, resized to the crop size
            crop = self.embedder_processor.crop_size
            kwargs = {"do_center_crop": False, "size": {"height": crop["height"], "width": crop["width"]}}
        inputs = self.embedder_processor(images=list(images), return_tensors="pt", **kwargs)
        return self.embedder(pixel_values=inputs["pixel_values"].to(self.device)).pooler_output

    def score_masked(
        self,
        sources: Sequence[np.ndarray],
        editeds: Sequence[np.ndarray],
        masks_source: Sequence[np.ndarray],
        masks_edited: Sequence[np.ndarray],
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Scores of pairs whose object masks are given (bypassing the detector), and the union masks.

        The union of a pair's two masks is zeroed in both images; the score is the cosine of their
        DINOv2 CLS embeddings, NaN when the union covers every pixel.
        """
        union = []
        for k, (s, e, ms, me) in enumerate(zip(sources, editeds, masks_source, masks_edited, strict=True)):
            _check_pair(s, e, f"pair {k}")
            if ms.shape != s.shape[:2] or me.shape != s.shape[:2]:
                raise HRVInputError(f"pair {k}: the masks must have the images' size {s.shape[:2]}")
            union.append(ms | me)
        masked = [zero_object(s, m) for s, m in zip(sources, union, strict=True)]
        masked += [zero_object(e, m) for e, m in zip(editeds, union, strict=True)]
        emb = self.embed(masked)
        n = len(union)
        scores = cosine(emb[:n], emb[n:])
        scores[[bool(m.all()) for m in union]] = np.nan
        return scores, union

    def score_pairs(
        self, sources: Sequence[np.ndarray], editeds: Sequence[np.ndarray], nouns: Sequence[str]
    ) -> list[PairScore]:
        """Score pairs of HxWx3 uint8 images in batches of ``settings.batch_size`` pairs."""
        if not len(sources) == len(editeds) == len(nouns):
            raise HRVInputError(f"{len(sources)} sources, {len(editeds)} edited images, {len(nouns)} nouns")
        for k, (s, e, noun) in enumerate(zip(sources, editeds, nouns, strict=True)):
            _check_pair(s, e, f"pair {k}")
            text_query(noun)
        out: list[PairScore] = []
        step = max(1, int(self.settings.batch_size))
        for start in range(0, len(sources), step):
            src = list(sources[start : start + step])
            edt = list(editeds[start : start + step])
            nns = list(nouns[start : start + step])
            boxes = self.detect(src + edt, nns + nns)
            masks = self.masks_from_boxes(src + edt, boxes)
            n = len(src)
            scores, union = self.score_masked(src, edt, masks[:n], masks[n:])
            for k in range(n):
                out.append(
                    PairScore(
                        bgdino=float(scores[k]),
                        fallback=not (len(boxes[k]) or len(boxes[n + k])),
                        boxes_source=len(boxes[k]),
                        boxes_edited=len(boxes[n + k]),
                        mask=union[k],
                    )
                )
        return out
