"""SD-HRV for polysemous words (paper section 5.1, appendix D.3): cases, images, scores, human sheet.

A case is a prompt whose ``token`` is often read in the wrong sense ("lavender" as a plant in "A
vase in lavender color"). Each case is rendered per seed as

- ``sd``: plain generation;
- ``adjusting`` (SD-HRV): concept adjusting of the token, desired vs undesired concept;
- ``strengthening``: concept strengthening with the desired concept alone (the ablation).

The paper's 63.0% -> 15.9% misinterpretation rates came from people. The automatic proxy here is
CLIP zero-shot between the case's intended-sense and wrong-sense texts: an image counts as
misinterpreted when it is closer to the wrong-sense text. The human sheet shows SD and SD-HRV
images of each (case, seed) side by side in a seeded random order (items and left/right), and
``human_rates`` turns people's answers into the paper's rate.
"""

from __future__ import annotations

import csv
import html
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hrv import judging
from hrv.errors import HRVInputError
from hrv.hrvfile import HRVSet
from hrv.io import atomic_path, write_text_atomic
from hrv.judging import ABItem, Form, write_sheet

CASE_COLUMNS = ("case", "prompt", "token", "desired", "undesired", "intended", "wrong", "clamp")
METHODS = ("sd", "adjusting", "strengthening")
METHOD_LABELS = {"sd": "SD", "adjusting": "SD-HRV (adjusting)", "strengthening": "strengthening"}
ANSWERS = {
    "intended": "intended",
    "i": "intended",
    "wrong": "wrong",
    "w": "wrong",
    "unclear": "unclear",
    "u": "unclear",
}


@dataclass(frozen=True)
class PolysemyCase:
    case: str
    prompt: str
    token: str
    desired: str
    undesired: str
    intended: str  # text of the intended sense (CLIP proxy, human sheet)
    wrong: str  # text of the wrong sense
    clamp: float | None = None
    source: str = ""


def read_cases(path: str | Path, which: Sequence[str] | None = None) -> list[PolysemyCase]:
    """Read the cases CSV (columns ``CASE_COLUMNS``, ``source`` optional); ``which`` picks case ids."""
    path = Path(path)
    if not path.is_file():
        raise HRVInputError(f"polysemy cases file {path} does not exist; see resources/polysemy_cases.csv")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CASE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise HRVInputError(f"cases file {path} lacks column(s) {', '.join(missing)}")
        cases = []
        for line, row in enumerate(reader, start=2):
            row = {k: (v or "").strip() for k, v in row.items() if k}
            empty = [c for c in CASE_COLUMNS if c != "clamp" and not row[c]]
            if empty:
                raise HRVInputError(f"cases file {path}, line {line}: empty {', '.join(empty)}")
            try:
                clamp = float(row["clamp"]) if row["clamp"] else None
            except ValueError as err:
                raise HRVInputError(
                    f"cases file {path}, line {line}: clamp {row['clamp']!r} is not a number"
                ) from err
            fields = {c: row[c] for c in CASE_COLUMNS if c != "clamp"}
            cases.append(PolysemyCase(**fields, clamp=clamp, source=row.get("source", "")))
    ids = [c.case for c in cases]
    odd = [i for i in ids if not re.fullmatch(r"[A-Za-z0-9_.-]+", i)]
    if odd:
        raise HRVInputError(
            f"cases file {path}: case id(s) {odd} may hold only letters, digits, '_', '.', '-'"
        )
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise HRVInputError(f"cases file {path}: case id(s) {', '.join(dup)} repeat; ids must be unique")
    if which is None:
        return cases
    unknown = [w for w in which if w not in ids]
    if unknown:
        raise HRVInputError(f"unknown polysemy case(s) {', '.join(unknown)}; {path} has {', '.join(ids)}")
    return [c for c in cases if c.case in set(which)]


def case_variants(pipe, hrv: HRVSet, case: PolysemyCase, methods: Sequence[str] = METHODS) -> dict:
    """{method: (1, H, 77) factors or None} for one case; checks heads, concepts and the token."""
    from hrv.heads import HeadRegistry
    from hrv.steering import Steering, build_intervention
    from hrv.tokens import select_tokens

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise HRVInputError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    names = HeadRegistry.from_unet(pipe.unet).names()
    positions = select_tokens(pipe.tokenizer, case.prompt, case.token, occurrence="all")
    variants = {}
    for m in methods:
        if m == "sd":
            variants[m] = None
        else:
            undesired = case.undesired if m == "adjusting" else None
            steering = Steering(case.desired, undesired, case.clamp)
            variants[m] = build_intervention(hrv, names, steering, positions).factors
    return variants


