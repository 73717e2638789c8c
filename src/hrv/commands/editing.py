"""The editing command: ``hrv edit`` (P2P, P2P-HRV and the other methods of ``hrv.editing``)."""

from __future__ import annotations

from pathlib import Path

from hrv.commands import (
    DEVICE_HELP,
    DTYPE_HELP,
    SEEDS_HELP,
    DefaultsHelp,
    finite_float,
    image_side,
    positive_int,
    seed_list,
)


def _edit(args) -> int:
    from hrv.editing import edit_pairs, get_method, save_edit_outputs
    from hrv.editing.injection import check_fraction
    from hrv.editing.run import OWNER
    from hrv.errors import HRVInputError
    from hrv.io import check_replaceable
    from hrv.models import load_pipeline

    if args.seeds is None:
        raise HRVInputError("give the seeds to edit from, e.g. --seeds 10 20 30")
    check_replaceable(Path(args.out), OWNER)
    for name in args.method:  # the cheap checks before the model loads
        get_method(name)
    check_fraction(args.cross_steps, "--cross-steps")
    check_fraction(args.self_steps, "--self-steps")
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    result = edit_pairs(
        pipe,
        [(args.source, args.target, args.word)],
        args.method,
        seed_list(args.seeds),
        hrv=args.hrv,
        concept=args.concept,
        steps=args.steps,
        height=args.height,
        width=args.width,
        guidance_scale=args.guidance_scale,
        cross_steps=args.cross_steps,
        self_steps=args.self_steps,
        token_map=args.token_map,
        batch_size=args.batch_size,
        progress=True,
        scheduler=args.scheduler,
    )
    result.settings["model"] = str(args.model)
    out = save_edit_outputs(result, args.out)
    pair = result.pairs[0]
    print(
        f"{out}: {len(result.seeds)} seed(s) x {len(result.methods)} method(s); edited word {pair.word!r}"
        f" at token position(s) {list(pair.edited)}"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "edit",
        help="edit a generated image by a word swap (P2P, P2P-HRV, ...); several methods share one source",
        description=(
            "Writes source/seedNNNN.png, <method>/seedNNNN.png, grid.png and edit.json into --out."
            " The source image is plain sampling of the source prompt from the seed's latent."
        ),
        formatter_class=DefaultsHelp,
    )
    p.add_argument("--model", required=True, help="preset name, hub id or diffusers folder")
    p.add_argument("--source", required=True, help="source prompt, e.g. 'a blue car'")
    p.add_argument("--target", required=True, help="target prompt: the source with one word swapped")
    p.add_argument("--word", default=None, help="the edited word of the target (when several words differ)")
    p.add_argument(
        "--method",
        action="append",
        required=True,
        help="editing method, repeat for several: p2p, p2p_self09, p2p_hrv_flat, p2p_hrv, sdedit_0.5,"
        " sdedit_0.7, pnp, masactrl, fpe",
    )
    p.add_argument("--hrv", default=None, help="hrv.npz of a run, or sd14 / sdxl (the released HRVs)")
    p.add_argument("--concept", default=None, help="the HRV concept of the edit, e.g. Color")
    p.add_argument("--seeds", nargs="+", default=None, metavar="SEEDS", help=SEEDS_HELP)
    p.add_argument(
        "--cross-steps",
        type=finite_float,
        default=None,
        help="cross replacement fraction (default: method's)",
    )
    p.add_argument(
        "--self-steps", type=finite_float, default=None, help="self replacement fraction (default: method's)"
    )
    p.add_argument(
        "--token-map",
        default="aligned",
        help="token alignment of the swap: aligned or released (P2P's mapping, for parity)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=positive_int, default=50, help="sampling steps")
    p.add_argument("--guidance-scale", type=finite_float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--height", type=image_side, default=None, help="default: the model's native size")
    p.add_argument("--width", type=image_side, default=None, help="default: the model's native size")
    p.add_argument("--batch-size", type=positive_int, default=1, help="seeds per pipeline call")
    p.add_argument(
        "--scheduler",
        choices=["pndm", "ddim"],
        default=None,
        help="sampler of the source and every method (default: the model's own; SD v1.4's is pndm)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.set_defaults(func=_edit)
