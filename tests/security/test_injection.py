"""Policy strings cannot inject into pod arguments or SQL identifiers.

- The loader rejects service, workload, container and image strings carrying
  shell metacharacters or spaces, and SQL identifiers that are not plain names,
  with a diagnostic naming file, line and field.
- Rollout pods get their target as separate argv items of an exec-form command
  (``python -m convoy.rollout``): no shell ever parses a policy string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from convoy.policy import PolicyError, load_policy

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "convoy_policies.py"
SHELL_META = set(";&|`$()<>\\\"' \t\n*?[]{}!#~")

BASE: dict[str, Any] = {
    "apiVersion": "convoy/v1",
    "kind": "UpgradePolicy",
    "metadata": {"name": "inject"},
    "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
    "services": [
        {
            "name": "cart",
            "workload": {"kind": "Deployment", "name": "cartservice"},
            "containers": {"server": "registry.example.com/cart:2.4.0"},
        }
    ],
}


def _errors(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    path = tmp_path / "inject.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return [str(d) for d in info.value.diagnostics if d.severity == "error"]


def _with_service(**changes: Any) -> dict[str, Any]:
    svc = {**BASE["services"][0], **changes}
    return {**BASE, "services": [svc]}


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        (_with_service(name="cart; rm -rf /"), "services[0].name", "cart; rm -rf /"),
        (_with_service(name="cart --dry-run"), "services[0].name", "cart --dry-run"),
        (
            _with_service(workload={"kind": "Deployment", "name": "cart $(id)"}),
            "services[0].workload.name",
            "cart $(id)",
        ),
        (
            _with_service(workload={"kind": "Deployment", "name": "cart`id`"}),
            "services[0].workload.name",
            "cart`id`",
        ),
        (
            _with_service(containers={"server": "registry.example.com/cart:2.4.0 && curl x"}),
            "services[0].containers.server",
            "registry.example.com/cart:2.4.0 && curl x",
        ),
        (
            _with_service(containers={"server": "registry.example.com/cart:2.4.0|nc"}),
            "services[0].containers.server",
            "registry.example.com/cart:2.4.0|nc",
        ),
        (
            _with_service(containers={"server --privileged": "registry.example.com/cart:2.4.0"}),
            'services[0].containers["server --privileged"]',
            "server --privileged",
        ),
        (
            {**BASE, "kubernetes": {**BASE["kubernetes"], "namespace": "shop;id"}},
            "kubernetes.namespace",
            "shop;id",
        ),
        (
            {**BASE, "kubernetes": {**BASE["kubernetes"], "runnerImage": "r.example.com/c:1 sh"}},
            "kubernetes.runnerImage",
            "r.example.com/c:1 sh",
        ),
    ],
)
def test_loader_rejects_shell_metacharacters(
    tmp_path: Path, data: dict[str, Any], field: str, value: str
) -> None:
    errors = _errors(tmp_path, data)
    matching = [e for e in errors if f": {field}: " in e and value in e]
    assert matching, errors
    assert matching[0].startswith(f"{tmp_path / 'inject.yaml'}:")


POSTGRES: dict[str, Any] = {
    "name": "orders",
    "type": "postgres",
    "connId": "orders_db",
    "backup": "snapshot",
    "transforms": [{"name": "backfill", "table": "public.orders", "key": "id", "set": {"a": "1"}}],
}


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"table": "orders; DROP TABLE x"}, "table", "orders; DROP TABLE x"),
        ({"table": 'public."orders"'}, "table", 'public."orders"'),
        ({"table": "public.orders WHERE 1=1"}, "table", "public.orders WHERE 1=1"),
        ({"key": "id; DROP TABLE y"}, "key", "id; DROP TABLE y"),
        ({"set": {"status = 'x'; --": "1"}}, "set[\"status = 'x'; --\"]", "status = 'x'; --"),
    ],
)
def test_sql_identifiers_are_refused_at_load_time(
    tmp_path: Path, change: dict[str, Any], field: str, value: str
) -> None:
    transform = {**POSTGRES["transforms"][0], **change}
    data = {**BASE, "datastores": [{**POSTGRES, "transforms": [transform]}]}
    errors = _errors(tmp_path, data)
    assert any(f"datastores[0].transforms[0].{field}: " in e and value in e for e in errors), errors


def test_snapshot_and_validation_tables_are_refused_at_load_time(tmp_path: Path) -> None:
    ds = {
        **POSTGRES,
        "snapshotTables": ["orders; DROP TABLE x"],
        "validation": [
            {
                "table": "orders;--",
                "expectations": [{"expect_column_values_to_not_be_null": {"column": "status"}}],
            }
        ],
    }
    errors = _errors(tmp_path, {**BASE, "datastores": [ds]})
    assert any("datastores[0].snapshotTables[0]: " in e for e in errors), errors
    assert any("datastores[0].validation[0].table: " in e for e in errors), errors


def test_expectation_columns_are_refused_at_load_time(tmp_path: Path) -> None:
    ds = {
        **POSTGRES,
        "validation": [
            {
                "table": "public.orders",
                "expectations": [
                    {"expect_column_values_to_not_be_null": {"column": 'status"; DROP TABLE x; --'}}
                ],
            }
        ],
    }
    errors = _errors(tmp_path, {**BASE, "datastores": [ds]})
    assert any("expectations" in e for e in errors), errors


# --------------------------------------------------------------------------- pod arguments


def test_rollout_pods_get_argv_lists_without_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from convoy.airflow.pods import BASE_COMMAND, RolloutPodOperator

    data = yaml.safe_load((REPO / "dags" / "policies" / "demo.yaml").read_text())
    data.pop("datastores", None)
    root = tmp_path / "policies"
    root.mkdir()
    (root / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["shop-demo"]
    pods = [t for t in dag.tasks if isinstance(t, RolloutPodOperator)]
    assert len(pods) == 2 * len(data["services"])  # apply and revert of each service

    by_service = {s["name"]: s for s in data["services"]}
    for op in pods:
        assert op.cmds == BASE_COMMAND == ["python", "-m", "convoy.rollout"]
        assert isinstance(op.arguments, list)
        assert all(isinstance(a, str) for a in op.arguments)
        assert not {"sh", "bash", "/bin/sh", "-c"} & set(op.cmds + op.arguments)
        svc = by_service[op.service]
        args = op.arguments
        # every policy value is one whole argv item right after its flag
        assert args[args.index("--namespace") + 1] == data["kubernetes"]["namespace"]
        assert args[args.index("--kind") + 1] == svc["workload"]["kind"]
        assert args[args.index("--name") + 1] == svc["workload"]["name"]
        if args[0] == "apply":
            pairs = [args[i + 1] for i, a in enumerate(args) if a == "--container"]
            assert pairs == [f"{c}={i}" for c, i in sorted(svc["containers"].items())]
        for arg in args:
            if arg != "{{ run_id }}":  # Airflow's run id, rendered by Airflow itself
                assert not SHELL_META & set(arg), arg
