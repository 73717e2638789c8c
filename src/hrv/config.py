"""Configuration: Hydra compose API for presets, resolved into the plain dict Snakemake validates.

``model`` is a preset name (a file ``config/model/<name>.yaml``), a hub id or a local folder.
Presets are composed with Hydra's compose API (never ``@hydra.main``) and stored under
``model_spec``; everything else is the user's config as Snakemake merged it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from hrv.errors import HRVInputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "config"
SCHEMA = PROJECT_ROOT / "workflow/schemas/config.schema.yaml"
# the keys of a model preset (config/model/<name>.yaml), documented in config/README.md
PRESET_KEYS = ("name", "source", "build", "family", "dtype", "scheduler", "tiny_seed", "weakening_k")
# the schedulers a preset may name (diffusers class names); null = the pipeline's own
SCHEDULERS = ("PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler")


def shipped(path: str | Path) -> Path:
    """A path as given if it exists from the current folder, else the shipped file of that name in
    the checkout (``resources/...``), so that the defaults work from any current folder."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    candidate = PROJECT_ROOT / path
    return candidate if candidate.exists() else path


def compose_preset(group: str, name: str, config_dir: str | Path = CONFIG_DIR) -> dict[str, Any]:
    """Compose ``<config_dir>/<group>/<name>.yaml`` with Hydra and return it as a plain dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    config_dir = Path(config_dir).resolve()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=None, overrides=[f"+{group}={name}"])
    return OmegaConf.to_container(cfg[group], resolve=True)  # type: ignore[return-value]


def presets(group: str, config_dir: str | Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))


def resolve_model(model: str, config_dir: str | Path = CONFIG_DIR) -> dict[str, Any]:
    """The model spec: a preset's content, or a spec for a hub id or a local folder."""
    if not isinstance(model, str) or not model.strip():
        raise HRVInputError(f"config key 'model' must be a preset name, hub id or folder, got {model!r}")
    if model in presets("model", config_dir):
        spec = compose_preset("model", model, config_dir)
        unknown = sorted(set(spec) - set(PRESET_KEYS))
        if unknown:
            raise HRVInputError(
                f"model preset {model!r} ({Path(config_dir) / 'model' / model}.yaml) has unknown key(s)"
                f" {', '.join(unknown)}; preset keys: {', '.join(PRESET_KEYS)}"
            )
        spec.setdefault("scheduler", None)
        if spec["scheduler"] not in (None, *SCHEDULERS):
            raise HRVInputError(
                f"model preset {model!r}: scheduler {spec['scheduler']!r} is not one of"
                f" {', '.join(SCHEDULERS)} (or null for the pipeline's own)"
            )
        return spec
    looks_like_path = model.startswith((".", "/", "~")) or Path(model).exists()
    if not looks_like_path and "/" not in model:
        raise HRVInputError(
            f"unknown model preset {model!r}; presets: {', '.join(presets('model', config_dir))};"
            " or give a hub id (org/name) or a diffusers folder"
        )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.strip("/")).strip("_")
    return {
        "name": name,
        "source": model,
        "build": None,
        "family": "auto",
        "dtype": "auto",
        "scheduler": None,
        "tiny_seed": 0,
        "weakening_k": None,
    }


