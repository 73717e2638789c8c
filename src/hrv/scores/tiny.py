"""Tiny random Grounding DINO, SAM 2 and DINOv2 models for the demo and the tests.

Each is built from a small ``transformers`` config with seeded weights and written with
``save_pretrained`` (model and processor) as an ordinary local folder, so the demo runs the same
loading code as the real hub models. Their scores are reproducible but carry no meaning.

Sizes follow ``docs/notes/editing.md`` section 4.2; the constraints that shape them:
Grounding DINO's ``d_model`` is a multiple of 32 (GroupNorm(32, d_model)), it needs at least two
decoder layers (tied box heads) and inputs of at least 128 px (no 1x1 feature level); SAM 2's
``backbone_feature_sizes`` are its image size / 4, / 8, / 16.
"""

from __future__ import annotations

from pathlib import Path

# what `hrv build-tiny-gsam DIR` writes: one folder per model; the workflow's is TINY_DIR
TINY_FOLDERS = {"detector": "grounding-dino", "segmenter": "sam2", "embedder": "dinov2"}
TINY_DIR = "resources/models/tiny-gsam"
TINY_MARK = "hrv_tiny.json"  # written into each tiny folder: rebuilding replaces only these


def model_source(value: str, role: str, tiny_dir: str = TINY_DIR) -> str:
    """A config value of ``bgdino.detector`` / ``segmenter`` / ``embedder``: ``tiny`` names the
    tiny folder of that role under ``tiny_dir``; anything else (hub id, folder) is kept."""
    return f"{tiny_dir}/{TINY_FOLDERS[role]}" if value == "tiny" else value


# the tiny detector's BERT vocabulary: special tokens, ".", the benchmark nouns, and single
# letters (with word-piece continuations) so that any lower-case noun tokenises without [UNK]
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_NOUNS = [
    "car",
    "bench",
    "bowl",
    "ballon",
    "balloon",
    "ball",
    "cup",
    "table",
    "teapot",
    "t",
    "-",
    "shirt",
    "pillow",
    "wallpaper",
    "umbrella",
    "blanket",
    "castle",
    "mountain",
    "cityscape",
    "farmland",
    "forest",
    "frog",
    "cat",
    "rabbit",
    "bird",
    "dog",
]
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def _vocabulary() -> list[str]:
    words = _SPECIAL + ["."] + _NOUNS + _LETTERS + [f"##{c}" for c in _LETTERS]
    return list(dict.fromkeys(words))  # unique, order kept


def build_tiny_detector(folder: Path, seed: int) -> None:
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(_vocabulary()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True)
    backbone = SwinConfig(
        image_size=128,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(tokenizer.vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=10,
        num_feature_levels=4,
        max_text_len=32,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    images = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 128})
    model.save_pretrained(folder, safe_serialization=True)
    GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)


def build_tiny_segmenter(folder: Path, seed: int) -> None:
    import torch
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2Processor,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    size = 64
    hiera = Sam2HieraDetConfig(
        hidden_size=8,
        image_size=[size, size],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[3],  # not the first block of a query-pool stage
        window_positional_embedding_background_size=[2, 2],
    )
    vision = Sam2VisionConfig(
        backbone_config=hiera,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
        fpn_hidden_size=32,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=size, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    torch.manual_seed(seed)
    model = Sam2Model(config).eval()
    images = Sam2ImageProcessor(size={"height": size, "width": size}, mask_size={"height": 16, "width": 16})
    model.save_pretrained(folder, safe_serialization=True)
    Sam2Processor(image_processor=images).save_pretrained(folder)


def build_tiny_embedder(folder: Path, seed: int) -> None:
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    size = 56
    config = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=14,
        image_size=size,
    )
    torch.manual_seed(seed)
    model = Dinov2Model(config).eval()
    images = BitImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    model.save_pretrained(folder, safe_serialization=True)
    images.save_pretrained(folder)


def save_tiny_gsam(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the three tiny models under ``folder`` (each written beside, then renamed: atomic).

    Returns the folders by role (detector, segmenter, embedder); seeds ``seed``, ``seed + 1``,
    ``seed + 2``.
    """
    import json

    import transformers

    from hrv.io import atomic_dir, check_replaceable

    targets = {role: Path(folder) / name for role, name in TINY_FOLDERS.items()}
    for target in targets.values():  # never replace a folder this function did not write
        check_replaceable(target, "hrv build-tiny-gsam")
    transformers.utils.logging.disable_progress_bar()
    builders = {
        "detector": build_tiny_detector,
        "segmenter": build_tiny_segmenter,
        "embedder": build_tiny_embedder,
    }
    for k, (role, build) in enumerate(builders.items()):
        with atomic_dir(targets[role], owner="hrv build-tiny-gsam") as tmp:
            build(tmp, seed + k)
            (tmp / TINY_MARK).write_text(json.dumps({"role": role, "seed": seed + k}) + "\n")
    return targets
