"""The README's Python examples run as written, on the tiny model, from a fresh folder that holds
what a checkout holds (``resources/``, with the tiny model built)."""

from __future__ import annotations

import re

import numpy as np


def test_readme_python_examples_run_as_written(root, tiny_model_dir, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    resources = tmp_path / "resources"
    (resources / "models").mkdir(parents=True)
    for name in ("concepts", "prompts", "reference"):
        (resources / name).symlink_to(root / "resources" / name)
    (resources / "models/tiny").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})  # each block on its own

    from hrv.hrvfile import load_hrv

    hrv = load_hrv("my_hrv.npz")  # the counts became an HRV file
    assert hrv.counts.shape == (6, 34, 128) and hrv.counts.sum() == 4 * 6 * 128
    assert np.allclose(hrv.hrv.sum(axis=1)[hrv.hrv.sum(axis=1) > 0], 128, rtol=1e-4)
    assert (tmp_path / "out/lavender/grid.png").is_file()
    assert any((tmp_path / "out/blue-red").iterdir())
