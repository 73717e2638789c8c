"""The report's small HTML tables: every cell and the title escaped, values written by fmt."""

from __future__ import annotations

import pandas as pd

from hrv.html_tables import write_table_html


def test_table_cells_and_title_are_escaped_and_formatted(tmp_path):
    table = pd.DataFrame({"method": ["p2p<b>", "a & b"], "score": [0.12345, 2.0]})
    out = write_table_html(
        table, tmp_path / "t.html", "CLIP <tiny>", lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)
    )
    doc = out.read_text(encoding="utf-8")
    assert doc.count("<title>CLIP &lt;tiny&gt;</title>") == 1 and "<h3>CLIP &lt;tiny&gt;</h3>" in doc
    assert "<tr><th>method</th><th>score</th></tr>" in doc
    assert "<tr><td>p2p&lt;b&gt;</td><td>0.12</td></tr><tr><td>a &amp; b</td><td>2.00</td></tr>" in doc
    assert "<b>" not in doc and list(tmp_path.iterdir()) == [out]  # no temporary file left
