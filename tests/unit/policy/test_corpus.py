"""The policy corpus: every good policy loads; every bad one gives exactly its expected lines.

Set CONVOY_REGEN_EXPECTED=1 to rewrite the .expected files after an intended
message change, then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convoy.policy import PolicyError, format_diagnostics, load_policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
GOOD = sorted((POLICIES / "good").glob("*.yaml"))
BAD = sorted((POLICIES / "bad").glob("*.yaml"))


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 35
    assert all(p.with_suffix(".expected").exists() for p in BAD)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_policy_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path.parent)
    loaded = load_policy(path.name)
    assert loaded.warnings == ()
    assert loaded.policy.metadata.name


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_policy_diagnostics(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path.parent)
    expected_file = path.with_suffix(".expected")
    try:
        loaded = load_policy(path.name)
    except PolicyError as exc:
        actual = format_diagnostics(exc.diagnostics)
    else:
        actual = format_diagnostics(loaded.warnings)
    if os.environ.get("CONVOY_REGEN_EXPECTED"):
        expected_file.write_text(actual + "\n", encoding="utf-8")
    assert actual == expected_file.read_text(encoding="utf-8").rstrip("\n")
