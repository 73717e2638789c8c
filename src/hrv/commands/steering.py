"""Steering commands: generate (strengthening/adjusting), polysemy-rate (human answers -> rate)."""

from __future__ import annotations

import argparse

from hrv.commands import (
    DEVICE_HELP,
    DTYPE_HELP,
    DefaultsHelp,
    add_overwrite_arg,
    add_seeds_arg,
    check_new_files,
    finite_float,
    image_side,
    nonnegative_int,
    positive_int,
    seed_list,
)


def _generate(args) -> int:
    from hrv.errors import HRVInputError
    from hrv.generate import load_hrv, load_pipeline, steer

    if (args.token is None) == (args.token_index is None):
        raise HRVInputError("give the token to steer as --token WORD or as --token-index N [N ...]")
    occurrence = args.occurrence
    if occurrence not in (None, "all"):
        try:
            occurrence = int(occurrence)
        except ValueError as err:
            raise HRVInputError(
                f"--occurrence must be a number from 1 or 'all', got {args.occurrence!r}"
            ) from err
    hrv = load_hrv(args.hrv)
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    result = steer(
        pipe,
        hrv,
        args.prompt,
        args.token if args.token is not None else args.token_index,
        args.desired,
        args.undesired,
        seeds=seed_list(args.seeds),
        clamp=args.clamp,
        start=args.start,
        end=args.end,
        occurrence=occurrence,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        batch_size=args.batch_size,
    )
    out = result.save(args.out)
    print(
        f"{out}: {len(result.seeds)} seed(s), {result.steering.method} of token position(s) {result.positions}"
    )
    return 0


def _polysemy_rate(args) -> int:
    from hrv.io import atomic_path
    from hrv.polysemy import human_rates

    check_new_files(args, "out")
    rates = human_rates(args.key, args.answers, exclude_unclear=args.exclude_unclear)
    if args.out:
        with atomic_path(args.out) as tmp:
            rates.to_csv(tmp, index=False, float_format="%.6g")
    shown = rates.assign(rate=(100 * rates["rate"]).round(1).astype(str) + "%")
    print(shown.to_string(index=False))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="images with concept adjusting/strengthening of a token, beside the same seeds unsteered",
        description="Steered images (steered/), the same seeds unsteered (baseline/), grid.png and steering.json.",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("--model", required=True, help="preset name, hub id or diffusers folder")
    p.add_argument("--hrv", required=True, help="hrv.npz of a run or of `hrv import-official`")
    p.add_argument("--prompt", required=True, help="the prompt to sample")
    p.add_argument(
        "--token", help="word of the prompt to steer (all its tokens), e.g. lavender or olive-colored"
    )
    p.add_argument(
        "--token-index", type=nonnegative_int, nargs="+", help="token position(s) instead of a word (SOT = 0)"
    )
    p.add_argument("--occurrence", default=None, help="which occurrence of a repeated word: 1, 2, ... or all")
    p.add_argument("--desired", required=True, help="concept to steer towards, e.g. Color")
    p.add_argument(
        "--undesired", default=None, help="concept to steer away from (adjusting); none = strengthening"
    )
    p.add_argument(
        "--clamp",
        type=finite_float,
        default=None,
        help="limit each HRV element to this value first (SDXL: 9)",
    )
    p.add_argument("--start", type=nonnegative_int, default=0, help="first steered UNet evaluation")
    p.add_argument(
        "--end",
        type=nonnegative_int,
        default=None,
        help="steering stops before this UNet evaluation (default: all)",
    )
    add_seeds_arg(p, "1")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=positive_int, default=50, help="sampling steps")
    p.add_argument("--guidance-scale", type=finite_float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--height", type=image_side, default=None, help="default: the model's native size")
    p.add_argument("--width", type=image_side, default=None, help="default: the model's native size")
    p.add_argument("--batch-size", type=positive_int, default=1, help="seeds per pipeline call")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "polysemy-rate",
        help="turn people's answers on the polysemy judging sheet into misinterpretation rates",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "rate = images judged 'wrong' / images judged, pooled over raters, per method (case 'all')\n"
            "and per case. Answers: the sheet CSV with answer_a/answer_b filled (intended, wrong, unclear)."
        ),
    )
    p.add_argument("answers", nargs="+", help="answer CSV files, one per rater")
    p.add_argument("--key", required=True, help="key.csv written beside the sheet")
    p.add_argument(
        "--exclude-unclear", action="store_true", help="leave 'unclear' judgements out of the rate"
    )
    p.add_argument("--out", default=None, help="write the rates as CSV here")
    add_overwrite_arg(p)
    p.set_defaults(func=_polysemy_rate)
