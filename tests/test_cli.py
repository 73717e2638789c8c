"""The `hrv` command line: the steps without Snakemake, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrv.cli import main
from hrv.hrvfile import load_hrv


def test_accumulate_merge_heatmap(tiny_model_dir, root, tmp_path, capsys):
    prompts = str(root / "resources/prompts/imagenet_1000.txt")
    common = [
        "--model",
        str(tiny_model_dir),
        "--prompts",
        prompts,
        "--max-prompts",
        "3",
        "--shards",
        "2",
        "--steps",
        "2",
        "--height",
        "64",
        "--width",
        "64",
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    for k in (0, 1):
        assert (
            main(
                [
                    "accumulate",
                    *common,
                    "--shard",
                    str(k),
                    "--batch-size",
                    "2",
                    "--out",
                    str(tmp_path / f"s{k}.npz"),
                ]
            )
            == 0
        )
    assert (
        main(["merge", str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz"), "--out", str(tmp_path / "hrv")])
        == 0
    )
    hrv = load_hrv(tmp_path / "hrv/hrv.npz")
    assert hrv.counts.sum() == 3 * 3 * 128 and hrv.hrv.shape == (34, 128)
    assert main(["heatmap", str(tmp_path / "hrv/hrv.npz"), "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    # an existing file is replaced only with --overwrite (a PNG does not say who wrote it)
    (tmp_path / "mine.png").write_bytes(b"my figure")
    assert main(["heatmap", str(tmp_path / "hrv/hrv.npz"), "--out", str(tmp_path / "mine.png")]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "mine.png").read_bytes() == b"my figure"
    assert (
        main(["heatmap", str(tmp_path / "hrv/hrv.npz"), "--out", str(tmp_path / "mine.png"), "--overwrite"])
        == 0
    )
    assert (tmp_path / "mine.png").read_bytes()[:4] == b"\x89PNG"
    # merge replaces an earlier merge's folder, not a folder of someone else's CSVs
    shards = [str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz")]
    assert main(["merge", *shards, "--out", str(tmp_path / "hrv")]) == 0
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/hrv.csv").write_text("my,table\n")
    assert main(["merge", *shards, "--out", str(tmp_path / "notes")]) == 2
    assert (tmp_path / "notes/hrv.csv").read_text() == "my,table\n" and not (
        tmp_path / "notes/hrv.npz"
    ).exists()
    # one shard with the same prompts gives the same counts
    assert (
        main(
            [
                "accumulate",
                *common[:-10],
                "--shards",
                "1",
                "--steps",
                "2",
                "--height",
                "64",
                "--width",
                "64",
                "--max-prompts",
                "3",
                "--out",
                str(tmp_path / "all.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "all.npz") as z:
        assert np.array_equal(z["counts"], hrv.counts)


def test_heads_lists_layers(tiny_model_dir, capsys):
    assert main(["heads", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert (
        "16 cross-attention layers, 128 heads" in out and "down.0\t8 heads\tdown_blocks.0.attentions.0" in out
    )


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["heatmap", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hrv heatmap: error: HRV file") and "Traceback" not in err
    assert (
        main(
            [
                "accumulate",
                "--model",
                str(tmp_path / "nope"),
                "--prompts",
                str(tmp_path / "p.txt"),
                "--out",
                "x",
            ]
        )
        == 2
    )
    assert "prompt file" in capsys.readouterr().err


def test_import_official_cli(root, tmp_path):
    assert (
        main(
            [
                "import-official",
                "sd14",
                "--out",
                str(tmp_path / "o.npz"),
                "--reference-dir",
                str(root / "resources/reference"),
                "--concepts",
                str(root / "resources/concepts/concepts_34x10.csv"),
            ]
        )
        == 0
    )
    assert load_hrv(tmp_path / "o.npz").heads[-1] == "up.8/h7"


def test_config_prints_resolved(root, capsys):
    assert main(["config", str(root / "config/config.yaml"), str(root / "config/paper.yaml")]) == 0
    out = capsys.readouterr().out
    assert '"source": "CompVis/stable-diffusion-v1-4"' in out and '"steps": 50' in out
    # nested keys merge as Snakemake merges --configfile overlays: the demo's hrv keys the paper's
    # overlay leaves alone stay, the ones it sets win
    hrv = json.loads(out)["hrv"]
    assert hrv["shard_size"] == 100 and hrv["batch_size"] == 10 and hrv["shards"] == 3  # 3: the demo's
    assert hrv["concepts"] == "resources/concepts/concepts_34x10.csv" and hrv["max_prompts"] is None


def test_unknown_command_exits(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2  # argparse's usage error, not a success
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_shard_size_picks_whole_batches_and_rejects_a_ragged_size(tiny_model_dir, root, tmp_path, capsys):
    args = [
        "accumulate",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(root / "resources/prompts/imagenet_1000.txt"),
        "--max-prompts",
        "5",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--height",
        "32",
        "--width",
        "32",
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    # shards of 4 prompts: the second holds prompts 4.. (the workflow's hrv.shard_size)
    assert main([*args, "--shard-size", "4", "--shard", "1", "--out", str(tmp_path / "s1.npz")]) == 0
    with np.load(tmp_path / "s1.npz") as z:
        assert z["indices"].tolist() == [4]
    assert main([*args, "--shard-size", "3", "--out", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert "not a multiple of hrv.batch_size" in err and not (tmp_path / "bad.npz").exists()


def test_help_explains_every_option(capsys):
    import argparse

    from hrv.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in sub.choices.items():
        undescribed = [
            a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)
        ]
        assert not undescribed, f"hrv {command}: options without help: {undescribed}"
    with pytest.raises(SystemExit) as exit_:
        main(["accumulate", "--help"])
    assert exit_.value.code == 0
    assert "(default: 1)" in capsys.readouterr().out  # defaults are shown
