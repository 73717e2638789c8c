"""Editing score commands: edit-hp (people's A/B answers -> human preference normalised to P2P-HRV = 100)."""

from __future__ import annotations

import argparse

from hrv.commands import add_overwrite_arg, check_new_files


def _edit_hp(args) -> int:
    from hrv.editing.human import write_hp_scores

    check_new_files(args, "out", "table")
    table = write_hp_scores(args.key, args.answers, args.out, reference=args.reference)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    if args.clip_summary:
        import pandas as pd

        from hrv.editing.scores import table1
        from hrv.errors import HRVInputError
        from hrv.io import atomic_path

        if not args.table:
            raise HRVInputError("--clip-summary needs --table (where to write the combined table)")
        combined = table1(pd.read_csv(args.clip_summary), table)
        with atomic_path(args.table) as tmp:
            combined.to_csv(tmp, index=False)
        print(f"{args.table}: CLIP and HP per method (like the paper's Table 1)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "edit-hp",
        help="turn people's answers on the editing A/B sheet into human-preference scores",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "HP of a method = 100 x its votes / P2P-HRV's votes on the items comparing the two, per set\n"
            "and over all sets (set 'all'); P2P-HRV = 100. Answers: the sheet CSV with column answer\n"
            "filled (A or B), one file per rater; see docs/editing.md."
        ),
    )
    p.add_argument("answers", nargs="+", help="answer CSV files, one per rater")
    p.add_argument("--key", required=True, help="key.csv written beside the sheet")
    p.add_argument("--out", required=True, help="write the HP table as CSV here")
    p.add_argument("--reference", default="p2p_hrv", help="the method every item compares with")
    p.add_argument(
        "--clip-summary",
        default=None,
        help="the stage's editing/clip_summary.csv: also write the Table-1 layout",
    )
    p.add_argument("--table", default=None, help="with --clip-summary: CLIP and HP columns per method, CSV")
    add_overwrite_arg(p)
    p.set_defaults(func=_edit_hp)
