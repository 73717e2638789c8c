"""Ordered-weakening commands: ``hrv weaken`` (sample a sweep) and ``hrv score-weakening`` (CLIP)."""

from __future__ import annotations

from pathlib import Path

from hrv.commands import (
    DEVICE_HELP,
    DefaultsHelp,
    add_seeds_arg,
    finite_float,
    nonnegative_int,
    positive_int,
    seed_list,
)
from hrv.commands.core import add_sampling_args
from hrv.config import shipped
from hrv.experiments import ORDERS, WeakeningJob, load_experiments, plan_jobs, resolve_k, truncated


def _weaken(args) -> int:
    from hrv.concepts import read_concepts
    from hrv.weakening import run_job

    exps = load_experiments(
        shipped(args.experiments_file),
        select=args.experiment,
        concepts=read_concepts(shipped(args.concepts)).names,
        missing_hint="give --concepts the HRV file's concept CSV, or choose other experiments",
    )
    exps = [truncated(e, args.max_items) for e in exps]
    ks = resolve_k({"k": args.k}, {}, args.hrv)
    sampling = {
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "height": args.height,
        "width": args.width,
    }
    jobs: list[WeakeningJob] = plan_jobs(exps, args.orders, seed_list(args.seeds), ks, args.k_batch)
    by_name = {e.name: e for e in exps}
    for job in jobs:
        out = Path(job.path(str(args.out)))
        run_job(
            args.model,
            args.hrv,
            by_name[job.experiment].to_dict(),
            job.order,
            job.seed,
            job.ks,
            out,
            sampling=sampling,
            factor=args.factor,
            random_seed=args.random_seed,
            device=args.device,
            dtype=args.dtype,
            owner="hrv weaken",  # a job folder under --out is replaced only if `hrv weaken` wrote it
        )
        print(out)
    return 0


def _score(args) -> int:
    import pandas as pd

    from hrv.scoring import write_scores
    from hrv.weakening_plots import curves

    if args.curves and Path(args.curves).suffix.lower() not in (".png", ".pdf", ".svg"):
        from hrv.errors import HRVInputError

        raise HRVInputError(f"--curves {args.curves}: give a .png, .pdf or .svg file")
    clip = {"model": args.clip_model, "pretrained": args.pretrained, "batch_size": args.batch_size}
    write_scores(args.jobs, args.scores, args.table, clip=clip, device=args.device)
    print(args.table)
    if args.curves:
        table = pd.read_csv(args.table)
        print(curves(table, args.curves, ", ".join(sorted(set(table["experiment"])))))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "weaken",
        help="ordered weakening: sample MoRHF/LeRHF/random sweeps over k",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("--model", required=True, help="preset name, hub id or diffusers folder")
    p.add_argument("--hrv", required=True, help="hrv.npz of this model (accumulated or imported)")
    p.add_argument("--experiment", nargs="+", required=True, help="experiment names, e.g. color image_style")
    p.add_argument(
        "--experiments-file",
        default="resources/benchmarks/weakening_experiments.yaml",
        help="the experiments (named item lists and prompt templates)",
    )
    p.add_argument(
        "--concepts", default="resources/concepts/concepts_34x10.csv", help="the concept CSV of the HRV file"
    )
    p.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS, help="head orders to sweep")
    p.add_argument(
        "--k", nargs="+", type=nonnegative_int, default=None, help="head counts (default 0, 1, 11, ..., H)"
    )
    p.add_argument(
        "--k-batch", type=positive_int, default=None, help="k values per sampling batch (default all)"
    )
    add_seeds_arg(p, "10,20,30")
    p.add_argument(
        "--factor",
        type=finite_float,
        default=-2.0,
        help="factor on the weakened heads' prompt-word probabilities",
    )
    p.add_argument("--random-seed", type=nonnegative_int, default=0, help="seed of the random head order")
    p.add_argument("--max-items", type=positive_int, default=None, help="first items of each slot only")
    p.add_argument(
        "--out", required=True, help="folder: <out>/weakening/<experiment>/<order>/seed<s>/ks.../k<k>/"
    )
    add_sampling_args(p)
    p.set_defaults(func=_weaken)

    p = sub.add_parser(
        "score-weakening",
        help="CLIP-score weakening images; mean and standard error per (order, k)",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("jobs", nargs="+", help="sweep job folders (each with manifest.csv)")
    p.add_argument("--scores", required=True, help="CSV of every image's score")
    p.add_argument("--table", required=True, help="CSV of mean, sem, n per (experiment, order, k)")
    p.add_argument("--curves", default=None, help="optional PNG of the curves")
    p.add_argument(
        "--clip-model", default="tiny", help="open_clip model name (ViT-H-14 in the paper) or tiny"
    )
    p.add_argument("--pretrained", default=None, help="weights tag or local checkpoint file")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per CLIP batch")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=_score)
