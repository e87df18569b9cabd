"""``airflow dags test POLICY -c '{"dry_run": true}'`` changes nothing in the database.

The policy's datastore has a backup, migrations, validation and two
transforms: one ordinary, one whose ``where`` calls a function that creates a
table, inserts a row and draws from a sequence. The whole database (every
schema, convoy's included, relations, functions, triggers, sequence
positions, roles) is compared before and after; the hostile transform's
partitioning is refused and reported, so the run ends failed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from db_state import database_state, differences
from e2e_helpers import AIRFLOW

pytestmark = pytest.mark.e2e

DAG_ID = "pg-dry-cli"
SETUP = """
CREATE TABLE public.orders (id bigint PRIMARY KEY, amount int NOT NULL, status text);
INSERT INTO public.orders SELECT g, g % 97, NULL FROM generate_series(1, 600) g;
CREATE SEQUENCE public.canary_seq;
CREATE FUNCTION public.hostile() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  CREATE TABLE IF NOT EXISTS public.pwned (x int);
  INSERT INTO public.pwned VALUES (nextval('public.canary_seq'));
  RETURN true;
END $$;
"""


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": DAG_ID, "owner": "platform"},
        "execution": "local",
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        "rollout": {"maxParallel": 1, "progressDeadlineSeconds": 10},
        "services": [
            {
                "name": "redis",
                "workload": {"kind": "StatefulSet", "name": "redis-cart"},
                "containers": {"redis": "registry.example.com/redis:2.4.0"},
            }
        ],
        "datastores": [
            {
                "name": "orders",
                "type": "postgres",
                "connId": "orders_db",
                "after": [],
                "backup": "snapshot",
                "migrations": "migrations/orders",
                "transforms": [
                    {
                        "name": "fill-status",
                        "table": "public.orders",
                        "key": "id",
                        "batchSize": 100,
                        "where": "status IS NULL",
                        "set": {"status": "'open'"},
                    },
                    {
                        "name": "hostile",
                        "table": "public.orders",
                        "key": "id",
                        "batchSize": 100,
                        "where": "public.hostile() AND status IS NULL",
                        "set": {"status": "'x'"},
                    },
                ],
                "validation": [
                    {
                        "table": "public.orders",
                        "expectations": [
                            {"expect_column_values_to_not_be_null": {"column": "amount"}}
                        ],
                    }
                ],
            }
        ],
    }


def test_dry_run_through_the_cli_changes_nothing(
    cluster: Any,
    pg_database: Any,
    run_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from convoy.policy import load_policy

    uri = pg_database("orders_db")
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(SETUP.encode())
    root = tmp_path / "policies"
    migrations = root / "migrations" / "orders"
    migrations.mkdir(parents=True)
    (migrations / "V1__note.sql").write_text("ALTER TABLE public.orders ADD COLUMN note text;\n")
    (migrations / "U1__note.sql").write_text("ALTER TABLE public.orders DROP COLUMN note;\n")
    path = root / f"{DAG_ID}.yaml"
    path.write_text(yaml.safe_dump(_policy(), sort_keys=False))
    seeded = cluster.seed_from_policy(load_policy(path).policy)
    env = {
        **run_env,
        "AIRFLOW_CONN_ORDERS_DB": uri,
        "CONVOY_POLICIES_DIR": str(root),
        "CONVOY_MAX_PARTITIONS": "3",
        "CONVOY_RUNS_DIR": str(tmp_path / "runs"),
        "CONVOY_REPORTS_DIR": str(tmp_path / "reports"),
    }
    before = database_state(uri)
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", DAG_ID, "-c", '{"dry_run": true}'],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert differences(before, database_state(uri)) == [], output[-4000:]
    # The hostile transform is reported, not silently skipped: the run fails.
    assert proc.returncode != 0, output[-4000:]
    assert "a statement tried to write and was refused" in output, output[-4000:]
    assert "cannot execute CREATE TABLE in a read-only transaction" in output
    states = _task_states()
    assert states["datastore_orders.partitions_hostile"] == "failed", states
    assert states["datastore_orders.backup"] == "success", states
    assert states["datastore_orders.migrate"] == "success", states
    assert states["datastore_orders.partitions_fill-status"] == "success", states
    assert {v for k, v in states.items() if k.startswith("datastore_orders.transform_fill")} == {
        "success"
    }, states
    assert cluster.images("StatefulSet", "shop", "redis-cart") == seeded["redis"]


def _task_states() -> dict[str, str]:
    """Task states of the policy's latest run (mapped instances folded into one entry each)."""
    from airflow.models.dagrun import DagRun

    [run] = DagRun.find(dag_id=DAG_ID)
    out: dict[str, str] = {}
    for ti in run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        out[key] = str(ti.state)
    return out
