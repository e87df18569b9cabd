from __future__ import annotations

import os
from pathlib import Path

import pytest

from convoy.policy import (
    Diagnostic,
    PolicyError,
    discover_policies,
    format_diagnostics,
    load_policy,
)


def _load_error(path: Path | str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return [str(d) for d in info.value.diagnostics]


def test_full_example_loads_with_migrations(policies_dir: Path) -> None:
    loaded = load_policy(policies_dir / "good" / "full.yaml")
    policy = loaded.policy
    assert policy.metadata.name == "shop-2-4"
    assert policy.services[0].depends_on == ("redis",)
    assert policy.datastores[0].after == ("cart",)
    assert policy.datastores[1].after is None
    assert policy.execution == "kubernetes"
    assert [m.name for m in loaded.migrations["orders"]] == [
        "V1__create_orders",
        "U1__create_orders",
        "V2__add_status",
        "U2__add_status",
        "V2.1__index_status",
        "U2.1__index_status",
    ]
    assert [m.has_down for m in loaded.migrations["catalog"]] == [True, True]
    assert len(loaded.source_sha256) == 64
    assert loaded.base_dir == policies_dir / "good"


def test_warnings_do_not_fail_and_are_kept(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(minimal_text.replace("nginx:1.27", "nginx:latest"), encoding="utf-8")
    loaded = load_policy(path)
    assert [(w.severity, w.path, w.line) for w in loaded.warnings] == [
        ("warning", "services[0].containers.web", 11)
    ]


def test_error_lists_warnings_too(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    text = minimal_text.replace("nginx:1.27", "nginx:latest").replace("name: web\n", "name: Web\n")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert [d.severity for d in info.value.diagnostics] == ["error", "warning"]


def test_snake_case_keys_are_unknown_in_yaml(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(minimal_text + "rollout: {max_parallel: 2}\n", encoding="utf-8")
    assert _load_error(path) == [
        f"{path}:12:11: rollout.max_parallel: unknown field 'max_parallel' "
        "(did you mean 'maxParallel'?)"
    ]


@pytest.mark.parametrize("mode", ["kubernetes", "local"])
def test_execution_mode(tmp_path: Path, minimal_text: str, mode: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(minimal_text + f"execution: {mode}\n", encoding="utf-8")
    assert load_policy(path).policy.execution == mode


def test_missing_file(tmp_path: Path) -> None:
    assert _load_error(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}:1:1: file not found"]


def test_directory_given(tmp_path: Path) -> None:
    assert _load_error(tmp_path) == [f"{tmp_path}:1:1: is a directory, not a policy file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_unreadable_file(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(minimal_text, encoding="utf-8")
    path.chmod(0)
    assert _load_error(path) == [f"{path}:1:1: cannot read file: Permission denied"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"a: 1\nb: \xff\n")
    assert _load_error(path) == [f"{path}:2:4: file is not valid UTF-8 (byte 0xff)"]


def test_utf8_bom_is_accepted(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + minimal_text.encode())
    assert load_policy(path).policy.metadata.name == "minimal"


def test_relative_path_is_reported_as_given(
    tmp_path: Path, minimal_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.yaml").write_text(minimal_text.replace("default", "Default"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert _load_error("p.yaml")[0].startswith("p.yaml:6:14: kubernetes.namespace: ")


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ("5", "expected a list or a mapping, got 5"),
        ("[1]", "update[0]: expected a mapping, got 1"),
    ],
)
def test_union_errors_are_merged(
    tmp_path: Path, minimal_text: str, update: str, expected: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        minimal_text
        + "datastores:\n  - {name: c, type: mongo, connId: m, database: d, backup: snapshot,\n"
        + f"     transforms: [{{name: t, collection: u, update: {update}}}]}}\n",
        encoding="utf-8",
    )
    (message,) = _load_error(path)
    assert message.endswith(expected)


def test_known_expectations_hook(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        minimal_text
        + "datastores:\n  - name: o\n    type: postgres\n    connId: o\n    validation:\n"
        + "      - table: t\n        expectations:\n"
        + "          - expect_column_values_to_not_be_nul: {column: a}\n",
        encoding="utf-8",
    )
    expected = (
        "unknown expectation type 'expect_column_values_to_not_be_nul' "
        "(did you mean 'expect_column_values_to_not_be_null'?)"
    )
    # The built-in catalogue of Great Expectations types catches it by default...
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.diagnostics[0].message == expected
    # ...and a caller-supplied list of known types takes its place.
    with pytest.raises(PolicyError) as info:
        load_policy(path, known_expectations={"expect_column_values_to_not_be_null"})
    assert info.value.diagnostics[0].message == expected


def test_discover_policies(tmp_path: Path) -> None:
    for name in ["b.yaml", "a.yml", "_draft.yaml", ".hidden.yaml", "notes.txt"]:
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "dir.yaml").mkdir()
    assert discover_policies(tmp_path) == [tmp_path / "a.yml", tmp_path / "b.yaml"]
    assert discover_policies(tmp_path / "missing") == []


def test_format_diagnostics_sorts_and_dedupes() -> None:
    a = Diagnostic("p.yaml", 2, 1, "x", "second")
    b = Diagnostic("p.yaml", 1, 5, "", "first", "warning")
    assert format_diagnostics([a, b, a]) == ("p.yaml:1:5: warning: first\np.yaml:2:1: x: second")


def test_approval_defaults_and_values(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(minimal_text, encoding="utf-8")
    approval = load_policy(path).policy.approval
    assert (approval.required, approval.approvers, approval.timeout_minutes) == (False, (), 60)
    path.write_text(
        minimal_text + "approval: {required: true, approvers: [alice, ops@example.com]}\n",
        encoding="utf-8",
    )
    approval = load_policy(path).policy.approval
    assert approval.required
    assert approval.approvers == ("alice", "ops@example.com")
    assert approval.timeout_minutes == 60
