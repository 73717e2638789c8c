"""Multi-concept command: ``hrv excite`` (SD, A&E, the released A&E, A&E-HRV, uniform-weight A&E)."""

from __future__ import annotations

from hrv.commands import (
    DEVICE_HELP,
    DefaultsHelp,
    add_seeds_arg,
    finite_float,
    image_side,
    nonnegative_int,
    positive_int,
    seed_list,
)


def _threshold(text: str) -> tuple[int, float]:
    from hrv.errors import HRVInputError

    try:
        step, value = text.split(":")
        return int(step), float(value)
    except ValueError as err:
        raise HRVInputError(
            f"cannot read threshold {text!r}; write STEP:VALUE, e.g. 0:0.05 10:0.5 20:0.8"
        ) from err


def _excite(args) -> int:
    from hrv.errors import HRVInputError
    from hrv.multiconcept import excite, load_hrv, load_pipeline

    if args.method == "ae_hrv" and not args.hrv:
        raise HRVInputError("--method ae_hrv needs --hrv (an hrv.npz of this model)")
    thresholds = dict(_threshold(t) for t in args.thresholds) if args.thresholds is not None else None
    hrv = load_hrv(args.hrv) if args.hrv else None
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    result = excite(
        pipe,
        args.prompt,
        args.method,
        hrv,
        seeds=seed_list(args.seeds),
        subjects=args.subjects,
        token_indices=args.token_index,
        concepts=args.concepts if len(args.concepts) > 1 else args.concepts[0],
        subword=args.subword,
        thresholds=thresholds,
        max_iter_to_alter=args.max_iter_to_alter,
        scale_factor=args.scale_factor,
        max_refinement_steps=args.max_refinement_steps,
        smooth=not args.no_smooth,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        batch_size=args.batch_size,
    )
    out = result.save(args.out)
    subjects = ", ".join(f"{s.word} {list(s.positions)} ({s.concept})" for s in result.subjects)
    print(f"{out}: {len(result.seeds)} image(s) with {result.method}; subjects {subjects}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "excite",
        help="multi-concept images: sd, ae (Attend-and-Excite), ae_released, ae_hrv (A&E-HRV), ae_uniform",
        description=(
            "Images of a prompt with two (or more) subjects, one per seed, as <out>/<prompt>/<seed>.png"
            " (the layout A&E's metric scripts read), grid.png and excite.json. See docs/multiconcept.md."
        ),
        formatter_class=DefaultsHelp,
    )
    p.add_argument("--model", required=True, help="preset name, hub id or diffusers folder")
    p.add_argument("--hrv", default=None, help="hrv.npz (needed by ae_hrv)")
    p.add_argument("--prompt", required=True, help='e.g. "a cat and a dog"')
    p.add_argument(
        "--method",
        default="ae_hrv",
        choices=["sd", "ae", "ae_released", "ae_hrv", "ae_uniform"],
        help="sd; ae (A&E as diffusers); ae_released (the HRV repository's A&E); ae_hrv; ae_uniform (1/H)",
    )
    add_seeds_arg(p, "1")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--subjects",
        nargs="+",
        default=None,
        help="words to excite (default: the last word of each 'and' part)",
    )
    p.add_argument(
        "--token-index", type=int, nargs="+", default=None, help="token positions to excite instead (SOT = 0)"
    )
    p.add_argument("--concepts", nargs="+", default=["Animals"], help="HRV concept: one, or one per subject")
    p.add_argument(
        "--subword", default="all", choices=["all", "first", "last"], help="tokens of a multi-token subject"
    )
    p.add_argument(
        "--thresholds", nargs="*", default=None, help="STEP:VALUE ... (default 0:0.05 10:0.5 20:0.8)"
    )
    p.add_argument(
        "--max-iter-to-alter", type=nonnegative_int, default=25, help="steps 0..N-1 take a gradient step"
    )
    p.add_argument("--scale-factor", type=finite_float, default=20.0, help="step size at step 0")
    p.add_argument(
        "--max-refinement-steps",
        type=nonnegative_int,
        default=20,
        help="refinement steps at a threshold step",
    )
    p.add_argument(
        "--no-smooth", action="store_true", help="no 3x3 smoothing for ae_released/ae_hrv/ae_uniform"
    )
    p.add_argument("--steps", type=positive_int, default=50, help="sampling steps")
    p.add_argument("--guidance-scale", type=finite_float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--height", type=image_side, default=None, help="default: the model's native size")
    p.add_argument("--width", type=image_side, default=None, help="default: the model's native size")
    p.add_argument("--batch-size", type=positive_int, default=4, help="seeds per batch")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="float32", help="float32 (the released scripts'), float16 or bfloat16")
    p.set_defaults(func=_excite)
