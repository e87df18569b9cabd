"""Whatever shape a field has, loading reports diagnostics and never raises anything else."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from convoy.policy import Diagnostic, PolicyError, load_policy
from convoy.policy.source import parse_yaml

REPLACEMENTS: list[Any] = [None, "x", [1], {"a": 1}, True]


def _diagnostics(path: Path) -> list[Diagnostic]:
    """Errors and warnings of a policy; only PolicyError may escape the loader."""
    try:
        return list(load_policy(path).warnings)
    except PolicyError as exc:
        return exc.diagnostics


def _set(data: Any, path: tuple[str | int, ...], value: Any) -> None:
    for elem in path[:-1]:
        data = data[elem]
    data[path[-1]] = value


def test_every_field_with_every_shape_gives_diagnostics(policies_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(policies_dir / "good", tmp_path, dirs_exist_ok=True)
    source = (tmp_path / "full.yaml").read_text(encoding="utf-8")
    doc, _ = parse_yaml(source, "full.yaml")
    assert doc is not None
    target = tmp_path / "mutated.yaml"
    for path in [p for p in doc.values if p]:
        for value in REPLACEMENTS:
            data = copy.deepcopy(doc.data)
            _set(data, path, value)
            target.write_text(yaml.safe_dump(data), encoding="utf-8")
            diagnostics = _diagnostics(target)
            assert all(d.line >= 1 and d.column >= 1 for d in diagnostics), (path, value)


@pytest.mark.parametrize(
    "text",
    ["42\n", "'just a string'\n", "null\n", "[]\n", "{}\n", "apiVersion: [\n", "\x00\n"],
)
def test_odd_documents(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.diagnostics


def test_absurd_nesting_is_a_diagnostic(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.diagnostics
