"""Scalars are never coerced: a value must already have its field's type in YAML."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from convoy.policy import PolicyError, load_policy


def _load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_policy(path)
    except PolicyError as exc:
        return [f"{d.path}: {d.message}" for d in exc.diagnostics if d.severity == "error"]
    return []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("rollout: {maxParallel: yes}", "rollout.maxParallel: expected an integer, got true"),
        ("rollout: {maxParallel: true}", "rollout.maxParallel: expected an integer, got true"),
        ("rollout: {maxParallel: 2.0}", "rollout.maxParallel: expected an integer, got 2.0"),
        ("rollout: {maxParallel: '2'}", "rollout.maxParallel: expected an integer, got '2'"),
        (
            'rollout: {progressDeadlineSeconds: "300"}',
            "rollout.progressDeadlineSeconds: expected an integer, got '300'",
        ),
        (
            "rollout: {progressDeadlineSeconds: 3e2}",
            "rollout.progressDeadlineSeconds: expected an integer, got '3e2'",
        ),
        ("alerts: {deadlineMinutes: 1.0}", "alerts.deadlineMinutes: expected an integer, got 1.0"),
        (
            "approval: {timeoutMinutes: false}",
            "approval.timeoutMinutes: expected an integer, got false",
        ),
        ("rollback: {automatic: 0}", "rollback.automatic: expected true or false, got 0"),
        ("rollback: {automatic: 'no'}", "rollback.automatic: expected true or false, got 'no'"),
        ("approval: {required: 'true'}", "approval.required: expected true or false, got 'true'"),
        ("startDate: 0", "startDate: expected a date (YYYY-MM-DD), got 0"),
        ("startDate: 1.5", "startDate: expected a date (YYYY-MM-DD), got 1.5"),
        ("startDate: true", "startDate: expected a date (YYYY-MM-DD), got true"),
        ("schedule: 5", "schedule: expected a string, got 5"),
        (
            "metadata: {name: minimal, owner: !!binary b3duZXI=}",
            "metadata.owner: expected a string, got binary data (!!binary)",
        ),
    ],
)
def test_values_of_another_type_are_refused(
    tmp_path: Path, minimal_text: str, extra: str, expected: str
) -> None:
    text = minimal_text
    if extra.startswith("metadata:"):
        text = text.replace("metadata:\n  name: minimal\n", "")
    assert _load(tmp_path, text + extra + "\n") == [expected]


def test_in_cluster_accepts_only_booleans(tmp_path: Path, minimal_text: str) -> None:
    text = minimal_text.replace("  namespace: default\n", "  namespace: default\n  inCluster: 1\n")
    assert _load(tmp_path, text) == ["kubernetes.inCluster: expected true or false, got 1"]


@pytest.mark.parametrize(
    ("extra", "field", "value"),
    [
        # YAML itself reads these as integers, booleans and dates: nothing is coerced.
        ("rollout: {maxParallel: 0x10}", "max_parallel", 16),
        ("rollback: {automatic: no}", "automatic", False),
        ("rollback: {automatic: off}", "automatic", False),
        ("startDate: 2026-03-01", "start_date", dt.date(2026, 3, 1)),
        ("startDate: '2026-03-01'", "start_date", dt.date(2026, 3, 1)),
    ],
)
def test_values_yaml_already_types_are_accepted(
    tmp_path: Path, minimal_text: str, extra: str, field: str, value: object
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(minimal_text + extra + "\n", encoding="utf-8")
    policy = load_policy(path).policy
    section = {"max_parallel": policy.rollout, "automatic": policy.rollback}.get(field, policy)
    assert getattr(section, field) == value


def test_a_quoted_boolean_is_not_read_as_true_by_the_semantic_checks(
    tmp_path: Path, minimal_text: str
) -> None:
    # approval.required: "yes" is one type error, not also "approvers missing".
    assert _load(tmp_path, minimal_text + "approval: {required: 'yes'}\n") == [
        "approval.required: expected true or false, got 'yes'"
    ]
