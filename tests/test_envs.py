"""Every rule has a conda env in envs/ that parses, is pinned and agrees with pyproject.toml.

No conda is reachable here, so the envs are checked statically: channels, version ranges equal to
pyproject.toml's (conda names mapped to PyPI names), the CUDA build of PyTorch stated, and the
post-deploy script that installs hrv itself.

On Python 3.10 the env files are checked too (tomli stands in for tomllib); the two checks of the
parsed rules need Snakemake, whose versions this workflow needs (>= 8.20) require Python >= 3.11, so
the workflow and ``make test`` need Python 3.11 or later.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers_workflow import ROOT, workflow_rules
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (pyproject.toml's dev extra)
    import tomli as tomllib

# conda-forge name -> PyPI name, where they differ
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "pytorch-cpu": "torch",
    "open-clip-torch": "open_clip_torch",
    "matplotlib-base": "matplotlib",
}
CONDA_ONLY = {"pip", "cuda-version", "git"}  # no PyPI counterpart in pyproject.toml


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return workflow_rules(ROOT)


@pytest.fixture(scope="module")
def pyproject_ranges() -> dict[str, SpecifierSet]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    ranges = {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in reqs}
    ranges["python"] = SpecifierSet(project["requires-python"])
    return ranges


def _parse_conda_dep(dep: str) -> tuple[str, SpecifierSet]:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep.strip())
    assert m, f"cannot parse conda dependency {dep!r}"
    return m.group(1), SpecifierSet(m.group(2).replace(" ", ""))


def _env_files() -> list[Path]:
    return sorted((ROOT / "envs").glob("*.yaml"))


def test_every_rule_has_an_existing_env_file(rules):
    runnable = [r for r in rules if not r["norun"]]
    assert len(runnable) >= 5
    for r in runnable:
        assert r["conda"], f"rule {r['name']} has no conda: env"
        path = (Path(r["basedir"]) / r["conda"]).resolve()
        assert path.parent == ROOT / "envs", f"rule {r['name']}: env {path} is not in envs/"
        assert path.is_file(), f"rule {r['name']}: env file {path} does not exist"
        assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_gpu_rules_get_a_cuda_build(rules):
    for r in rules:
        if r["gpu"]:
            env = yaml.safe_load((Path(r["basedir"]) / r["conda"]).read_text())
            names = {_parse_conda_dep(d)[0] for d in env["dependencies"] if isinstance(d, str)}
            assert "pytorch-gpu" in names, f"GPU rule {r['name']} uses an env without pytorch-gpu"


@pytest.mark.parametrize("env_file", _env_files(), ids=lambda p: p.name)
def test_env_file_is_pinned_and_agrees_with_pyproject(env_file, pyproject_ranges):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    seen: set[str] = set()
    deps = env["dependencies"]
    for dep in deps:
        if isinstance(dep, dict):  # the pip: sub-list, PyPI requirements
            for req in dep["pip"]:
                assert not req.lstrip().startswith("-e"), (
                    f"{env_file.name}: relative pip paths break (the env file is copied to"
                    " .snakemake/conda/); install hrv in the post-deploy script"
                )
                r = Requirement(req)
                name = canonicalize_name(r.name)
                assert name in pyproject_ranges, (
                    f"{env_file.name}: pip package {r.name} is not in pyproject.toml"
                )
                assert r.specifier == pyproject_ranges[name], f"{env_file.name}: {req} vs pyproject"
                seen.add(name)
            continue
        name, spec = _parse_conda_dep(dep)
        if name == "pip":
            continue
        assert spec, f"{env_file.name}: {name} has no version range"
        assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), (
            f"{env_file.name}: {dep} has no upper bound"
        )
        if name in CONDA_ONLY:
            continue
        pypi = "python" if name == "python" else canonicalize_name(CONDA_TO_PYPI.get(name, name))
        assert pypi in pyproject_ranges, f"{env_file.name}: {name} (PyPI {pypi}) is not in pyproject.toml"
        assert spec == pyproject_ranges[pypi], (
            f"{env_file.name}: {dep} disagrees with pyproject.toml's {pypi}{pyproject_ranges[pypi]}"
        )
        assert pypi not in seen, f"{env_file.name}: {pypi} listed twice"
        seen.add(pypi)
    assert "python" in seen
    names = {_parse_conda_dep(d)[0] for d in deps if isinstance(d, str)}
    if "pytorch-gpu" in names:  # the CUDA build is stated, not left to the solver
        assert "cuda-version" in names, f"{env_file.name}: pytorch-gpu without a cuda-version pin"
    assert not {"pytorch-gpu", "pytorch-cpu"} <= names


@pytest.mark.parametrize("env_file", _env_files(), ids=lambda p: p.name)
def test_post_deploy_script_installs_hrv_from_the_checkout(env_file):
    script = env_file.with_name(env_file.stem + ".post-deploy.sh")
    assert script.is_file(), f"{script.name} is missing: the env would lack the hrv package"
    text = script.read_text()
    assert text.startswith("#!") and "pip install --no-deps -e" in text
    assert '$(dirname "$0")/..' in text  # the checkout, wherever Snakemake runs the script from
