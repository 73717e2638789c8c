"""Human judging of image pairs: anonymous A/B pages in a seeded random order, a key kept apart,
and the judges' answers read back.

One implementation serves every stage that asks people (polysemy: which meaning does each image
show; editing: which edit is better). A stage describes its question as a ``Form`` and its items
as ``ABItem``s; ``write_sheet`` then

- shuffles the items and, per item, which of the two images is A (``numpy.random.default_rng(seed)``:
  one permutation of the items, then one coin per item);
- copies the images under anonymous names (``item_007_a.png``), so neither the sheet nor the page
  reveals a method;
- writes the sheet (CSV for judges who prefer a spreadsheet), the key (item -> what it shows, and
  which method is A and which B; kept from the judges) and a standalone HTML page whose button
  downloads the answers as a CSV in the sheet's columns.

``judgements`` reads answer files against the key: one row per (rater, item, answer column).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hrv.errors import HRVInputError
from hrv.io import atomic_path, write_text_atomic


@dataclass(frozen=True)
class Form:
    """The question put to judges.

    ``per_image``: one answer per image (columns ``answer_a``, ``answer_b``) or one per item
    (column ``answer``). ``answers`` maps every accepted spelling (lower case) to the answer it
    means; ``choices`` are the page's radio buttons. ``header`` is the HTML above an item's images,
    from the item's shown texts.
    """

    title: str
    instructions: str  # HTML
    choices: tuple[str, ...]
    answers: Mapping[str, str]
    per_image: bool
    header: Callable[[Mapping[str, str]], str]
    unit: str = "image"  # what one unanswered answer is called in the warning

    @property
    def answer_columns(self) -> tuple[str, ...]:
        return ("answer_a", "answer_b") if self.per_image else ("answer",)


@dataclass(frozen=True)
class ABItem:
    """Two images to compare: ``images[i]`` shows ``methods[i]``.

    ``shown`` texts go to the sheet and the page; ``key`` fields (what the item is) and the methods
    go to the key only; ``context`` images (e.g. the source of an edit) are shown above A and B,
    never shuffled.
    """

    methods: tuple[str, str]
    images: tuple[str | Path, str | Path]
    shown: Mapping[str, str]
    key: Mapping[str, object]
    context: Mapping[str, str | Path] = field(default_factory=dict)


def shuffled_order(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(item order, per item whether the sides are swapped), from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    flips = rng.integers(0, 2, size=n).astype(bool)
    return order, flips


def relative(path: str | Path, base: str | Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def write_sheet(
    items: Sequence[ABItem],
    form: Form,
    sheet: str | Path,
    key: str | Path,
    page: str | Path,
    images_dir: str | Path,
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Write the sheet, the key, the page and the anonymised images of ``items``; return the sheet.

    The sheet's columns: ``item``, the shown texts, ``image_<context>``, ``image_a``, ``image_b``,
    the answer columns (blank). The key's: ``item``, the key fields, ``method_a``, ``method_b``.
    Image paths are relative to the page's folder.
    """
    if not items:
        raise HRVInputError("no items to judge; the sheet needs at least one pair of images")
    shown_cols = list(items[0].shown)
    context_cols = list(items[0].context)
    for it in items:
        if list(it.shown) != shown_cols or list(it.context) != context_cols:
            raise HRVInputError("every item to judge must show the same texts and context images")
    order, flips = shuffled_order(len(items), seed)
    images_dir = Path(images_dir)
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    page_dir = Path(page).parent
    sheet_rows, key_rows = [], []
    for number, (idx, flip) in enumerate(zip(order, flips, strict=True), start=1):
        it = items[idx]
        sides = [1, 0] if flip else [0, 1]
        names = {}
        for name, path in it.context.items():
            names[name] = _copy(path, images_dir / f"item_{number:03d}_{name}.png", page_dir)
        for side, i in zip(("a", "b"), sides, strict=True):
            names[side] = _copy(it.images[i], images_dir / f"item_{number:03d}_{side}.png", page_dir)
        sheet_rows.append(
            {
                "item": number,
                **{c: it.shown[c] for c in shown_cols},
                **{f"image_{c}": names[c] for c in context_cols},
                "image_a": names["a"],
                "image_b": names["b"],
                **{c: "" for c in form.answer_columns},
            }
        )
        key_rows.append(
            {"item": number, **it.key, "method_a": it.methods[sides[0]], "method_b": it.methods[sides[1]]}
        )
    columns = ["item", *shown_cols, *(f"image_{c}" for c in context_cols), "image_a", "image_b"]
    table = pd.DataFrame(sheet_rows, columns=[*columns, *form.answer_columns])
    with atomic_path(sheet) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(key) as tmp:
        pd.DataFrame(key_rows).to_csv(tmp, index=False)
    write_text_atomic(page, _page_html(table, form, shown_cols, context_cols))
    return table


