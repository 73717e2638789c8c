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

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


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
        return compose_preset("model", model, config_dir)
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


def validate(config: dict[str, Any], schema: str | Path) -> dict[str, Any]:
    """Validate (and fill defaults) like Snakemake, with an error naming each offending key."""
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
    return config