def overlay(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra`` key by key, nested mappings merged (as Snakemake merges
    several ``--configfile``s): an overlay that sets ``hrv.batch_size`` keeps ``hrv.prompts``."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(config: dict[str, Any], config_dir: str | Path = CONFIG_DIR) -> dict[str, Any]:
    """Return a copy of ``config`` with ``model_spec`` filled in from the model preset."""
    out = copy.deepcopy(dict(config))
    out["model_spec"] = resolve_model(out.get("model", "tiny"), config_dir)
    return out


def validate(config: dict[str, Any], schema: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate (and fill defaults) like Snakemake, with an error naming each offending key; then
    give every stage its full sampling settings (``resolve_stage_sampling``)."""
    import jsonschema
    import yaml
    from snakemake.utils import validate as sm_validate

    schema_doc = yaml.safe_load(Path(schema).read_text())
    validator = jsonschema.validators.validator_for(schema_doc)(schema_doc)
    problems = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if problems:
        lines = [
            f"config key {'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
            for e in problems
        ]
        raise HRVInputError("invalid config (see config/README.md):\n  " + "\n  ".join(lines))
    sm_validate(config, str(schema), set_default=True)
    return resolve_stage_sampling(config)


def resolve_stage_sampling(config: dict[str, Any]) -> dict[str, Any]:
    """Replace each stage's ``sampling`` overrides (``weakening.sampling``, ``polysemy.sampling``,
    any stage's) by the full settings it samples with: the top-level ``sampling`` updated by them.

    A stage is any mapping of the config, at any depth, with a ``sampling`` key; null or ``{}``
    means no override. Rules read only ``<stage>.sampling``, so a stage cannot miss a key.
    """
    base = dict(config.get("sampling") or {})

    def visit(node: dict[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and key != "model_spec":
                if "sampling" in value:
                    value["sampling"] = {**base, **(value["sampling"] or {})}
                visit(value)

    visit(config)
    return config


def check_model_available(spec: dict[str, Any]) -> None:
    """Refuse, at planning time, a model that a job could not load: a local folder that does not
    exist, or a hub id that is not in the Hugging Face cache (jobs never download)."""
    source = str(spec["source"])
    if spec.get("build"):
        return
    local = Path(source).expanduser()
    if source.startswith((".", "/", "~")) or local.exists() or source.count("/") != 1:
        if not local.is_dir():
            raise HRVInputError(
                f"model folder {source} does not exist; set `model` to a diffusers pipeline folder,"
                " a preset or a hub id"
            )
        return
    if not hub_model_cached(source):
        raise HRVInputError(not_cached_message(source))


def check_clip_available(clip_cfg: dict, cache_dir: str | Path | None = None) -> None:
    """Refuse, at planning time, CLIP weights a scoring job could not load without a download: a
    weights tag whose file is not in the Hugging Face cache, or an unknown model, tag or file."""
    name, pretrained = clip_cfg.get("model", "tiny"), clip_cfg.get("pretrained")
    if name == "tiny" or not pretrained or Path(pretrained).expanduser().is_file():
        return
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    if name not in open_clip.list_models():
        raise HRVInputError(f"clip.model {name!r} is not an open_clip model; e.g. ViT-H-14, or tiny")
    if pretrained not in open_clip.list_pretrained_tags_by_model(name):
        raise HRVInputError(
            f"clip.pretrained {pretrained!r} is neither a checkpoint file nor a weights tag of {name}"
        )
    hub = open_clip.get_pretrained_cfg(name, pretrained).get("hf_hub", "")
    if not hub:
        return  # downloaded from a URL, not the hub: checked when the scorer loads it
    repo_id, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub.rstrip("/"), "")
    filename = filename or "open_clip_pytorch_model.bin"  # open_clip's default, or its safetensors twin
    names = [filename, filename.replace("pytorch_model", "model").rsplit(".", 1)[0] + ".safetensors"]
    if not any(isinstance(try_to_load_from_cache(repo_id, n, cache_dir=cache_dir), str) for n in names):
        raise HRVInputError(
            f"CLIP weights {name}/{pretrained} are not in the Hugging Face cache; download them once"
            f" (`hf download {repo_id} {filename}`) or set clip.pretrained to a local checkpoint file"
        )


def hub_model_cached(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of ``repo_id`` with its model_index.json."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # a malformed id: not cached
        return False
    return isinstance(found, str)


def download_command(repo_id: str) -> str:
    """The download command of the installed huggingface_hub: ``hf`` from 0.34, before that
    ``huggingface-cli``."""
    import huggingface_hub

    major, minor = (int(x) for x in re.findall(r"\d+", huggingface_hub.__version__)[:2])
    return f"{'hf' if (major, minor) >= (0, 34) else 'huggingface-cli'} download {repo_id}"


def not_cached_message(repo_id: str) -> str:
    return (
        f"model {repo_id!r} is not in the Hugging Face cache; download it once on a machine with"
        f" network (`{download_command(repo_id)}`) or set `model` to a local diffusers folder"
    )
