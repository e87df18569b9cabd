"""The plan frozen at preflight is the run's contract (``convoy.plan.record``), end to end.

``dag.test()`` against the real embedded PostgreSQL and the emulated cluster.
Right after ``preflight`` has stored the run record, the test edits the policy
as someone merging a change mid-run would: another ``set`` for the transform,
another image for a service, one datastore removed, a migration file rewritten
and a new one added. The run must end with the data and images the *original*
plan describes, and its report must say it executed the frozen plan and name
every file that changed since, with both digests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from e2e_helpers import images, load_dag, states

pytestmark = pytest.mark.e2e

PREVIOUS = "2.3.0"
V1 = "ALTER TABLE public.orders ADD COLUMN status text;\n"
U1 = "ALTER TABLE public.orders DROP COLUMN status;\n"
V1_EDITED = "ALTER TABLE public.orders ADD COLUMN status text, ADD COLUMN tampered int;\n"
V2_ADDED = "CREATE TABLE public.not_in_the_plan (id int);\n"
ORIGINAL_SET = "CASE WHEN id % 2 = 0 THEN 'open' ELSE 'shipped' END"


def _policy() -> dict[str, Any]:
    def datastore(name: str, conn_id: str) -> dict[str, Any]:
        return {
            "name": name, "type": "postgres", "connId": conn_id, "after": ["redis"],
            "backup": "snapshot", "migrations": f"migrations/{name}",
            "transforms": [{"name": "fill-status", "table": "public.orders", "key": "id",
                            "batchSize": 100, "where": "status IS NULL",
                            "set": {"status": ORIGINAL_SET}}],
        }  # fmt: skip

    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": "pg-frozen", "owner": "platform"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        "rollout": {"maxParallel": 2, "progressDeadlineSeconds": 10},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": {"redis": "registry.example.com/redis:2.4.0"}},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": {"server": "registry.example.com/cart:2.4.0"},
             "dependsOn": ["redis"]},
        ],
        "datastores": [datastore("orders", "orders_db"), datastore("ledger", "ledger_db")],
    }  # fmt: skip


def _seed(uri: str, rows: int) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, amount int)")
        conn.execute(
            "INSERT INTO public.orders SELECT g, g %% 97 FROM generate_series(1, %s) g", (rows,)
        )


def _statuses(uri: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1").fetchall()


def _columns(uri: str, table: str) -> list[str]:
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
            " ORDER BY ordinal_position",
            (table,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def _history(uri: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri) as conn:
        return conn.execute(
            "SELECT version, checksum FROM convoy.schema_history WHERE kind = 'V' ORDER BY rank"
        ).fetchall()


def _edit_after_preflight(path: Path) -> Callable[[], None]:
    """What a merge in the middle of the run changes in the policy's directory."""

    def edit() -> None:
        data = yaml.safe_load(path.read_text())
        orders = data["datastores"][0]
        orders["transforms"][0]["set"] = {"status": "'edited'"}
        data["datastores"] = [orders]  # ledger removed
        data["services"][1]["containers"] = {"server": "registry.example.com/cart:9.9.9"}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        migrations = path.parent / "migrations" / "orders"
        (migrations / "V1__status.sql").write_text(V1_EDITED)
        (migrations / "V2__extra.sql").write_text(V2_ADDED)

    return edit


def test_policy_and_migrations_edited_after_preflight_change_nothing_in_the_run(
    cluster: Any,
    pg_database: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "policies"
    for name in ("orders", "ledger"):
        (root / "migrations" / name).mkdir(parents=True)
        (root / "migrations" / name / "V1__status.sql").write_text(V1)
        (root / "migrations" / name / "U1__status.sql").write_text(U1)
    path = root / "pg-frozen.yaml"
    path.write_text(yaml.safe_dump(_policy(), sort_keys=False))
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    monkeypatch.setenv("CONVOY_MAX_PARTITIONS", "2")
    monkeypatch.setenv("CONVOY_RUNS_DIR", str(tmp_path / "runs"))
    orders, ledger = pg_database("orders_db"), pg_database("ledger_db")
    _seed(orders, 600)
    _seed(ledger, 300)
    from convoy.policy import load_policy

    original = load_policy(path)
    cluster.seed_from_policy(original.policy, previous_tag=PREVIOUS)

    dag = load_dag("pg-frozen")
    preflight = dag.get_task("preflight")
    run_preflight = preflight.python_callable
    edit = _edit_after_preflight(path)

    def preflight_then_edit(**kwargs: Any) -> Any:
        result = run_preflight(**kwargs)
        edit()
        return result

    preflight.python_callable = preflight_then_edit
    run = dag.test()
    got = states(run)

    # The run went on, every stage of both datastores included (ledger is gone
    # from the policy file, not from the run's plan).
    assert run.state == "success", got
    for ds in ("orders", "ledger"):
        assert got[f"datastore_{ds}.migrate"] == "success", got
        assert got[f"datastore_{ds}.transform_fill-status_0"] == "success", got
    # The original set, not 'edited'.
    assert _statuses(orders) == [("open", 300), ("shipped", 300)]
    assert _statuses(ledger) == [("open", 150), ("shipped", 150)]
    # The frozen V1 ran (no `tampered` column); the V2 added meanwhile did not.
    assert _columns(orders, "orders") == ["id", "amount", "status"]
    assert _columns(orders, "not_in_the_plan") == []
    assert _history(orders) == [("1", hashlib.sha256(V1.encode()).hexdigest())]
    # Images of the original plan.
    assert images(cluster, original.policy) == {
        s.name: dict(s.containers) for s in original.policy.services
    }

    # The report says what ran and what changed since preflight, with both digests.
    report_ti = next(t for t in run.get_task_instances() if t.task_id == "report")
    summary = report_ti.xcom_pull(task_ids="report")
    note = summary["plan"]
    assert note.startswith("executed as frozen at preflight (run record ")
    before = hashlib.sha256(V1.encode()).hexdigest()[:12]
    after = hashlib.sha256(V1_EDITED.encode()).hexdigest()[:12]
    assert f"migrations/orders/V1__status.sql: sha256 {before} at preflight, {after} now" in note
    assert "migrations/orders/V2__extra.sql: sha256 (absent) at preflight" in note
    policy_now = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert (
        f"pg-frozen.yaml: sha256 {original.source_sha256[:12]} at preflight, {policy_now} now"
        in note
    )
    markdown = Path(summary["reportMd"]).read_text()
    assert "| Plan | executed as frozen at preflight" in markdown
    assert "V1\\_\\_status.sql" in markdown or "V1__status.sql" in markdown
    written = json.loads(Path(summary["reportMd"]).with_name("report.json").read_text())
    assert written["plan"] == note
