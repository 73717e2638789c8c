"""Loading diffusion pipelines: the embedded tiny model, hub ids and local folders, one code path.

The tiny model is Stable-Diffusion-v1-shaped (16 cross-attention layers x 8 heads = 128 heads,
PNDM scheduler configured like SD v1.4's, the real CLIP tokenizer) with seeded random weights.
It is materialised with ``save_pretrained`` as an ordinary diffusers folder and from then on
loaded exactly like a real model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hrv.errors import HRVInputError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the tiny SD-v1-shaped model; the head topology is SD v1.4's whatever the widths."""

    seed: int = 0
    unet_channels: tuple[int, int, int, int] = (32, 64, 64, 64)
    heads: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    vae_channels: tuple[int, ...] = (16, 32, 32, 32)
    sample_size: int = 128  # image side in pixels; latent side = sample_size // 8


def clip_text_encoder(hidden: int, layers: int, heads: int = 4, intermediate: int | None = None):
    """A CLIP text encoder of the given size (random weights from the global RNG), with the CLIP
    vocabulary and SD's special-token ids: small for the tiny and toy models, full-size (768, 12
    layers, 12 heads, 3072) for timing SD v1.4's architecture. ``intermediate`` defaults to 2x."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=hidden,
            intermediate_size=intermediate or hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            projection_dim=hidden,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def sd1_components(
    *,
    seed: int,
    unet_channels: tuple[int, ...],
    heads: int,
    text_hidden: int,
    text_layers: int,
    vae_channels: tuple[int, ...],
    image_size: int,
    tokenizer_dir: str | Path,
):
    """Seeded, untrained SD-v1-shaped components (16 CA layers x ``heads`` heads): tokenizer, text
    encoder, UNet, VAE and SD v1.4's PNDM scheduler. Shared by the tiny and the toy model."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    from hrv.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    text_encoder = clip_text_encoder(text_hidden, text_layers)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2 ** (len(vae_channels) - 1),
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=unet_channels,
        layers_per_block=2,
        attention_head_dim=heads,  # SD v1 configs store the head *count* under this name
        cross_attention_dim=text_hidden,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=vae_channels,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
    )
    # SD v1.4's scheduler configuration
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return tokenizer, text_encoder, unet, vae, scheduler


def build_tiny_pipeline(cfg: TinyConfig | None = None, tokenizer_dir: str | Path | None = None):
    """Build the tiny ``StableDiffusionPipeline`` with seeded random weights (deterministic)."""
    from diffusers import StableDiffusionPipeline

    cfg = cfg or TinyConfig()
    tok_dir = (
        Path(tokenizer_dir)
        if tokenizer_dir
        else Path(os.environ.get("TMPDIR", "/tmp")) / "hrv-clip-tokenizer"
    )
    tokenizer, text_encoder, unet, vae, scheduler = sd1_components(
        seed=cfg.seed,
        unet_channels=cfg.unet_channels,
        heads=cfg.heads,
        text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers,
        vae_channels=cfg.vae_channels,
        image_size=cfg.sample_size,
        tokenizer_dir=tok_dir,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_model(folder: str | Path, cfg: TinyConfig | None = None) -> Path:
    """Materialise the tiny model as a diffusers folder (written beside, then renamed: atomic)."""
    from hrv.io import atomic_dir

    with atomic_dir(folder, owner="hrv build-tiny") as tmp:
        pipe = build_tiny_pipeline(cfg, tokenizer_dir=tmp / "_tok")
        shutil.rmtree(tmp / "_tok")
        pipe.save_pretrained(tmp, safe_serialization=True)
    return Path(folder)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or CUDA on a
    machine without it, is refused with a message."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise HRVInputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from err
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise HRVInputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HRVInputError(f"device {device!r}: CUDA is not available here; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HRVInputError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def unet_device(pipe) -> torch.device:
    """The device of the pipeline's UNet: what ``pipe.device`` says, without diffusers' walk over every
    module for offloading hooks (6-12 ms a call on the tiny model, several calls per accumulation)."""
    return next(pipe.unet.parameters()).device


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise HRVInputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} or 'auto'")
    return DTYPES[dtype]


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.sep in source.rstrip(os.sep) and source.count("/") != 1


def _from_pretrained(source: str, torch_dtype: torch.dtype, **kwargs: Any):
    import warnings

    from diffusers import DiffusionPipeline

    with warnings.catch_warnings():
        # newer diffusers renamed torch_dtype to dtype; torch_dtype works across the supported range
        warnings.simplefilter("ignore", FutureWarning)
        return DiffusionPipeline.from_pretrained(source, torch_dtype=torch_dtype, **kwargs)


def model_preset(source: str) -> dict[str, Any] | None:
    """The preset ``source`` names (``tiny``, ``sd14``, ...), or the preset whose hub id it is."""
    from hrv.config import presets, resolve_model

    names = presets("model")
    if source in names:
        return resolve_model(source)
    if "/" in source and not Path(source).expanduser().exists():
        for name in names:
            spec = resolve_model(name)
            if spec["source"] == source:
                return spec
    return None


def set_scheduler(pipe, name: str | None) -> None:
    """Replace the pipeline's scheduler by the class ``name`` (its own config otherwise kept); PNDM
    skips the Runge-Kutta warm-up, as SD v1.4's scheduler does (51 UNet evaluations for 50 steps)."""
    if name is None or type(pipe.scheduler).__name__ == name:
        return
    import diffusers

    extra = {"skip_prk_steps": True} if name == "PNDMScheduler" else {}
    pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config, **extra)


