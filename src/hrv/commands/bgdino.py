"""BG-DINO commands: ``hrv build-tiny-gsam`` (tiny random models) and ``hrv score-bgdino``."""

from __future__ import annotations

from hrv.commands import DEVICE_HELP, DefaultsHelp, finite_float, nonnegative_int, positive_int


def _build_tiny_gsam(args) -> int:
    from hrv.scores.tiny import save_tiny_gsam

    for role, folder in save_tiny_gsam(args.out, seed=args.seed).items():
        print(f"{role}\t{folder}")
    return 0


def _score_bgdino(args) -> int:
    from hrv.scores.bgdino import BGDinoSettings
    from hrv.scores.bgdino_run import score_manifest

    settings = BGDinoSettings(
        detector=args.detector,
        segmenter=args.segmenter,
        embedder=args.embedder,
        box_threshold=args.box_threshold,
        text_threshold=args.text_threshold,
        batch_size=args.batch_size,
        center_crop=args.center_crop,
        device=args.device,
    )
    scores = score_manifest(args.manifest, args.out, settings, sets=args.sets, methods=args.methods)
    print(
        f"{args.out}: {len(scores)} pairs, mean BG-DINO {scores['bgdino'].mean():.4f},"
        f" {int(scores['fallback'].sum())} scored on the whole image (nothing detected)"
    )
    return 0


def register(sub) -> None:
    from hrv.scores.bgdino import PAPER_MODELS, BGDinoSettings

    defaults = BGDinoSettings()
    p = sub.add_parser(
        "build-tiny-gsam",
        help="write tiny random Grounding DINO, SAM 2 and DINOv2 folders (demo and tests)",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("out", nargs="?", default="resources/models/tiny-gsam", help="folder to write")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the random weights")
    p.set_defaults(func=_build_tiny_gsam)

    p = sub.add_parser(
        "score-bgdino",
        help="BG-DINO: background preservation of edited pairs (Grounded-SAM-2 masks, DINOv2 cosine)",
        formatter_class=DefaultsHelp,
    )
    p.add_argument(
        "manifest",
        help="CSV with columns source_image, edited_image (or source, edited), object; optional set, method,"
        " pair, seed (the editing stage's manifest.csv has them all)",
    )
    p.add_argument("--out", required=True, help="folder for scores.csv, summary.csv and masks/")
    p.add_argument("--sets", nargs="+", default=None, help="only the rows of these sets (default: all)")
    p.add_argument("--methods", nargs="+", default=None, help="only the rows of these methods (default: all)")
    p.add_argument("--detector", default=PAPER_MODELS["detector"], help="Grounding DINO: hub id or folder")
    p.add_argument("--segmenter", default=PAPER_MODELS["segmenter"], help="SAM 2: hub id or folder")
    p.add_argument("--embedder", default=PAPER_MODELS["embedder"], help="DINOv2: hub id or folder")
    p.add_argument(
        "--box-threshold", type=finite_float, default=defaults.box_threshold, help="detection score"
    )
    p.add_argument("--text-threshold", type=finite_float, default=defaults.text_threshold, help="label words")
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="pairs per batch")
    p.add_argument(
        "--center-crop",
        action="store_true",
        help="DINOv2 sees its processor's center crop (default: the whole image, resized)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=_score_bgdino)
