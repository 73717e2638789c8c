"""Bad input gets a clear error naming the input and what to do."""

from __future__ import annotations

import pytest

from hrv.concepts import read_concepts
from hrv.config import resolve, resolve_model, validate
from hrv.errors import HRVInputError
from hrv.models import load_pipeline
from hrv.prompts import read_prompts, shard_ranges


def test_concept_csv_errors(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("concept,words\nColor,red\n")
    with pytest.raises(HRVInputError, match=r"c.csv lacks column\(s\) word"):
        read_concepts(f)
    f.write_text("concept,word\nColor,red\nShape,\n")
    with pytest.raises(HRVInputError, match="Shape have no words"):
        read_concepts(f)
    f.write_text("concept,word\n,red\n")
    with pytest.raises(HRVInputError, match="line 2: empty concept name"):
        read_concepts(f)
    f.write_text("concept,word\n")
    with pytest.raises(HRVInputError, match="has no concepts"):
        read_concepts(f)
    with pytest.raises(HRVInputError, match="does not exist"):
        read_concepts(tmp_path / "missing.csv")
    f.write_text("concept,word\nColor,red\nShape,circle\nColor,blue\n")
    cs = read_concepts(f)
    assert cs.names == ("Color", "Shape") and cs.words[0] == ("red", "blue")
    with pytest.raises(HRVInputError, match="unknown concept 'Size'; known concepts: Color, Shape"):
        cs.index("Size")


def test_prompt_errors_and_shards(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(HRVInputError, match="empty.txt is empty"):
        read_prompts([empty])
    with pytest.raises(HRVInputError, match="does not exist"):
        read_prompts([tmp_path / "nope.txt"])
    f = tmp_path / "p.txt"
    f.write_text("a\nb\n\nc\n")
    assert read_prompts([f, f], max_prompts=4) == ["a", "b", "c", "a"]
    with pytest.raises(HRVInputError, match="hrv.shards = 5 is larger than the number of prompts \\(3\\)"):
        shard_ranges(3, shards=5)
    assert [list(r) for r in shard_ranges(7, shards=3)] == [[0, 1, 2], [3, 4], [5, 6]]
    # fixed-size shards: appending prompts leaves the earlier shards unchanged
    assert shard_ranges(7, shard_size=3)[:2] == shard_ranges(9, shard_size=3)[:2]
    assert [len(r) for r in shard_ranges(7, shard_size=3)] == [3, 3, 1]


def test_shards_are_made_of_whole_batches():
    """Prompt i always runs in the batch [i // b * b, +b), however many shards: on a GPU the batch's
    composition (not only its size) can change a prompt's rounding."""
    for n in range(1, 24):
        for b in range(1, 6):
            batches = -(-n // b)
            for shards in range(1, batches + 1):
                ranges = shard_ranges(n, shards=shards, batch_size=b)
                assert len(ranges) == shards and all(len(r) for r in ranges)
                assert [i for r in ranges for i in r] == list(range(n))
                assert all(r.start % b == 0 for r in ranges)
                sizes = [-(-len(r) // b) for r in ranges]  # batches per shard: nearly equal
                assert max(sizes) - min(sizes) <= 1
    assert [list(r) for r in shard_ranges(10, shards=3, batch_size=4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(
        HRVInputError,
        match=r"hrv.shards = 4 is larger than the number of batches \(10 prompts in batches of 4: 3\); set hrv.shards to at most 3",
    ):
        shard_ranges(10, shards=4, batch_size=4)
    with pytest.raises(
        HRVInputError,
        match=r"hrv.shard_size = 10 is not a multiple of hrv.batch_size = 4; make it one \(e.g. 12\)",
    ):
        shard_ranges(30, shard_size=10, batch_size=4)
    assert [len(r) for r in shard_ranges(30, shard_size=12, batch_size=4)] == [12, 12, 6]


def test_model_errors(tmp_path):
    with pytest.raises(HRVInputError, match="model folder .*/nothing-here does not exist"):
        load_pipeline(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HRVInputError, match="has no model_index.json"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(HRVInputError) as err:
        load_pipeline("someone/unknown-model")
    # one line naming the command of the installed huggingface_hub (``hf`` since 0.34)
    import huggingface_hub

    major, minor = map(int, huggingface_hub.__version__.split(".")[:2])
    command = "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"
    assert f"`{command} someone/unknown-model`" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(
        HRVInputError, match="unknown model preset 'sd99'; presets: sd14, sd15, sd21, sdxl, tiny"
    ):
        resolve_model("sd99")


def test_presets_compose_with_hydra():
    spec = resolve_model("sdxl")
    assert spec["source"] == "stabilityai/stable-diffusion-xl-base-1.0" and spec["weakening_k"][-1] == 1300
    assert resolve_model("tiny")["build"] == "tiny"
    assert resolve_model("org/model")["source"] == "org/model"


def test_schema_names_the_bad_key(root):
    import yaml

    cfg = yaml.safe_load((root / "config/config.yaml").read_text())
    cfg["hrv"]["shards"] = "three"
    with pytest.raises(HRVInputError, match="config key hrv.shards: 'three' is not of type 'integer'"):
        validate(resolve(cfg), root / "workflow/schemas/config.schema.yaml")
    cfg["hrv"]["shards"] = 3
    cfg["hrv"]["batch_invariant"] = "yes"
    with pytest.raises(HRVInputError, match="config key hrv.batch_invariant: 'yes' is not one of"):
        validate(resolve(cfg), root / "workflow/schemas/config.schema.yaml")
    cfg["hrv"]["batch_invariant"] = "strict"
    assert (
        validate(resolve(cfg), root / "workflow/schemas/config.schema.yaml")["hrv"]["batch_invariant"]
        == "strict"
    )
    cfg = {"run": "x", "model": "tiny", "sampling": {"steps": 4, "stepz": 3}}
    with pytest.raises(HRVInputError, match="stepz"):
        validate(resolve(cfg), root / "workflow/schemas/config.schema.yaml")
    ok = validate(resolve({"run": "x", "model": "tiny"}), root / "workflow/schemas/config.schema.yaml")
    assert ok["hrv"]["batch_size"] == 1 and ok["sampling"]["steps"] == 10  # defaults filled in


def test_a_shard_interrupted_while_it_is_written_leaves_the_old_file(
    tiny_model_dir, root, tmp_path, monkeypatch
):
    """The real writer (``numpy.savez``) of a re-run is stopped from inside, after it has written some
    arrays: the shard's final name keeps the previous complete file, and no temporary is left."""
    import numpy as np
    import numpy.lib.format

    from hrv.steps import run_shard

    out = tmp_path / "shards/shard_000.npz"
    kwargs = dict(seed=0, sampling={"steps": 1, "guidance_scale": 7.5, "height": 32, "width": 32})
    concepts = root / "resources/concepts/concepts_34x10.csv"
    real_write, written = numpy.lib.format.write_array, []

    def write_then_die(fp, array, *args, **kw):
        if len(written) == 2:  # counts and indices are in the file: the job is killed here
            raise KeyboardInterrupt
        written.append(array.shape)
        return real_write(fp, array, *args, **kw)

    run_shard(str(tiny_model_dir), concepts, [(0, "a cat")], out, **kwargs)
    complete = out.read_bytes()
    monkeypatch.setattr(numpy.lib.format, "write_array", write_then_die)
    with pytest.raises(KeyboardInterrupt):  # a re-run killed while writing keeps the finished shard
        run_shard(str(tiny_model_dir), concepts, [(0, "a cat")], out, **kwargs)
    assert len(written) == 2  # the save was under way
    assert out.read_bytes() == complete and list(out.parent.iterdir()) == [out]
    with np.load(out) as z:
        assert z["counts"].shape == (1, 34, 128) and z["counts"].sum() == 128 and z["indices"].tolist() == [0]


def test_atomic_path_keeps_nothing_on_error(tmp_path):
    from hrv.io import atomic_path

    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done" and oct(target.stat().st_mode & 0o777) != "0o600"
