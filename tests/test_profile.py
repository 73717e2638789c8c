"""profiles/slurm fits the rules: GPU rules ask for GPUs, the cheap rules stay on the submit node.

Kept true for rules added later: a new GPU rule without a set-resources entry, or a new CPU rule
that is not a localrule, fails here.
"""

from __future__ import annotations

import pytest
import yaml
from helpers_workflow import ROOT, workflow_rules

SITE_KEYS = {"slurm_partition", "slurm_account", "runtime", "gres", "gpu_model", "qos"}


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return [r for r in workflow_rules(ROOT) if not r["norun"]]


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())


def test_profile_uses_the_slurm_executor_and_sets_site_defaults(profile):
    assert profile["executor"] == "slurm"
    defaults = profile["default-resources"]
    assert {"slurm_partition", "runtime", "mem_mb"} <= set(defaults)
    assert not {"gpu", "gres", "gpu_model"} & set(defaults), "CPU jobs must not ask for GPUs"
    assert "resources" not in profile  # no global gpu=1 cap: SLURM schedules the GPUs


def test_gpu_rules_ask_slurm_for_a_gpu(rules, profile):
    gpu_rules = [r["name"] for r in rules if r["gpu"]]
    assert "hrv_shard" in gpu_rules
    set_resources = profile["set-resources"]
    for name in gpu_rules:
        res = set_resources.get(name)
        assert res, f"GPU rule {name} has no set-resources entry in profiles/slurm"
        assert res.get("gpu", 0) >= 1 or "gpu" in str(res.get("gres", "")), f"{name} asks for no GPU"
        assert res.get("slurm_partition"), f"{name} has no GPU partition"
    for name, res in set_resources.items():
        assert name in {r["name"] for r in rules}, f"profiles/slurm names an unknown rule {name}"
        if name not in gpu_rules:
            assert not res.get("gpu") and "gpu" not in str(res.get("gres", "")), (
                f"CPU rule {name} asks for a GPU"
            )


def test_cheap_rules_are_localrules_and_gpu_rules_are_not(rules, profile):
    """A CPU rule is either cheap (a localrule) or sized for the cluster in set-resources."""
    sized = set(profile["set-resources"])
    for r in rules:
        if r["gpu"]:
            assert not r["local"], f"GPU rule {r['name']} must go to the cluster"
        else:
            assert r["local"] != (r["name"] in sized), (
                f"CPU rule {r['name']}: list it in a `localrules:` directive (cheap) or give it a"
                " set-resources entry in profiles/slurm (a CPU cluster job), not both"
            )
    assert {"hrv_merge", "hrv_heatmap", "provenance"} <= {r["name"] for r in rules if r["local"]}


def test_site_settings_live_in_the_profile_not_in_the_rules(rules):
    for r in rules:
        assert not SITE_KEYS & set(r["resources"]), f"rule {r['name']} sets {SITE_KEYS & set(r['resources'])}"
