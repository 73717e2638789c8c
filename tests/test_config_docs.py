"""config/README.md documents every key the schema accepts and every key of the model presets, and
documents no key that does not exist (a renamed key must not leave stale documentation behind)."""

from __future__ import annotations

import re

import yaml


def _sections(text: str) -> dict[str, str]:
    """README sections by name: "## `hrv` (...)" -> "hrv", "## Top level" -> "top"."""
    sections, name = {}, "top"
    for line in text.splitlines():
        header = re.match(r"^## (?:`([^`]+)`|(.+))", line)
        if header:
            name = header.group(1) or ("top" if header.group(2).strip() == "Top level" else header.group(2))
            sections[name] = ""
        else:
            sections[name] = sections.get(name, "") + line + "\n"
    return sections


def _table_keys(section: str) -> set[str]:
    """The keys named in the first column of a section's tables (`a`, `b` cells give both)."""
    keys = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and line.startswith("|"):
            keys |= set(re.findall(r"`([^`]+)`", cells[1]))
    return keys


def _expected(schema: dict, sections: set[str]) -> dict[str, set[str]]:
    """Which keys each README section must document: the top table has the top-level keys that are
    not objects with keys of their own; each such object has its section ("hrv"), or each of its
    objects has one ("plots" -> "plots.heatmap")."""
    top = schema["properties"]
    expected: dict[str, set[str]] = {"top": set()}
    for name, node in top.items():
        props = node.get("properties") if isinstance(node, dict) else None
        if not props:
            expected["top"].add(name)
        elif name in sections:
            expected[name] = set(props)
        else:
            for sub, sub_node in props.items():
                expected[f"{name}.{sub}"] = set(sub_node.get("properties", {}))
    return expected


def test_every_schema_key_is_documented_and_no_documented_key_is_stale(root):
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())
    sections = _sections((root / "config/README.md").read_text())
    problems = []
    for name, keys in _expected(schema, set(sections)).items():
        if name not in sections:
            problems.append(f"config/README.md has no section `{name}`")
            continue
        documented = _table_keys(sections[name])
        problems += [
            f"`{name}`: `{k}` is in the schema but not documented" for k in sorted(keys - documented)
        ]
        problems += [
            f"`{name}`: `{k}` is documented but not in the schema" for k in sorted(documented - keys)
        ]
    assert not problems, "\n".join(problems)


def test_every_model_preset_key_is_documented(root):
    sections = _sections((root / "config/README.md").read_text())
    presets = next(text for name, text in sections.items() if name.startswith("Model presets"))
    documented = _table_keys(presets)
    for path in sorted((root / "config/model").glob("*.yaml")):
        keys = set(yaml.safe_load(path.read_text()))
        assert keys <= documented, f"{path.name}: undocumented preset keys {sorted(keys - documented)}"
        assert keys, path