def _copy(src: str | Path, dest: Path, page_dir: Path) -> str:
    shutil.copyfile(src, dest)
    return relative(dest, page_dir)


def _page_html(table: pd.DataFrame, form: Form, shown: list[str], context: list[str]) -> str:
    blocks = []
    for r in table.to_dict("records"):
        item = r["item"]
        cells = [
            f"<td><img src='{html.escape(r[f'image_{c}'])}' width='256'><br><b>{html.escape(c)}</b></td>"
            for c in context
        ]
        for side in ("a", "b"):
            below = f": {_radios(item, side, form.choices)}" if form.per_image else ""
            cells.append(
                f"<td><img src='{html.escape(r[f'image_{side}'])}' width='256'><br><b>{side.upper()}</b>{below}</td>"
            )
        answer = "" if form.per_image else f"<p>Answer: {_radios(item, 'answer', form.choices)}</p>"
        texts = {c: str(r[c]) for c in shown}
        blocks.append(
            f"<div class='item'><h4>Item {item}</h4>{form.header(texts)}"
            f"<table><tr>{''.join(cells)}</tr></table>{answer}</div>"
        )
    image_cols = [*(f"image_{c}" for c in context), "image_a", "image_b"]
    data = json.dumps(table[["item", *shown, *image_cols]].to_dict("records"))
    names = ["a", "b"] if form.per_image else ["answer"]
    header = ",".join(["item", *shown, *image_cols, *form.answer_columns, "rater"])
    fields = " ".join(f"q(it[{json.dumps(c)}])," for c in [*shown, *image_cols])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(form.title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} .item{{border-top:1px solid #aaa;padding:6px}}
td{{vertical-align:top;padding:6px}}</style></head><body>
<h2>{html.escape(form.title)}</h2>
{form.instructions}
<p>Your name or initials: <input id="rater"></p>
{"".join(blocks)}
<p><button onclick="download()">Download my answers (CSV)</button> <span id="msg"></span></p>
<script>
const ITEMS = {data};
const NAMES = {json.dumps(names)};
function q(s) {{ return '"' + String(s).replace(/"/g, '""') + '"'; }}
function download() {{
  const rater = document.getElementById('rater').value.trim() || 'anonymous';
  const lines = [{json.dumps(header)}];
  let blank = 0;
  for (const it of ITEMS) {{
    const ans = NAMES.map(s => {{
      const el = document.querySelector(`input[name="${{it.item}}_${{s}}"]:checked`);
      if (!el) blank++;
      return el ? el.value : '';
    }});
    lines.push([it.item, {fields} ...ans, q(rater)].join(','));
  }}
  const blob = new Blob([lines.join('\\n') + '\\n'], {{type: 'text/csv'}});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'answers_' + rater.replace(/[^A-Za-z0-9_-]+/g, '_') + '.csv';
  a.click();
  document.getElementById('msg').textContent = blank ? blank + ' answer(s) left blank' : 'all answered, thank you';
}}
</script></body></html>
"""


def _radios(item: int, name: str, choices: Sequence[str]) -> str:
    return " ".join(
        f"<label><input type='radio' name='{item}_{name}' value='{v}'> {v}</label>" for v in choices
    )


def read_answers(path: str | Path, form: Form) -> pd.DataFrame:
    """One judge's answers: the sheet with its answer columns filled (``rater`` optional, else the
    file's name). Answers are normalised through ``form.answers``; blanks are unanswered."""
    path = Path(path)
    if not path.is_file():
        raise HRVInputError(f"answers file {path} does not exist")
    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"item", *form.answer_columns} - set(t.columns)
    if missing:
        raise HRVInputError(
            f"answers file {path} lacks column(s) {', '.join(sorted(missing))}; fill in the sheet's columns"
        )
    if "rater" not in t.columns:
        t["rater"] = path.stem
    t["rater"] = t["rater"].replace("", path.stem)
    spellings = _spellings(form)
    for col in form.answer_columns:
        norm = t[col].str.strip().str.lower()
        bad = sorted(set(norm[(norm != "") & ~norm.isin(list(form.answers))]))
        if bad:
            raise HRVInputError(
                f"answers file {path}, column {col}: unknown answer(s) {', '.join(map(repr, bad))};"
                f" use {spellings}, blank for unanswered"
            )
        t[col] = norm.map(lambda v: form.answers.get(v, ""))
    try:
        t["item"] = t["item"].astype(int)
    except ValueError as err:
        raise HRVInputError(f"answers file {path}: column item must hold the sheet's item numbers") from err
    dup = t.duplicated(["rater", "item"])
    if dup.any():
        raise HRVInputError(
            f"answers file {path}: item(s) {sorted(t.loc[dup, 'item'])} answered twice by one rater"
        )
    return t[["rater", "item", *form.answer_columns]]


def _spellings(form: Form) -> str:
    """'intended, wrong or unclear (or i, w, u)' from the form's accepted spellings."""
    main = [c.lower() for c in form.choices]
    short = [s for s in form.answers if s not in main]
    text = ", ".join(main[:-1]) + f" or {main[-1]}" if len(main) > 1 else main[0]
    return f"{text} (or {', '.join(short)})" if short else text


def judgements(
    key: str | Path, answers: Sequence[str | Path], form: Form, key_columns: Sequence[str]
) -> pd.DataFrame:
    """One row per (rater, item, answer column) answered: the key's fields, ``method_a``,
    ``method_b``, ``column`` and ``answer``. Unanswered ones are dropped with a warning."""
    key = Path(key)
    if not key.is_file():
        raise HRVInputError(f"key file {key} does not exist; it is written with the sheet")
    keys = pd.read_csv(key, keep_default_na=False)
    need = {"item", *key_columns, "method_a", "method_b"}
    if need - set(keys.columns):
        raise HRVInputError(f"key file {key} lacks column(s) {', '.join(sorted(need - set(keys.columns)))}")
    keyed = keys.set_index("item")
    rows, blank = [], 0
    for path in answers:
        t = read_answers(path, form)
        unknown = sorted(set(t["item"]) - set(keyed.index))
        if unknown:
            raise HRVInputError(
                f"answers file {path}: item(s) {unknown} are not in the key {key}; wrong sheet?"
            )
        for r in t.to_dict("records"):
            k = keyed.loc[r["item"]]
            for col in form.answer_columns:
                if not r[col]:
                    blank += 1
                    continue
                rows.append(
                    {
                        "rater": r["rater"],
                        "item": r["item"],
                        **{c: k[c] for c in key_columns},
                        "method_a": k["method_a"],
                        "method_b": k["method_b"],
                        "column": col,
                        "answer": r[col],
                    }
                )
    if blank:
        warnings.warn(f"{blank} {form.unit}(s) were left unanswered and are not counted", stacklevel=2)
    if not rows:
        raise HRVInputError("no answered items in the answers files")
    return pd.DataFrame(rows)
