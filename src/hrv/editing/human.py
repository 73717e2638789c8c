"""Human preference (HP) for the editing sets without an object (Image Style, Weather Conditions).

The paper (Table 1) asked which edited image "better matches the target description while
keeping the source's essential details" and normalised the scores to P2P-HRV = 100; its protocol
is not public (notes/editing.md 3.5). Here every item is one A/B comparison of P2P-HRV against one
other method on one (pair, seed), the source image shown above both, a forced choice A or B.

HP of method m in a set = 100 x (votes for m) / (votes for P2P-HRV), both counted over the items
comparing m with P2P-HRV: P2P-HRV is 100, and a method with HP 42 got 0.42 votes per vote of
P2P-HRV (the paper's "2.39x the votes of the second-best method" is HP 100 / 2.39 = 42).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hrv.errors import HRVInputError
from hrv.io import atomic_path
from hrv.judging import ABItem, Form, judgements, write_sheet

HP_SETS = ("image_style", "weather_conditions")
REFERENCE = "p2p_hrv"
QUESTION = (
    "Which edited image better matches the target description while keeping the source's essential details?"
)


def _header(texts) -> str:
    return (
        f"<p>Source description: &ldquo;{html.escape(texts['source_prompt'])}&rdquo;<br>"
        f"Target description: <b>&ldquo;{html.escape(texts['target_prompt'])}&rdquo;</b></p>"
    )


EDIT_FORM = Form(
    title="Image editing: which edit is better?",
    instructions=f"""<p>Each item shows a source image and two edits of it, A and B, that should turn
the source description into the target description. {html.escape(QUESTION, quote=False)} Choose A or B for
every item (there is no tie: pick the one you lean to). Then press the button at the end to
download your answers and send the file back.</p>""",
    choices=("A", "B"),
    answers={"a": "a", "b": "b"},
    per_image=False,
    header=_header,
    unit="item",
)
KEY_COLUMNS = ("set", "pair", "seed")


def sheet_items(
    manifest: pd.DataFrame, sets: Sequence[str] = HP_SETS, reference: str = REFERENCE
) -> list[ABItem]:
    """One item per (set, pair, seed, other method): ``reference`` against that method.

    ``manifest`` is the editing manifest with absolute ``source_image`` / ``edited_image`` paths.
    """
    m = manifest[manifest["set"].isin(sets)]
    if m.empty:
        raise HRVInputError(f"the editing manifest has no images of the set(s) {', '.join(sets)}")
    methods = list(dict.fromkeys(m["method"]))
    if reference not in methods:
        raise HRVInputError(f"human preference compares {reference} with the others, but it has no images")
    others = [x for x in methods if x != reference]
    if not others:
        raise HRVInputError(f"human preference needs a method besides {reference}")
    by = m.set_index(["set", "pair", "seed", "method"])
    items = []
    for (set_name, pair, seed), _ in m.groupby(["set", "pair", "seed"], sort=True):
        ref = by.loc[(set_name, pair, seed, reference)]
        for other in others:
            if (set_name, pair, seed, other) not in by.index:
                raise HRVInputError(
                    f"no {other} image of {set_name} pair {pair} seed {seed}; every method needs every pair and seed"
                )
            row = by.loc[(set_name, pair, seed, other)]
            items.append(
                ABItem(
                    methods=(reference, other),
                    images=(ref["edited_image"], row["edited_image"]),
                    shown={"source_prompt": ref["source_prompt"], "target_prompt": ref["target_prompt"]},
                    key={"set": set_name, "pair": int(pair), "seed": int(seed)},
                    context={"source": ref["source_image"]},
                )
            )
    return items


def write_edit_sheet(
    manifest: pd.DataFrame,
    sheet: str | Path,
    key: str | Path,
    page: str | Path,
    images_dir: str | Path,
    *,
    seed: int = 0,
    sets: Sequence[str] = HP_SETS,
    reference: str = REFERENCE,
) -> pd.DataFrame:
    """The A/B sheet, its key (kept from the judges), page and anonymised images."""
    items = sheet_items(manifest, sets, reference)
    return write_sheet(items, EDIT_FORM, sheet, key, page, images_dir, seed=seed)


def hp_scores(key: str | Path, answers: Sequence[str | Path], reference: str = REFERENCE) -> pd.DataFrame:
    """HP per (set, method) and over all sets (set ``all``), normalised to ``reference`` = 100.

    Columns: set, method, n_judgements (of the items comparing this method with the reference;
    for the reference all its items), votes, votes_reference, n_raters, hp.
    """
    j = judgements(key, answers, EDIT_FORM, KEY_COLUMNS)
    bad = j[(j["method_a"] != reference) & (j["method_b"] != reference)]
    if not bad.empty:
        raise HRVInputError(f"key {key}: item(s) {sorted(set(bad['item']))} do not involve {reference}")
    j["winner"] = j["method_a"].where(j["answer"] == "a", j["method_b"])
    j["other"] = j["method_b"].where(j["method_a"] == reference, j["method_a"])
    sets = [*dict.fromkeys(j["set"]), "all"]
    others = list(dict.fromkeys(j["other"]))
    rows = []
    for s in sets:
        sub = j if s == "all" else j[j["set"] == s]
        ref_votes = int((sub["winner"] == reference).sum())
        rows.append(
            {
                "set": s,
                "method": reference,
                "n_judgements": len(sub),
                "votes": ref_votes,
                "votes_reference": ref_votes,
                "n_raters": sub["rater"].nunique(),
                "hp": 100.0 if ref_votes else math.nan,
            }
        )
        for m in others:
            pair = sub[sub["other"] == m]
            votes, against = int((pair["winner"] == m).sum()), int((pair["winner"] == reference).sum())
            rows.append(
                {
                    "set": s,
                    "method": m,
                    "n_judgements": len(pair),
                    "votes": votes,
                    "votes_reference": against,
                    "n_raters": pair["rater"].nunique(),
                    "hp": 100.0 * votes / against if against else math.nan,
                }
            )
    return pd.DataFrame(rows)


def write_hp_scores(
    key: str | Path, answers: Sequence[str | Path], out: str | Path, reference: str = REFERENCE
) -> pd.DataFrame:
    table = hp_scores(key, answers, reference)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table
