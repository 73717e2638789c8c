"""Helpers the Snakefile calls at parse time (kept here so rules stay thin and testable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hrv import __version__
from hrv.errors import HRVInputError
from hrv.prompts import read_prompts, shard_ranges


def shard_plan(hrv_cfg: dict[str, Any], root: str | Path = ".") -> list[list[tuple[int, str]]]:
    """The prompts of each shard as (prompt index, text) pairs, from the config's hrv sub-tree."""
    root = Path(root)
    prompts = read_prompts([root / p for p in hrv_cfg["prompts"]], hrv_cfg.get("max_prompts"))
    ranges = shard_ranges(
        len(prompts), hrv_cfg.get("shards"), hrv_cfg.get("shard_size"), hrv_cfg.get("batch_size", 1)
    )
    return [[(i, prompts[i]) for i in r] for r in ranges]


def source_hash(package: str | Path | None = None) -> str:
    """sha256 (12 hex digits) of the package's Python sources, in path order."""
    import hashlib

    package = Path(package) if package else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_version() -> str:
    """``<package version>+<source hash>``: goes into every rule's params, so a new release or an
    edit of the science code marks results stale (``--list-changes params`` lists them; add
    ``--rerun-triggers mtime input`` to keep results across code edits on purpose)."""
    return f"{__version__}+{source_hash()}"


# the concept list of the released HRVs (their rows), whatever concepts the run accumulates
OFFICIAL_CONCEPTS = "resources/concepts/concepts_34x10.csv"


def stage_concepts(hrv_setting: str | None, run_concepts: str | Path) -> list[str] | None:
    """The concepts of the HRVs a stage steers with: the run's own (null), the released ones (sd14,
    sdxl), or an HRV file's (None when the file is not there yet: checked when it is loaded)."""
    from hrv.concepts import read_concepts
    from hrv.config import shipped

    if hrv_setting is None:
        return list(read_concepts(run_concepts).names)
    if hrv_setting in ("sd14", "sdxl"):
        return list(read_concepts(shipped(OFFICIAL_CONCEPTS)).names)
    try:  # an HRV file: its concepts, if it can be read now (else checked when a job loads it)
        from hrv.hrvfile import load_hrv

        return list(load_hrv(hrv_setting).concepts)
    except (HRVInputError, OSError):
        return None


def switch_off_hint(stage: str, select_key: str) -> str:
    """What to do when a selected item of a stage needs a concept its HRVs lack."""
    return (
        f"select others with {stage}.{select_key}, or switch the stage off with `{stage}: {{enabled: false}}`"
        " (the HRV stage runs without it)"
    )


def check_stage_concepts(
    label: str, needs: dict[str, list[str] | str], concepts: list[str] | None, hint: str
) -> None:
    """Each selected item of a stage (``needs``: item -> the concepts it steers with) must use
    concepts the HRVs have; the error names the item, the concepts and what to do (``hint``)."""
    if concepts is None:
        return
    known = {c.lower() for c in concepts}
    for item, wanted in needs.items():
        lacking = [c for c in ([wanted] if isinstance(wanted, str) else wanted) if c.lower() not in known]
        if lacking:
            raise HRVInputError(
                f"{label} {item!r} steers with concept(s) {', '.join(lacking)}, which the HRVs lack"
                f" (they have {', '.join(concepts)}); {hint}"
            )


def check_case_concepts(cases: list, concepts: list[str] | None, hint: str) -> None:
    """Each selected polysemy case's desired and undesired concepts must be among the HRVs'."""
    needs = {case.case: [case.desired, case.undesired] for case in cases}
    check_stage_concepts("polysemy case", needs, concepts, hint)
