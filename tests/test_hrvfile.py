"""Normalisation (spec section 1) against plain loops, the hrv.npz contract, merge, import-official."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from hrv.errors import HRVInputError
from hrv.hrvfile import HRVSet, load_hrv, normalize
from hrv.steps import import_official, merge, merge_shards


def plain_normalize(counts):
    C, H = counts.shape
    out = np.zeros((C, H))
    p = np.zeros((C, H))
    for h in range(H):
        total = sum(counts[c, h] for c in range(C))
        for c in range(C):
            p[c, h] = counts[c, h] / total if total else 0.0
    for c in range(C):
        row = sum(p[c, h] for h in range(H))
        for h in range(H):
            out[c, h] = H * p[c, h] / row if row else 0.0
    return out


def test_normalize_matches_loops_and_properties():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(5, 12))
    counts[:, 3] = [0, 0, 7, 0, 0]  # a head that always votes concept 2
    hrv, undefined = normalize(counts)
    assert undefined == []
    np.testing.assert_allclose(hrv, plain_normalize(counts), rtol=1e-6)
    np.testing.assert_allclose(hrv.sum(axis=1), 12, rtol=1e-6)  # L1 norm H, mean 1
    assert hrv.dtype == np.float32 and (hrv >= 0).all()
    # scaling all votes of a head does not change p(c|h)
    scaled = counts.copy()
    scaled[:, 5] *= 3
    np.testing.assert_allclose(normalize(scaled)[0], hrv, rtol=1e-6)


def test_concept_without_votes_is_zero_with_warning():
    counts = np.array([[[3, 0, 1], [0, 0, 0], [1, 4, 2]]])
    with pytest.warns(UserWarning, match="no head voted for concept.*b"):
        hrv = HRVSet.from_counts(counts, ["a", "b", "c"], ["down.0/h0", "down.0/h1", "down.0/h2"])
    assert np.array_equal(hrv.hrv[1], np.zeros(3)) and np.isfinite(hrv.hrv).all()
    assert hrv.meta["undefined_concepts"] == ["b"]


def test_per_timestep_normalisation():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 9, size=(4, 3, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hrv = HRVSet.from_counts(counts, list("abc"), [f"up.0/h{i}" for i in range(6)])
    for t in range(4):
        np.testing.assert_allclose(hrv.hrv_per_timestep[t], plain_normalize(counts[t]), rtol=1e-6)
    np.testing.assert_allclose(hrv.hrv, plain_normalize(counts.sum(0)), rtol=1e-6)


def test_save_load_round_trip_and_bad_files(tmp_path):
    counts = np.arange(2 * 3 * 4).reshape(2, 3, 4) + 1
    hrv = HRVSet.from_counts(counts, ["x", "y", "z"], [f"mid.0/h{i}" for i in range(4)], {"model": "m"})
    hrv.save(tmp_path / "hrv.npz")
    back = load_hrv(tmp_path / "hrv.npz")
    assert back.concepts == ["x", "y", "z"] and back.heads == hrv.heads
    assert np.array_equal(back.hrv, hrv.hrv) and np.array_equal(back.counts, counts)
    assert back.meta["model"] == "m" and back.vector("Y").shape == (4,)
    with pytest.raises(HRVInputError, match="unknown concept 'w'"):
        back.vector("w")
    np.savez(
        tmp_path / "bad.npz",
        hrv=np.ones((3, 5)),
        concepts=np.array(["x", "y", "z"]),
        heads=np.array(["a"] * 4),
    )
    with pytest.raises(
        HRVInputError, match=r"bad.npz: 'hrv' has shape \(3, 5\), expected \(3 concepts, 4 heads\)"
    ):
        load_hrv(tmp_path / "bad.npz")
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "hrv.npz").read_bytes()[:100])
    with pytest.raises(HRVInputError, match="cannot be read"):
        load_hrv(tmp_path / "trunc.npz")
    with pytest.raises(HRVInputError, match="does not exist"):
        load_hrv(tmp_path / "none.npz")
    with pytest.raises(HRVInputError, match="4 heads .* but this model has 2 heads"):
        back.check_heads(["mid.0/h0", "mid.0/h1"])


def _shard(path, counts, indices, concepts=("x", "y"), heads=("up.0/h0", "up.0/h1"), seed=0):
    np.savez(
        path,
        counts=np.asarray(counts, np.int64),
        indices=np.asarray(indices),
        concepts=np.array(concepts),
        heads=np.array(heads),
        meta=np.array(json.dumps({"seed": seed, "sampling": {"steps": 1}})),
    )
    return path


def test_merge_sums_and_checks(tmp_path):
    a = _shard(tmp_path / "a.npz", [[[1, 0], [0, 1]]], [0, 1])
    b = _shard(tmp_path / "b.npz", [[[2, 1], [0, 1]]], [2])
    hrv = merge([a, b], tmp_path / "o/hrv.npz", tmp_path / "o/hrv.csv", tmp_path / "o/rank.csv")
    assert np.array_equal(hrv.counts, [[[3, 1], [0, 2]]]) and hrv.meta["n_prompts"] == 3
    ranking = (tmp_path / "o/rank.csv").read_text().splitlines()
    assert ranking[0] == "concept,rank,head,hrv" and ranking[1].startswith("x,1,up.0/h0")
    assert (tmp_path / "o/hrv.csv").read_text().splitlines()[0] == "concept,up.0/h0,up.0/h1"
    with pytest.raises(HRVInputError, match="prompt 1 is in both"):
        merge_shards([a, _shard(tmp_path / "c.npz", [[[1, 0], [0, 1]]], [1])])
    with pytest.raises(HRVInputError, match="does not fit the others"):
        merge_shards([a, _shard(tmp_path / "d.npz", [[[1, 0], [0, 1]]], [3], concepts=("x", "q"))])
    with pytest.raises(HRVInputError, match="leave out prompt indices"):
        merge_shards([b])
    with pytest.raises(HRVInputError, match="f.npz was computed with seed = 1, the first shard with 0"):
        merge_shards([a, _shard(tmp_path / "f.npz", [[[2, 1], [0, 1]]], [2], seed=1)])
    (tmp_path / "e.npz").write_bytes(b"PK\x03\x04 interrupted")
    with pytest.raises(HRVInputError, match="e.npz is unreadable or incomplete"):
        merge_shards([a, tmp_path / "e.npz"])


@pytest.mark.parametrize(("which", "n_heads"), [("sd14", 128), ("sdxl", 1300)])
def test_import_official_round_trip(root, tmp_path, which, n_heads):
    out = tmp_path / f"{which}.npz"
    import_official(which, out, root / "resources/reference", root / "resources/concepts/concepts_34x10.csv")
    hrv = load_hrv(out)
    raw = np.load(root / f"resources/reference/hrv_{which}_official.npy")
    names = [str(h) for h in np.load(root / f"resources/reference/head_index_{which}_official.npy")]
    assert (
        hrv.hrv.shape == (34, n_heads)
        and hrv.concepts[0] == "Animals"
        and hrv.concepts[-1] == "Geometric Patterns"
    )
    # every column lands under the project's name of the same head
    for j in (0, 7, n_heads // 2, n_heads - 1):
        section, rest = names[j].split(", layer: ")
        layer, head = rest.split(", head: ")
        k = hrv.heads.index(f"{section}.{layer}/h{head}")
        np.testing.assert_array_equal(hrv.hrv[:, k], raw[:, j])
    np.testing.assert_allclose(hrv.hrv.sum(1), n_heads, rtol=1e-3)
    if which == "sd14":
        assert hrv.hrv_per_timestep.shape == (51, 34, 128)
    from hrv.archs import meta_unet
    from hrv.heads import HeadRegistry

    hrv.check_heads(HeadRegistry.from_unet(meta_unet(which)).names())  # matches the model's heads


def test_import_official_bad_input(tmp_path):
    with pytest.raises(HRVInputError, match="unknown official HRV set"):
        import_official("sd3", tmp_path / "x.npz")
    with pytest.raises(HRVInputError, match="is missing"):
        import_official("sd14", tmp_path / "x.npz", reference_dir=tmp_path)


def test_code_version_follows_the_source(root, tmp_path):
    import shutil

    from hrv import __version__
    from hrv.workflow import code_version, source_hash

    copy = tmp_path / "hrv"
    shutil.copytree(root / "src/hrv", copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_hash(copy)
    assert before == source_hash(root / "src/hrv") and code_version() == f"{__version__}+{before}"
    (copy / "accumulate.py").write_text((copy / "accumulate.py").read_text() + "\n# edited\n")
    assert source_hash(copy) != before
