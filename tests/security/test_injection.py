"""Policy strings cannot inject into pod arguments, SQL identifiers or SQL statements.

- The loader rejects service, workload, container and image strings carrying
  shell metacharacters or spaces, and SQL identifiers that are not plain names,
  with a diagnostic naming file, line and field.
- A transform's ``where`` and ``set`` values must each parse (PostgreSQL's own
  parser) as exactly one expression of the statement convoy builds around it:
  a second statement, a parenthesis closing that statement, an added clause or
  a data-modifying statement is refused at load time with file, line, column
  and field, and again by the engine at run time.
- Rollout pods get their target as separate argv items of an exec-form command
  (``python -m convoy.rollout``): no shell ever parses a policy string.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from convoy.policy import PolicyError, load_policy
from convoy.policy.sql_expressions import expression_problem

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

    from convoy.airflow.pods import BASE_COMMAND, PodStepOperator

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
    pods = [t.pod_runner() for t in dag.tasks if isinstance(t, PodStepOperator)]
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


# --------------------------------------------------------------------------- SQL expressions

WHERE_ESCAPES = [
    ("id <= 2) OR (TRUE", "closes a parenthesis"),
    ("status IS NULL); DROP TABLE orders; SELECT (1", "closes a parenthesis"),
    ("TRUE; CREATE TABLE pwned (x int)", "not several statements"),
    ("TRUE;", "not several statements"),
    ("status IS NULL ORDER BY id", "ORDER BY"),
    ("FALSE UNION SELECT 1 FROM pg_authid WHERE TRUE", "UNION"),
    ("TRUE LIMIT 1", "LIMIT"),
    ("TRUE OFFSET 5", "OFFSET"),
    ("TRUE FOR UPDATE", "FOR UPDATE"),
    ("TRUE GROUP BY id", "GROUP BY"),
    ("TRUE WINDOW w AS ()", "WINDOW"),
    ("id > $1", "'$n' parameters"),
    ("(WITH g AS (DELETE FROM audit RETURNING 1) SELECT TRUE)", "DELETE"),
    ("EXISTS (WITH g AS (INSERT INTO audit VALUES (1) RETURNING 1) SELECT 1 FROM g)", "INSERT"),
    ("TRUE /* hides the rest", "unterminated /* comment"),
    ("status = 'open", "unterminated quoted string"),
    ("(status IS NULL", "incomplete expression"),
    ("", "must not be empty"),
    ("TRUE) OR (TRUE /* {{ x }} */", "closes a parenthesis"),
    ("TRUE) OR (id = {{ data_interval_start }}", "closes a parenthesis"),
    ("$$x$$ = 'x') OR (TRUE", "closes a parenthesis"),
]


@pytest.mark.parametrize(("where", "why"), WHERE_ESCAPES, ids=[w for w, _ in WHERE_ESCAPES])
def test_where_that_is_not_one_expression_is_refused_at_load_time(
    tmp_path: Path, where: str, why: str
) -> None:
    transform = {**POSTGRES["transforms"][0], "where": where}
    data = {**BASE, "datastores": [{**POSTGRES, "transforms": [transform]}]}
    errors = _errors(tmp_path, data)
    field = "datastores[0].transforms[0].where: "
    matching = [e for e in errors if field in e and why in e]
    assert matching, errors
    # file:line:col of the expression itself
    assert re.match(rf"{re.escape(str(tmp_path / 'inject.yaml'))}:\d+:\d+: ", matching[0])


SET_ESCAPES = [
    ("'x'), other = ('y'", "closes a parenthesis"),
    ("'x'); DROP TABLE orders; SELECT ('y'", "closes a parenthesis"),
    ("1; DELETE FROM orders", "not several statements"),
    ("1, 2", "not a list"),
    ("1 AS status", "without an alias"),
    ("*", "'*' is not a value"),
    ("max(id) FROM orders", "FROM"),
    ("1 WHERE FALSE", "WHERE"),
    ("(SELECT 'a') UNION SELECT 'b'", "UNION"),
    ("(WITH x AS (UPDATE orders SET status = 'x' RETURNING 1) SELECT 'y')", "UPDATE"),
    ("$1", "'$n' parameters"),
    ("", "must not be empty"),
]


@pytest.mark.parametrize(("value", "why"), SET_ESCAPES, ids=[v for v, _ in SET_ESCAPES])
def test_set_value_that_is_not_one_expression_is_refused_at_load_time(
    tmp_path: Path, value: str, why: str
) -> None:
    transform = {**POSTGRES["transforms"][0], "set": {"status": value}}
    data = {**BASE, "datastores": [{**POSTGRES, "transforms": [transform]}]}
    errors = _errors(tmp_path, data)
    assert any("datastores[0].transforms[0].set.status: " in e and why in e for e in errors), errors


def test_expression_position_points_into_the_expression() -> None:
    problem = expression_problem("id <= 2) OR (TRUE", "where")
    assert problem is not None
    assert problem.offset == 7
    multi = "status IS NULL\n  AND id < 10)\nOR (TRUE"
    problem = expression_problem(multi, "where")
    assert problem is not None
    assert problem.located(multi).endswith("(at line 2, column 14 of the expression)")
    # the offset maps back across a data-interval placeholder
    text = "created_at >= {{ data_interval_start }} AND id > $3"
    problem = expression_problem(text, "where")
    assert problem is not None
    assert text[problem.offset or 0 :] == "$3"


@pytest.mark.parametrize(
    "where",
    [
        "status IS NULL",
        "created_at >= {{ data_interval_start }} AND created_at < {{data_interval_end}}",
        "EXISTS (SELECT 1 FROM items i WHERE i.order_id = orders.id)",
        "note = 'a) OR (TRUE; DROP TABLE x'",
        "note = $$ ); DROP TABLE x; $$",
        "status IS NULL -- a trailing comment",
        "status IS NULL /* ) ; */ AND id > 0",
        "id IN (1, 2, 3) AND note LIKE 'x%'",
        "status IS NULL\n  AND (id < 10\n       OR id > 20)",
    ],
)
def test_one_expression_is_accepted(tmp_path: Path, where: str) -> None:
    transform = {**POSTGRES["transforms"][0], "where": where, "set": {"status": "'open'"}}
    data = {**BASE, "datastores": [{**POSTGRES, "transforms": [transform]}]}
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    loaded = load_policy(path)
    assert loaded.policy.datastores[0].transforms[0].where == where  # type: ignore[union-attr]


def _transform(**fields: Any) -> Any:
    from convoy.policy.models import SqlTransform

    return SqlTransform.model_validate(
        {"name": "t", "table": "orders", "key": "id", "set": {"status": "'x'"}, **fields}
    )


def test_engine_refuses_what_the_loader_refuses() -> None:
    """A model built without the loader (a stale plan record) is checked again at run time."""
    from convoy.engines.errors import UnsafeExpression
    from convoy.engines.postgres.transform import compile_spec

    with pytest.raises(UnsafeExpression, match=r"transforms\[t\]\.where: .*closes a parenthesis"):
        compile_spec(_transform(where="id <= 2) OR (TRUE"))
    with pytest.raises(UnsafeExpression, match=r"set\.status: .*several statements"):
        compile_spec(_transform(set={"status": "'x'; DROP TABLE orders"}))


def test_engine_binds_the_data_interval_and_ends_each_expression_with_a_newline() -> None:
    from convoy.engines.postgres.transform import compile_spec

    spec = compile_spec(
        _transform(
            where="created_at >= {{ data_interval_start }} AND note LIKE 'a%' -- same day",
            set={"status": "'open' -- a comment"},
        )
    )
    assert spec.where == ("created_at >= %(data_interval_start)s AND note LIKE 'a%%' -- same day\n")
    assert spec.set_ == (("status", "'open' -- a comment\n"),)
    assert spec.params == ("data_interval_start",)


@pytest.mark.integration
def test_a_trailing_comment_cannot_swallow_the_rest_of_the_statement(
    postgres_server: Any, tmp_path: Path
) -> None:
    """Against PostgreSQL: the comment ends at the newline convoy adds, the update stays bounded."""
    import psycopg
    from psycopg import sql

    from convoy.engines.base import RunContext
    from convoy.engines.postgres import PostgresConfig, PostgresEngine
    from convoy.plan.specs import datastore_spec
    from convoy.policy.models import PostgresDatastore

    admin = postgres_server.get_uri()
    db = "convoy_injection_test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    uri = postgres_server.get_uri(db)
    try:
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text)")
            conn.execute("INSERT INTO orders SELECT g, NULL FROM generate_series(1, 50) g")
        ds = PostgresDatastore.model_validate(
            {
                "name": "orders",
                "type": "postgres",
                "connId": "orders_db",
                "transforms": [
                    {
                        "name": "first-ten",
                        "table": "orders",
                        "key": "id",
                        "batchSize": 7,
                        "where": "id <= 10 -- only the first ten",
                        "set": {"status": "'done' -- the new status"},
                    }
                ],
            }
        )
        ctx = RunContext(
            policy_name="inject", run_id="r1", datastore=datastore_spec(ds), base_dir=tmp_path
        )
        result = PostgresEngine(uri, PostgresConfig(progress_interval_s=0)).transform(
            ctx, "first-ten"
        )
        assert result.rows_done == 10
        with psycopg.connect(uri) as conn:
            rows = conn.execute("SELECT count(*) FROM orders WHERE status = 'done'").fetchone()
            assert rows == (10,)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
