"""BG-DINO over a manifest of edited pairs: scores, masks and the per-(set, method) table.

The manifest is a CSV with one row per edited image. Required columns: ``source`` and ``edited``
(image paths, relative to the manifest's folder unless absolute) and ``object`` (the edited
object's noun). Optional: ``set``, ``method``, ``pair``, ``seed`` (they name the masks and group the
table); any other column is carried into the scores. The editing stage writes such a manifest;
a user can write one by hand for a folder of images.

Output folder (written beside its final name, renamed when complete):
``scores.csv`` (the manifest's rows with ``bgdino``, ``fallback``, ``boxes_source``,
``boxes_edited``, ``background`` and ``mask``), ``summary.csv`` (per set and method: mean, se, n,
fallback) and ``masks/*.png`` (white = the object pixels that were zeroed in both images).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hrv.errors import HRVInputError
from hrv.scores.bgdino import BGDino, BGDinoSettings, text_query

REQUIRED = ("source", "edited", "object")
KEYS = ("set", "method", "pair", "seed")  # optional: name the masks, group the summary


def resolve(manifest: str | Path, image: str) -> Path:
    """An image path of the manifest: relative to the manifest's folder unless absolute."""
    return Path(image) if Path(image).is_absolute() else Path(manifest).parent / image


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest's rows, after checking every pair: the columns, the nouns, that each image
    exists and that a pair's two images have one size."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise HRVInputError(f"manifest {path} does not exist; give a CSV with columns {', '.join(REQUIRED)}")
    table = pd.read_csv(path, dtype={"object": str, "source": str, "edited": str}, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise HRVInputError(
            f"manifest {path} lacks the column(s) {', '.join(missing)}; it needs {', '.join(REQUIRED)}"
            f" (and optionally {', '.join(KEYS)})"
        )
    if table.empty:
        raise HRVInputError(f"manifest {path} has no rows")
    for row, record in enumerate(table.to_dict("records")):
        where = f"manifest {path}, row {row + 1}"
        try:
            text_query(record["object"])
        except HRVInputError as err:
            raise HRVInputError(f"{where}: {err}") from None
        src, edt = resolve(path, record["source"]), resolve(path, record["edited"])
        sizes = []
        for p in (src, edt):
            if not Path(p).is_file():
                raise HRVInputError(f"{where}: image {p} does not exist")
            with Image.open(p) as im:
                sizes.append(im.size)
        if sizes[0] != sizes[1]:
            raise HRVInputError(
                f"{where}: the source {src} is {sizes[0][0]}x{sizes[0][1]} but the edited image {edt} is"
                f" {sizes[1][0]}x{sizes[1][1]}; BG-DINO compares images of one size"
            )
    return table


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def mask_name(row: int, record: dict) -> str:
    """``0003_color_p2p-hrv_7_seed10.png``: the row number, then the keys the manifest has."""
    parts = [f"{row:04d}"]
    for key in KEYS:
        if key in record and str(record[key]) != "":
            parts.append(f"seed{record[key]}" if key == "seed" else str(record[key]))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts)) + ".png"


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (set, method), as far as the columns exist: mean and standard error of the finite scores,
    their number n, how many pairs fell back to the whole image and how many had no background."""
    keys = [k for k in ("set", "method") if k in scores.columns]
    groups = scores.groupby(keys, sort=False) if keys else [((), scores)]
    rows = []
    for key, g in groups:
        finite = g["bgdino"].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        n = len(finite)
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                "mean": float(finite.mean()) if n else float("nan"),
                "se": float(finite.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                "n": n,
                "fallback": int(g["fallback"].sum()),
                "no_background": int((g["background"] == 0).sum()),
            }
        )
    return pd.DataFrame(rows)


def score_manifest(
    manifest: str | Path,
    out_dir: str | Path,
    settings: BGDinoSettings | None = None,
    scorer: BGDino | None = None,
) -> pd.DataFrame:
    """Score every pair of ``manifest`` into ``out_dir`` (see the module docstring); returns the scores.

    Everything is checked (manifest, images, models) before anything is written; ``out_dir`` must be
    new, empty or a previous BG-DINO output (it is replaced only when the new one is complete).
    """
    from PIL import Image

    from hrv.io import atomic_dir

    table = read_manifest(manifest)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "scores.csv").is_file():
        raise HRVInputError(
            f"output folder {out_dir} exists and is not a BG-DINO output; give a new folder with --out"
        )
    scorer = scorer or BGDino.load(settings)
    step = max(1, scorer.settings.batch_size)
    records = table.to_dict("records")
    with atomic_dir(out_dir) as tmp:
        (tmp / "masks").mkdir()
        for start in range(0, len(records), step):  # read images batch by batch: bounded memory
            batch = records[start : start + step]
            results = scorer.score_pairs(
                [_rgb(resolve(manifest, r["source"])) for r in batch],
                [_rgb(resolve(manifest, r["edited"])) for r in batch],
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
        scores.to_csv(tmp / "scores.csv", index=False)
        summarize(scores).to_csv(tmp / "summary.csv", index=False)
    return scores
