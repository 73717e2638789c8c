"""Core commands: build-tiny, heads, accumulate, merge, heatmap, import-official, config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hrv.commands import (
    DEVICE_HELP,
    DTYPE_HELP,
    DefaultsHelp,
    add_overwrite_arg,
    check_new_files,
    finite_float,
    image_side,
    nonnegative_int,
    positive_int,
)
from hrv.config import shipped


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--steps",
        type=positive_int,
        default=10,
        help="sampling steps (PNDM: steps + 1 UNet evaluations); paper: 50",
    )
    p.add_argument("--guidance-scale", type=finite_float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--height", type=image_side, default=128, help="image height in pixels; paper: 512")
    p.add_argument("--width", type=image_side, default=128, help="image width in pixels; paper: 512")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)


def _build_tiny(args) -> int:
    from hrv.models import TinyConfig, save_tiny_model

    print(save_tiny_model(args.out, TinyConfig(seed=args.seed)))
    return 0


def _heads(args) -> int:
    from hrv.heads import HeadRegistry
    from hrv.models import load_pipeline

    pipe = load_pipeline(args.model, device="cpu", dtype="float32")
    registry = HeadRegistry.from_unet(pipe.unet)
    for layer in registry.layers:
        print(f"{layer.section}.{layer.index}\t{layer.heads} heads\t{layer.module_name}")
    print(f"{len(registry.layers)} cross-attention layers, {registry.n_heads} heads")
    return 0


def _accumulate(args) -> int:
    from hrv.steps import run_shard
    from hrv.workflow import shard_plan

    # the workflow's own shard plan, so the command line and Snakemake shard alike
    plan = shard_plan(
        {
            "prompts": [shipped(f) for f in args.prompts],
            **{k: getattr(args, k) for k in ("max_prompts", "shards", "shard_size", "batch_size")},
        }
    )
    check_npz_out(args.out, "counts")
    if not 0 <= args.shard < len(plan):
        from hrv.errors import HRVInputError

        raise HRVInputError(f"--shard {args.shard} is out of range for {len(plan)} shards")
    chosen = plan[args.shard]
    sampling = {
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "height": args.height,
        "width": args.width,
    }
    run_shard(
        args.model,
        shipped(args.concepts),
        chosen,
        args.out,
        seed=args.seed,
        sampling=sampling,
        batch_size=args.batch_size,
        keep_sot=not args.no_sot,
        batch_invariant={"true": True, "false": False}.get(args.batch_invariant, args.batch_invariant),
        device=args.device,
        dtype=args.dtype,
    )
    print(args.out)
    return 0


def _merge(args) -> int:
    from hrv.prompts import read_prompts
    from hrv.steps import merge

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from hrv.errors import HRVInputError

        raise HRVInputError(
            f"--out {out} is a file; merge writes a folder (hrv.npz, hrv.csv, head_ranking.csv)"
        )
    _check_merge_folder(out, args.overwrite)
    prompts = read_prompts([shipped(f) for f in args.prompts], args.max_prompts) if args.prompts else None
    if prompts is None:
        print(
            "hrv merge: note: without --prompts the shards are not checked against the prompt files,"
            " and a missing last shard goes unnoticed",
            file=sys.stderr,
        )
    concepts = shipped(args.concepts) if args.concepts else None
    hrv = merge(args.shards, out / "hrv.npz", out / "hrv.csv", out / "head_ranking.csv", concepts, prompts)
    print(f"{out / 'hrv.npz'}: {len(hrv.concepts)} concepts x {len(hrv.heads)} heads")
    return 0


def _check_merge_folder(out: Path, overwrite: bool) -> None:
    """merge replaces hrv.npz, hrv.csv and head_ranking.csv in ``out``: only an earlier merge's
    (an hrv.npz holding HRVs beside them), or any with --overwrite."""
    from hrv.errors import HRVInputError

    if overwrite:
        return
    if (out / "hrv.npz").exists():
        check_npz_out(str(out / "hrv.npz"), "hrv")
        return
    for name in ("hrv.csv", "head_ranking.csv"):
        if (out / name).exists():
            raise HRVInputError(
                f"--out {out} holds {name} but no HRVs of an earlier merge; give a new folder, or pass"
                " --overwrite to replace it"
            )


def _heatmap(args) -> int:
    from hrv.hrvfile import load_hrv
    from hrv.plots import heatmap

    if Path(args.out).suffix.lower() not in (".png", ".pdf", ".svg"):
        from hrv.errors import HRVInputError

        raise HRVInputError(f"--out {args.out}: give a .png, .pdf or .svg file")
    check_new_files(args, "out")
    print(heatmap(load_hrv(args.hrv), args.out))
    return 0


def _import_official(args) -> int:
    from hrv.steps import import_official

    check_npz_out(args.out, "hrv")
    hrv = import_official(args.which, args.out, shipped(args.reference_dir), shipped(args.concepts))
    print(f"{args.out}: {len(hrv.concepts)} concepts x {len(hrv.heads)} heads")
    return 0


def _config(args) -> int:
    import yaml

    import hrv.config
    from hrv.errors import HRVInputError

    cfg: dict = {}
    for f in args.configfile:
        path = shipped(f)
        if not path.is_file():
            raise HRVInputError(f"config file {f} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise HRVInputError(f"config file {f} is not valid YAML: {str(err).splitlines()[0]}") from err
        if not isinstance(data, dict):
            raise HRVInputError(f"config file {f} must hold a mapping of keys (see config/README.md)")
        cfg = hrv.config.overlay(cfg, data)
    resolved = hrv.config.validate(hrv.config.resolve(cfg))
    print(json.dumps(resolved, indent=2))
    return 0


def check_npz_out(out: str, key: str) -> None:
    """An ``.npz`` output path (numpy would otherwise add the suffix to another name) that is new or
    an earlier output of the same kind (an npz holding ``key``): other files are not overwritten."""
    import numpy as np

    from hrv.errors import HRVInputError

    path = Path(out)
    if path.suffix != ".npz":
        raise HRVInputError(f"--out {out}: give a file name ending in .npz, e.g. {path.name}.npz")
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                ours = key in z.files
        except Exception:
            ours = False
        if not ours:
            raise HRVInputError(
                f"--out {out} exists and is not an earlier output of this command; give a new file name"
            )


def register(sub) -> None:
    p = sub.add_parser(
        "build-tiny",
        help="materialise the embedded tiny model as a diffusers folder",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("out", nargs="?", default="resources/models/tiny", help="folder to write")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the random weights")
    p.set_defaults(func=_build_tiny)

    p = sub.add_parser("heads", help="list the cross-attention layers and heads of a model")
    p.add_argument("model", help="preset name, hub id or diffusers folder")
    p.set_defaults(func=_heads)

    p = sub.add_parser(
        "accumulate", help="accumulate HRV votes of one shard of prompts", formatter_class=DefaultsHelp
    )
    p.add_argument("--model", required=True, help="preset name (tiny, sd14, ...), hub id or diffusers folder")
    p.add_argument(
        "--concepts", default="resources/concepts/concepts_34x10.csv", help="CSV with columns concept,word"
    )
    p.add_argument(
        "--prompts", nargs="+", required=True, help="prompt files, one prompt a line, concatenated in order"
    )
    p.add_argument(
        "--max-prompts", type=positive_int, default=None, help="only the first N prompts (default: all)"
    )
    p.add_argument("--shards", type=positive_int, default=1, help="split the prompts into this many shards")
    p.add_argument(
        "--shard-size",
        type=positive_int,
        default=None,
        help="instead of --shards: shards of this many prompts (a multiple of --batch-size)",
    )
    p.add_argument("--shard", type=nonnegative_int, default=0, help="which shard to run (0-based)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="prompts per UNet batch")
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="run seed: prompt i starts from manual_seed(seed + i)"
    )
    p.add_argument("--no-sot", action="store_true", help="leave the SOT embedding out of the softmax")
    p.add_argument(
        "--batch-invariant",
        choices=["true", "false", "strict"],
        default="true",
        help="votes independent of the batch: bitwise on CPU (true), on GPU too at a cost (strict)",
    )
    p.add_argument("--out", required=True, help="the shard's .npz of vote counts")
    add_sampling_args(p)
    p.set_defaults(func=_accumulate)

    p = sub.add_parser("merge", help="merge shard counts and normalise them into HRVs")
    p.add_argument("shards", nargs="+", help="the shards' .npz files (hrv accumulate --out)")
    p.add_argument("--out", required=True, help="folder for hrv.npz, hrv.csv and head_ranking.csv")
    add_overwrite_arg(p)
    p.add_argument(
        "--concepts",
        default=None,
        help="the concept CSV, to check the shards were counted with it (optional)",
    )
    p.add_argument(
        "--prompts",
        nargs="+",
        default=None,
        help="the prompt files of the shards (as given to accumulate): checks each shard's prompts and"
        " that no shard is missing (recommended)",
    )
    p.add_argument(
        "--max-prompts", type=positive_int, default=None, help="as given to accumulate (with --prompts)"
    )
    p.set_defaults(func=_merge)

    p = sub.add_parser("heatmap", help="plot an hrv.npz as a heat map")
    p.add_argument("hrv", help="an hrv.npz")
    p.add_argument("--out", required=True, help="the PNG to write")
    add_overwrite_arg(p)
    p.set_defaults(func=_heatmap)

    p = sub.add_parser(
        "import-official",
        help="convert the released SD v1.4 or SDXL HRVs into hrv.npz",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("which", choices=["sd14", "sdxl"], help="which released HRVs")
    p.add_argument("--out", required=True, help="the hrv.npz to write")
    p.add_argument(
        "--reference-dir", default="resources/reference", help="folder holding the released .npy files"
    )
    p.add_argument(
        "--concepts", default="resources/concepts/concepts_34x10.csv", help="the concept CSV (row order)"
    )
    p.set_defaults(func=_import_official)

    p = sub.add_parser("config", help="print the resolved, validated config of config files")
    p.add_argument("configfile", nargs="+", help="config files, later ones overlaying earlier ones")
    p.set_defaults(func=_config)
