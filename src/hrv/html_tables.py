"""Small standalone HTML tables for the report (one page, one table, no external style)."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hrv.io import write_text_atomic

STYLE = "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #999;padding:4px 8px}"


def page(title: str, header: str, rows: str) -> str:
    """A page with ``title`` and one table; ``header`` (the ``<th>`` cells) and ``rows`` (the
    ``<tr>`` elements) are HTML, escaped by the caller."""
    t = html.escape(title)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{t}</title><style>{STYLE}</style>"
        f"</head><body><h3>{t}</h3><table><tr>{header}</tr>{rows}</table></body></html>\n"
    )


def _text(value: Any) -> str:
    return str(value)


def table_page(table: pd.DataFrame, title: str, fmt: Callable[[Any], str] = _text) -> str:
    """``table`` as a page: a column per column, a row per row, each value written by ``fmt``."""
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False)
    )
    return page(title, header, rows)


def write_table_html(
    table: pd.DataFrame, out: str | Path, title: str, fmt: Callable[[Any], str] = _text
) -> Path:
    """Write ``table_page(table, title, fmt)`` to ``out`` atomically."""
    write_text_atomic(out, table_page(table, title, fmt))
    return Path(out)
