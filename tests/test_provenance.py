"""The reproducibility record: hashes, git state, cached hub revision, devices of the jobs."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np

from hrv.provenance import collect, git_state, model_identity, package_versions, write_provenance


def _shard(path: Path, device: str, dtype: str) -> Path:
    np.savez(path, counts=np.zeros((2, 3)), meta=np.array(json.dumps({"device": device, "dtype": dtype})))
    return path


def test_local_model_files_are_hashed(tmp_path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    files = {"model_index.json": b'{"a": 1}', "unet/weights.bin": bytes(range(256)) * 5000}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    ident = model_identity(str(folder))
    assert ident["kind"] == "folder"
    assert ident["files"] == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    # relative sources resolve against the run's working directory
    assert model_identity("model", root=tmp_path)["files"] == ident["files"]


def test_hub_model_records_the_cached_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--model"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    ident = model_identity("org/model", root=tmp_path / "elsewhere")
    assert ident == {"source": "org/model", "kind": "hub", "revision": revision}
    missing = model_identity("org/absent", root=tmp_path)
    assert missing["revision"] is None and "not in the local Hugging Face cache" in missing["note"]


def test_git_state_sees_commit_and_uncommitted_changes(tmp_path):
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = git("rev-parse", "HEAD")
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f.txt").write_text("b")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}
    assert git_state(tmp_path.parent / "nogit-" / "x")["commit"] is None


def test_record_holds_config_versions_and_job_devices(tmp_path):
    import numpy

    shards = [
        _shard(tmp_path / "a.npz", "cuda:0", "torch.float16"),
        _shard(tmp_path / "b.npz", "cpu", "torch.float32"),
    ]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x").write_text("1")
    config = {"run": "demo", "device": "auto", "dtype": "auto", "hrv": {"shard_size": 2}}
    record = collect(config, model_source=str(tmp_path / "m"), shard_files=shards, code_folder=tmp_path)
    out = write_provenance(tmp_path / "out" / "provenance.json", record)
    back = json.loads(out.read_text())
    assert back["config"] == config
    assert back["packages"]["numpy"] == numpy.__version__
    assert back["runtime"]["accumulation"] == {
        "devices": ["cpu", "cuda:0"],
        "dtypes": ["torch.float16", "torch.float32"],
    }
    assert back["model"]["files"] == {"x": hashlib.sha256(b"1").hexdigest()}
    assert package_versions(["surely-not-installed-pkg"])["surely-not-installed-pkg"] is None