def run_case(
    pipe,
    hrv: HRVSet,
    case: PolysemyCase,
    seeds: Sequence[int],
    images_dir: str | Path,
    manifest: str | Path,
    grid: str | Path | None = None,
    *,
    methods: Sequence[str] = METHODS,
    sampling: dict | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Render a case's images (``images_dir/<method>/seed_<s>.png``), its grid, and its manifest CSV.

    The manifest (case, method, seed, path relative to the manifest's folder) is written last.
    """
    from hrv.generate import render, save_grid, save_image

    sampling = dict(sampling or {})
    variants = case_variants(pipe, hrv, case, methods)
    images = render(
        pipe,
        case.prompt,
        list(seeds),
        variants,
        steps=int(sampling.get("steps", 50)),
        guidance_scale=float(sampling.get("guidance_scale", 7.5)),
        height=sampling.get("height"),
        width=sampling.get("width"),
        batch_size=batch_size,
        progress=progress,
    )
    images_dir, manifest = Path(images_dir), Path(manifest)
    rows = []
    for m in methods:
        for seed, image in zip(seeds, images[m], strict=True):
            path = save_image(image, images_dir / m / f"seed_{seed:04d}.png")
            rows.append(
                {"case": case.case, "method": m, "seed": int(seed), "path": _relative(path, manifest.parent)}
            )
    if grid is not None:
        save_grid(
            {METHOD_LABELS[m]: images[m] for m in methods},
            [f"seed {s}" for s in seeds],
            grid,
            title=f"{case.prompt}  [{case.token}: {case.desired} vs {case.undesired}]",
        )
    table = pd.DataFrame(rows, columns=["case", "method", "seed", "path"])
    with atomic_path(manifest) as tmp:
        table.to_csv(tmp, index=False)
    return table


def _relative(path: Path, base: Path) -> str:
    return judging.relative(path, base)


def read_manifests(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate image manifests; ``path`` becomes absolute."""
    frames = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise HRVInputError(f"image manifest {p} does not exist; run the polysemy image rule first")
        t = pd.read_csv(p)
        missing = {"case", "method", "seed", "path"} - set(t.columns)
        if missing:
            raise HRVInputError(f"image manifest {p} lacks column(s) {', '.join(sorted(missing))}")
        t["path"] = [str((p.parent / q).resolve()) for q in t["path"]]
        frames.append(t)
    if not frames:
        raise HRVInputError("no image manifests given")
    return pd.concat(frames, ignore_index=True)


def clip_scores(
    manifest: pd.DataFrame, cases: Sequence[PolysemyCase], clip, batch_size: int = 32
) -> pd.DataFrame:
    """Per image: CLIP similarity to the intended and to the wrong sense, and the proxy verdict."""
    from PIL import Image

    by_id = {c.case: c for c in cases}
    out = []
    for case_id, group in manifest.groupby("case", sort=False):
        if case_id not in by_id:
            raise HRVInputError(f"images of case {case_id!r} but the cases file has no such case")
        case = by_id[case_id]
        images = []
        for p in group["path"]:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        sims = clip.similarity_matrix(images, [case.intended, case.wrong], batch_size=batch_size)
        g = group.copy()
        g["sim_intended"], g["sim_wrong"] = sims[:, 0], sims[:, 1]
        g["misinterpreted"] = sims[:, 1] > sims[:, 0]
        out.append(g)
    return pd.concat(out, ignore_index=True)


def misinterpretation_rates(scores: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Rate per (case, method) and over all cases (case ``all``): misinterpreted images / images."""
    methods = list(methods or [m for m in METHODS if m in set(scores["method"])])
    cases = list(dict.fromkeys(scores["case"]))
    rows = []
    for case in [*cases, "all"]:
        sub = scores if case == "all" else scores[scores["case"] == case]
        for m in methods:
            s = sub[sub["method"] == m]
            n, k = len(s), int(s["misinterpreted"].sum())
            rows.append(
                {
                    "case": case,
                    "method": m,
                    "n_images": n,
                    "n_misinterpreted": k,
                    "rate": k / n if n else math.nan,
                }
            )
    return pd.DataFrame(rows)


def rates_html(rates: pd.DataFrame, out: str | Path, title: str) -> Path:
    """A small standalone HTML table: cases x methods, rate in % (misinterpreted / images)."""
    methods = list(dict.fromkeys(rates["method"]))
    cases = list(dict.fromkeys(rates["case"]))
    cell = {(r.case, r.method): r for r in rates.itertuples()}
    head = "".join(f"<th>{html.escape(METHOD_LABELS.get(m, m))}</th>" for m in methods)
    body = []
    for c in cases:
        tds = []
        for m in methods:
            r = cell.get((c, m))
            tds.append(
                "<td>-</td>"
                if r is None or r.n_images == 0
                else f"<td>{100 * r.rate:.1f}% ({r.n_misinterpreted}/{r.n_images})</td>"
            )
        style = ' style="font-weight:bold"' if c == "all" else ""
        body.append(f"<tr{style}><td>{html.escape(c)}</td>{''.join(tds)}</tr>")
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>{t}</title><style>"
        "table{{border-collapse:collapse;font-family:sans-serif}}td,th{{border:1px solid #999;padding:4px 8px}}"
        "</style></head><body><h3>{t}</h3><table><tr><th>case</th>{h}</tr>{b}</table></body></html>\n"
    ).format(t=html.escape(title), h=head, b="".join(body))
    write_text_atomic(out, doc)
    return Path(out)


def plot_rates(rates: pd.DataFrame, out: str | Path, title: str, dpi: int = 150) -> Path:
    """Grouped bars: misinterpretation rate (%) per case and over all cases, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(rates["method"]))
    cases = list(dict.fromkeys(rates["case"]))
    x = np.arange(len(cases))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(cases) + 2), 3.6))
    for i, m in enumerate(methods):
        sub = rates[rates["method"] == m].set_index("case").reindex(cases)
        values = 100 * sub["rate"].to_numpy(float)
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=METHOD_LABELS.get(m, m))
        # printed values keep a 0% bar visible
        ax.bar_label(
            bars, labels=[f"{v:.0f}" if np.isfinite(v) else "" for v in values], fontsize=7, padding=1
        )
    ax.set_xticks(x, cases, rotation=30, ha="right")
    ax.set_ylabel("misinterpreted images (%)")
    ax.set_ylim(0, 100)
    ax.set_title(textwrap.fill(title, 70), fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(out)


# --- the human-judging sheet (hrv.judging) ----------------------------------------------------------

SHEET_COLUMNS = ["item", "prompt", "intended", "wrong", "image_a", "image_b", "answer_a", "answer_b"]


def _header(texts) -> str:
    return (
        f"<p>Prompt: &ldquo;{html.escape(texts['prompt'])}&rdquo;<br>Intended meaning: <i>{html.escape(texts['intended'])}</i>;"
        f" wrong meaning: <i>{html.escape(texts['wrong'])}</i></p>"
    )


HUMAN_FORM = Form(
    title="Polysemous words: which meaning does each image show?",
    instructions="""<p>Each item shows two images generated from the same prompt. For <b>each</b> image, choose
<i>intended</i> if it shows the intended meaning of the prompt, <i>wrong</i> if it shows the other
meaning (for example lavender flowers instead of a lavender colour), <i>unclear</i> if you cannot
tell. Then press the button at the end to download your answers and send the file back.</p>""",
    choices=("intended", "wrong", "unclear"),
    answers=ANSWERS,
    per_image=True,
    header=_header,
)


def write_human_sheet(
    manifest: pd.DataFrame,
    cases: Sequence[PolysemyCase],
    sheet: str | Path,
    key: str | Path,
    page: str | Path,
    images_dir: str | Path,
    *,
    seed: int = 0,
    methods: tuple[str, str] = ("sd", "adjusting"),
) -> pd.DataFrame:
    """One item per (case, seed): the two methods' images as A and B, items and sides shuffled.

    Images are copied under anonymous names (``item_007_a.png``) so that neither the sheet nor the
    page reveals the method; ``key`` (kept from the judges) maps items back to case, seed and
    methods. Judges answer, per image, ``intended``, ``wrong`` or ``unclear``.
    """
    by_id = {c.case: c for c in cases}
    m = manifest[manifest["method"].isin(methods)]
    pairs = m.pivot_table(index=["case", "seed"], columns="method", values="path", aggfunc="first")
    missing = [x for x in methods if x not in pairs.columns]
    if missing or pairs.isna().any().any():
        raise HRVInputError(
            f"the human sheet needs images of methods {', '.join(methods)} for every case and seed"
        )
    items = []
    for case_id, s in pairs.index:
        case = by_id[case_id]
        items.append(
            ABItem(
                methods=methods,
                images=(pairs.loc[(case_id, s), methods[0]], pairs.loc[(case_id, s), methods[1]]),
                shown={"prompt": case.prompt, "intended": case.intended, "wrong": case.wrong},
                key={"case": case_id, "seed": int(s)},
            )
        )
    return write_sheet(items, HUMAN_FORM, sheet, key, page, images_dir, seed=seed)


def read_answers(path: str | Path) -> pd.DataFrame:
    """One judge's answers: the sheet with ``answer_a``/``answer_b`` filled (``rater`` optional).

    Answers are ``intended``, ``wrong`` or ``unclear`` (or i/w/u, any case); blanks are unanswered.
    """
    return judging.read_answers(path, HUMAN_FORM)


def human_judgements(key: str | Path, answers: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (rater, image): case, seed, method and the answer (unanswered images dropped)."""
    j = judging.judgements(key, answers, HUMAN_FORM, ["case", "seed"])
    method = np.where(j["column"] == "answer_a", j["method_a"], j["method_b"])
    return pd.DataFrame(
        {
            "rater": j["rater"],
            "item": j["item"],
            "case": j["case"].astype(str),
            "seed": j["seed"].astype(int),
            "method": method,
            "answer": j["answer"],
        }
    )


def human_rates(
    key: str | Path, answers: Sequence[str | Path], exclude_unclear: bool = False
) -> pd.DataFrame:
    """The paper's human misinterpretation rate per method (case ``all``) and per (case, method).

    rate = judgements ``wrong`` / judgements, pooled over raters and images; ``unclear`` counts
    as a judgement (not misinterpreted) unless ``exclude_unclear``.
    """
    j = human_judgements(key, answers)
    if exclude_unclear:
        j = j[j["answer"] != "unclear"]
    methods = [m for m in METHODS if m in set(j["method"])]
    rows = []
    for case in [*dict.fromkeys(j["case"]), "all"]:
        sub = j if case == "all" else j[j["case"] == case]
        for m in methods:
            s = sub[sub["method"] == m]
            n = len(s)
            k = int((s["answer"] == "wrong").sum())
            rows.append(
                {
                    "case": case,
                    "method": m,
                    "n_judgements": n,
                    "n_wrong": k,
                    "n_unclear": int((s["answer"] == "unclear").sum()),
                    "n_raters": s["rater"].nunique(),
                    "rate": k / n if n else math.nan,
                }
            )
    return pd.DataFrame(rows)


# --- workflow steps (called by workflow/scripts/polysemy_*.py) --------------------------------------


OFFICIAL_HRVS = ("sd14", "sdxl")


def hrv_source(source: str | None, own: str, folder: str, key: str = "polysemy.hrv") -> str:
    """The HRV file a stage uses: ``None`` = the run's own (``own``), ``sd14``/``sdxl`` = the
    released HRVs imported into ``folder/hrv_official_<name>.npz``, else a file path (config ``key``)."""
    if source is None:
        return str(own)
    if source in OFFICIAL_HRVS:
        return f"{folder}/hrv_official_{source}.npz"
    if not Path(source).is_file():
        raise HRVInputError(
            f"{key} {source!r} is neither null (this run's HRVs), {' nor '.join(OFFICIAL_HRVS)}"
            " (the released HRVs) nor an existing HRV file"
        )
    return source


def render_case_files(
    model: str,
    hrv_path: str | Path,
    cases_csv: str | Path,
    case_id: str,
    seeds: Sequence[int],
    images_dir: str | Path,
    manifest: str | Path,
    grid: str | Path,
    *,
    sampling: dict,
    methods: Sequence[str] = METHODS,
    batch_size: int = 1,
    device: str = "auto",
    dtype: str = "auto",
) -> pd.DataFrame:
    """Load the model and the HRVs, then ``run_case`` for one case of the cases file."""
    from hrv.hrvfile import load_hrv
    from hrv.models import load_pipeline

    (case,) = read_cases(cases_csv, [case_id])
    hrv = load_hrv(hrv_path)
    pipe = load_pipeline(model, device=device, dtype=dtype)
    return run_case(
        pipe, hrv, case, list(seeds), images_dir, manifest, grid,
        methods=methods, sampling=sampling, batch_size=batch_size,
    )  # fmt: skip


def score_files(
    manifests: Sequence[str | Path],
    cases_csv: str | Path,
    scores_out: str | Path,
    *,
    clip: dict,
    device: str = "auto",
) -> pd.DataFrame:
    """CLIP proxy over all cases: per-image similarities and verdicts, as CSV."""
    from hrv.clip import load_clip

    manifest = read_manifests(manifests)
    scorer = load_clip(clip.get("model", "tiny"), clip.get("pretrained"), device=device)
    scores = clip_scores(manifest, read_cases(cases_csv), scorer, batch_size=int(clip.get("batch_size", 32)))
    with atomic_path(scores_out) as tmp:
        scores.to_csv(tmp, index=False, float_format="%.6g")
    return scores


def rate_files(
    scores_csv: str | Path, rates_out: str | Path, table_out: str | Path, bars_out: str | Path, clip_name: str
) -> pd.DataFrame:
    """Rates per (case, method) from the per-image scores: CSV, HTML table and bar plot."""
    scores = pd.read_csv(scores_csv)
    if "misinterpreted" not in scores.columns:
        raise HRVInputError(f"{scores_csv} has no 'misinterpreted' column; re-run the polysemy scoring")
    rates = misinterpretation_rates(scores)
    with atomic_path(rates_out) as tmp:
        rates.to_csv(tmp, index=False, float_format="%.6g")
    title = f"CLIP proxy ({clip_name}): images closer to the wrong sense than to the intended sense"
    rates_html(rates, table_out, title)
    plot_rates(rates, bars_out, title)
    return rates