def load_pipeline(source: str | Path, device: str = "auto", dtype: str = "auto", **kwargs: Any):
    """Load a diffusers text-to-image pipeline: a preset name, a local folder or a hub id.

    Presets work from any current folder: ``tiny`` loads ``resources/models/tiny`` if it was built
    (from here or from the checkout) and is built in memory otherwise; ``toy`` loads the shipped
    folder. A preset's ``scheduler`` replaces the pipeline's own (the ``sdxl`` preset: PNDM). A
    missing model gets an error that says how to provide it; nothing is downloaded when
    ``HF_HUB_OFFLINE=1`` (the tests' setting).
    """
    from hrv.config import hub_model_cached, not_cached_message, shipped

    source = str(source)
    spec = model_preset(source)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if spec is not None:
        source = str(shipped(spec["source"]))
        if spec.get("build") == "tiny" and not Path(source).is_dir():
            pipe = build_tiny_pipeline(TinyConfig(seed=int(spec.get("tiny_seed") or 0)))
            pipe = pipe.to(dev) if torch_dtype == torch.float32 else pipe.to(dev, torch_dtype)
            pipe.set_progress_bar_config(disable=True)
            return pipe
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise HRVInputError(
                f"model folder {local} has no model_index.json; give a diffusers pipeline folder"
                " (as written by save_pretrained)"
            )
        index = json.loads((local / "model_index.json").read_text())
        if "safety_checker" in index:
            kwargs.setdefault("safety_checker", None)
            kwargs.setdefault("requires_safety_checker", False)
        pipe = _from_pretrained(str(local), torch_dtype, **kwargs)
    elif _looks_like_path(source) or local.exists():
        raise HRVInputError(
            f"model folder {source} does not exist; build the tiny model with `hrv build-tiny {source}`"
            " or point `model` at a diffusers pipeline folder"
        )
    else:
        from huggingface_hub import constants

        from hrv.config import resolve_model

        resolve_model(source)  # a bare name that is no preset: the list of presets
        if constants.HF_HUB_OFFLINE and not hub_model_cached(source):
            raise HRVInputError(not_cached_message(source))  # before diffusers' own offline warnings
        if source.startswith(("CompVis/", "runwayml/", "stable-diffusion-v1-5/")):
            kwargs.setdefault("safety_checker", None)
            kwargs.setdefault("requires_safety_checker", False)
        try:
            pipe = _from_pretrained(source, torch_dtype, **kwargs)
        except (OSError, ValueError) as err:
            if not hub_model_cached(source):
                raise HRVInputError(not_cached_message(source)) from err
            raise HRVInputError(
                f"model {source!r} is in the Hugging Face cache but could not be loaded"
                f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from err
    set_scheduler(pipe, spec.get("scheduler") if spec else None)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int, int]:
    """(1, C, height // f, width // f): the shape of one prompt's initial latent."""
    f = pipe.vae_scale_factor
    if height % f or width % f:
        raise HRVInputError(
            f"height and width must be multiples of the VAE scale factor {f}; got {height}x{width}"
        )
    return (1, pipe.unet.config.in_channels, height // f, width // f)


def initial_latents(pipe, indices: list[int] | range, seed: int, height: int, width: int) -> torch.Tensor:
    """Prompt i starts from randn(shape, generator=Generator('cpu').manual_seed(seed + i))."""
    shape = latent_shape(pipe, height, width)
    latents = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed + i)) for i in indices]
    return torch.cat(latents).to(device=unet_device(pipe), dtype=pipe.unet.dtype)
