"""The `convoy` command line: exit codes, output, never a traceback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from convoy.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, main

GOOD = """\
apiVersion: convoy/v1
kind: UpgradePolicy
metadata:
  name: cli-test
kubernetes:
  namespace: shop
  runnerImage: registry.example.com/convoy:0.1.0
services:
  - name: redis
    workload: {kind: StatefulSet, name: redis-cart}
    containers: {redis: "redis:7.4-alpine"}
  - name: cart
    workload: {kind: Deployment, name: cartservice}
    containers: {server: registry.example.com/cart:2.4.0}
    dependsOn: [redis]
"""

BAD = GOOD.replace("dependsOn: [redis]", "dependsOn: [rediss]")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_validate_good(good: Path) -> None:
    code, out, _ = run("validate", str(good))
    assert code == EXIT_OK
    assert "ok (cli-test: 2 services, 0 datastores)" in out


def test_validate_bad_names_file_line_and_field(bad: Path) -> None:
    code, _, err = run("validate", str(bad))
    assert code == EXIT_INVALID
    assert f"{bad}:15:" in err
    assert "services[1].dependsOn[0]" in err
    assert "did you mean 'redis'" in err


def test_validate_directory_reports_every_file(good: Path, bad: Path) -> None:
    code, out, err = run("validate", str(good.parent))
    assert code == EXIT_INVALID
    assert "good.yaml: ok" in out
    assert "bad.yaml: invalid (1 error)" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["validate"], ["validate", "/nonexistent/policy.yaml"], ["render"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    code, _, err = run(*argv)
    assert code == EXIT_USAGE
    assert "Traceback" not in err


def test_plan_json_is_deterministic(good: Path) -> None:
    first = run("plan", str(good), "--json")
    second = run("plan", str(good), "--json")
    assert first[0] == EXIT_OK
    assert first[1] == second[1]
    assert json.loads(first[1])["digest"]


def test_plan_unknown_service_subset_is_usage_error(good: Path) -> None:
    code, _, err = run("plan", str(good), "--services", "nope")
    assert code == EXIT_USAGE
    assert "nope" in err


def test_plan_of_bad_policy_exits_1(bad: Path) -> None:
    code, _, err = run("plan", str(bad))
    assert code == EXIT_INVALID
    assert "rediss" in err


def test_schema_is_json_schema() -> None:
    code, out, _ = run("schema")
    assert code == EXIT_OK
    schema = json.loads(out)
    assert "$schema" in schema
    assert "apiVersion" in json.dumps(schema)


def test_render_rbac_is_yaml(good: Path) -> None:
    code, out, _ = run("render", "rbac", str(good))
    assert code == EXIT_OK
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out) if doc]
    assert {"ServiceAccount", "Role", "RoleBinding"} <= set(kinds)


def test_render_rbac_status_is_the_read_only_role(good: Path) -> None:
    code, out, _ = run("render", "rbac", str(good), "--status")
    assert code == EXIT_OK
    role, binding = yaml.safe_load_all(out)
    assert role["kind"] == "Role"
    assert role["metadata"]["namespace"] == "shop"
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["list"]}
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "convoy-airflow-worker", "namespace": "convoy"}
    ]


def test_render_rbac_status_subjects(good: Path) -> None:
    code, out, _ = run(
        "render", "rbac", str(good), "--status", "--serviceaccount", "ops:status-reader",
        "--user", "alice@example.com", "--group", "sre",
    )  # fmt: skip
    assert code == EXIT_OK
    binding = list(yaml.safe_load_all(out))[1]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "status-reader", "namespace": "ops"},
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice@example.com"},
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "sre"},
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "alice"], "need --status"),
        (["--status", "--serviceaccount", "status-reader"], "expected NAMESPACE:NAME"),
        (["--status", "--serviceaccount", "Ops:reader"], "not a valid DNS-1123 label"),
        (["--status", "--group", " "], "--group: empty name"),
    ],
)
def test_render_rbac_status_usage_errors(good: Path, argv: list[str], message: str) -> None:
    code, out, err = run("render", "rbac", str(good), *argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert message in err


def test_console_script_never_shows_a_traceback(bad: Path) -> None:
    convoy = Path(sys.executable).with_name("convoy")
    result = subprocess.run([str(convoy), "validate", str(bad)], capture_output=True, text=True)
    assert result.returncode == EXIT_INVALID
    assert "Traceback" not in result.stderr
    assert "unknown service 'rediss'" in result.stderr


def test_report_prints_a_stored_report(tmp_path: Path) -> None:
    from convoy.observe.report import build_report, write_report

    report = build_report(
        policy_name="cli-test",
        digest="abc",
        run_id="manual__2026-01-01T00:00:00+00:00",
        triggered_by="ops",
        dry_run=False,
        started=None,
        finished=None,
        final_state="success",
    )
    md, html = write_report(report, tmp_path)
    code, out, _ = run("report", report.run_id, "--reports-dir", str(tmp_path))
    assert code == EXIT_OK
    assert out == md.read_text()
    code, out, _ = run("report", report.run_id, "--reports-dir", str(tmp_path), "--html", "--path")
    assert code == EXIT_OK
    assert out.strip() == str(html)


def test_report_of_unknown_run_exits_1(tmp_path: Path) -> None:
    code, _, err = run("report", "nope", "--reports-dir", str(tmp_path))
    assert code == EXIT_INVALID
    assert "nope" in err
