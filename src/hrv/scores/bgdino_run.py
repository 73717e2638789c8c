"""BG-DINO over a manifest of edited pairs: scores, masks and the per-(set, method) table.

The manifest is a CSV with one row per edited image, as the editing stage writes it
(``results/<run>/editing/manifest.csv``) or as a user writes it by hand for a folder of images.
Required columns: ``source_image`` and ``edited_image`` (or ``source`` and ``edited``: image paths,
relative to the manifest's folder unless absolute) and ``object`` (the edited object's noun).
Optional: ``set``, ``method``, ``pair``, ``seed`` (they name the masks, select rows and group the
table); every other column is carried into the scores.

Output folder (filled beside its final name, renamed when complete):
``scores.csv`` (the manifest's rows, image paths relative to the folder, with ``bgdino``,
``fallback``, ``boxes_source``, ``boxes_edited``, ``background`` and ``mask``), ``summary.csv``
(per set and method: mean, se, n, fallback, no_background) and ``masks/*.png`` (white = the object
pixels that were zeroed in both images).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hrv.errors import HRVInputError
from hrv.scores.bgdino import BGDino, BGDinoSettings, text_query
from hrv.scores.bgdino_tables import summarize

IMAGES = {"source": ("source_image", "source"), "edited": ("edited_image", "edited")}  # accepted names
KEYS = ("set", "method", "pair", "seed")  # optional: name the masks, select rows, group the summary


def _image_column(table: pd.DataFrame, role: str) -> str | None:
    return next((c for c in IMAGES[role] if c in table.columns), None)


def read_manifest(
    path: str | Path, sets: Sequence[str] | None = None, methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """The manifest's rows (of the given sets and methods, when given) with two added columns,
    ``source_path`` and ``edited_path`` (absolute), after checking every selected pair: the
    columns, the nouns, that each image exists and that a pair's two images have one size."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise HRVInputError(
            f"manifest {path} does not exist; give a CSV with columns source_image, edited_image, object"
        )
    table = pd.read_csv(path, keep_default_na=False)
    cols = {role: _image_column(table, role) for role in IMAGES}
    missing = [IMAGES[r][0] for r, c in cols.items() if c is None] + ["object"] * ("object" not in table)
    if missing:
        raise HRVInputError(
            f"manifest {path} lacks the column(s) {', '.join(missing)}; it needs source_image, edited_image"
            f" (or source, edited) and object, optionally {', '.join(KEYS)}"
        )
    for key, wanted in (("set", sets), ("method", methods)):
        if wanted is not None:
            if key not in table.columns:
                raise HRVInputError(f"manifest {path} has no '{key}' column to select {list(wanted)} from")
            table = table[table[key].astype(str).isin([str(w) for w in wanted])]
    if table.empty:
        raise HRVInputError(f"manifest {path} has no rows (of sets {sets}, methods {methods})")
    table = table.reset_index(drop=True)
    for role, col in cols.items():
        table[f"{role}_path"] = [str(_resolve(path, p)) for p in table[col]]
    for row, record in enumerate(table.to_dict("records")):
        where = f"manifest {path}, row {row + 1}"
        try:
            text_query(record["object"])
        except HRVInputError as err:
            raise HRVInputError(f"{where}: {err}") from None
        sizes = []
        for p in (record["source_path"], record["edited_path"]):
            if not Path(p).is_file():
                raise HRVInputError(f"{where}: image {p} does not exist")
            with Image.open(p) as im:
                sizes.append(im.size)
        if sizes[0] != sizes[1]:
            raise HRVInputError(
                f"{where}: the source {record['source_path']} is {sizes[0][0]}x{sizes[0][1]} but the edited"
                f" image {record['edited_path']} is {sizes[1][0]}x{sizes[1][1]}; BG-DINO compares images of one size"
            )
    return table


def _resolve(manifest: Path, image: str) -> Path:
    """An image path of the manifest: relative to the manifest's folder unless absolute."""
    return Path(image) if Path(image).is_absolute() else manifest.parent / image


def _rgb(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def mask_name(row: int, record: dict) -> str:
    """``0003_color_p2p_hrv_7_seed10.png``: the row number, then the keys the manifest has."""
    parts = [f"{row:04d}"]
    for key in KEYS:
        if key in record and str(record[key]) != "":
            parts.append(f"seed{record[key]}" if key == "seed" else str(record[key]))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts)) + ".png"


def score_manifest(
    manifest: str | Path,
    out_dir: str | Path,
    settings: BGDinoSettings | None = None,
    scorer: BGDino | None = None,
    sets: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Score the pairs of ``manifest`` (of ``sets`` and ``methods`` when given) into ``out_dir``
    (see the module docstring); returns the scores.

    Everything is checked (manifest, images, models) before anything is written; ``out_dir`` must be
    new, empty or a previous BG-DINO output (it is replaced only when the new one is complete).
    """
    from PIL import Image

    from hrv.io import atomic_dir, check_replaceable

    table = read_manifest(manifest, sets, methods)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, "hrv score-bgdino")
    scorer = scorer or BGDino.load(settings)
    step = max(1, scorer.settings.batch_size)
    records = table.to_dict("records")
    with atomic_dir(out_dir, owner="hrv score-bgdino") as tmp:
        (tmp / "masks").mkdir()
        for start in range(0, len(records), step):  # read images batch by batch: bounded memory
            batch = records[start : start + step]
            results = scorer.score_pairs(
                [_rgb(r["source_path"]) for r in batch],
                [_rgb(r["edited_path"]) for r in batch],
                [r["object"] for r in batch],
            )
            for k, (record, result) in enumerate(zip(batch, results, strict=True)):
                name = Path("masks") / mask_name(start + k, record)
                Image.fromarray(result.mask.astype(np.uint8) * 255).save(tmp / name)
                record.update(
                    bgdino=result.bgdino,
                    fallback=result.fallback,
                    boxes_source=result.boxes_source,
                    boxes_edited=result.boxes_edited,
                    background=result.background,
                    mask=str(name),
                )
        scores = pd.DataFrame(records)
        for role in IMAGES:  # paths relative to the output folder, where scores.csv is read
            col = _image_column(scores, role)
            scores[col] = [os.path.relpath(p, out_dir.resolve()) for p in scores.pop(f"{role}_path")]
        scores.to_csv(tmp / "scores.csv", index=False)
        summarize(scores).to_csv(tmp / "summary.csv", index=False)
    return scores
