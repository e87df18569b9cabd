"""OpenLineage end to end: ``airflow dags test`` of a policy with a PostgreSQL datastore,
OpenLineage on through ``AIRFLOW__OPENLINEAGE__*`` only, events written by the file
transport, then read back: every table and workload the run changed is an output
dataset, and the ``convoy`` run facet carries the plan digest and the versions applied.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from e2e_helpers import AIRFLOW, REPO

pytestmark = pytest.mark.e2e

PASSWORD = "Lineage-Pw-7f3a9c"
POLICY = "lineage-probe"
TARGETS = {
    "redis": {"redis": "registry.example.com/redis:2.4.0"},
    "cart": {"server": "registry.example.com/cart:2.4.0"},
}
MIGRATIONS = {
    "V1__status.sql": "ALTER TABLE public.orders ADD COLUMN status text;\n",
    "U1__status.sql": "ALTER TABLE public.orders DROP COLUMN status;\n",
    # Declared nowhere in the policy: known only from the SQL at run time.
    "V2__audit.sql": "CREATE TABLE public.order_audit (id bigint PRIMARY KEY, note text);\n",
    "U2__audit.sql": "DROP TABLE public.order_audit;\n",
}
TABLES = {"orders.public.orders", "orders.public.order_audit"}
WORKLOADS = {("k8s://shop", "statefulset/redis-cart"), ("k8s://shop", "deployment/cartservice")}


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": POLICY, "owner": "platform"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        "rollout": {"maxParallel": 2, "progressDeadlineSeconds": 20},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": TARGETS["redis"]},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": TARGETS["cart"], "dependsOn": ["redis"]},
        ],
        "datastores": [
            {"name": "orders", "type": "postgres", "connId": "orders_db", "after": ["redis"],
             "backup": "snapshot", "migrations": "migrations/orders",
             "transforms": [
                 {"name": "fill-status", "table": "public.orders", "key": "id", "batchSize": 100,
                  "where": "status IS NULL", "set": {"status": "'open'"}},
             ]},
        ],
    }  # fmt: skip


def _with_password(uri: str) -> str:
    """The database URI, logging in as a role that has a password."""
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE lineage_user LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"lineage_user:{PASSWORD}@{host}"))


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _outputs(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["namespace"], o["name"]) for e in events for o in e.get("outputs") or ()}


def _facet(events: list[dict[str, Any]], job_suffix: str, event_type: str) -> dict[str, Any]:
    for e in events:
        if e["eventType"] == event_type and e["job"]["name"].endswith(job_suffix):
            return dict(e["run"]["facets"]["convoy"])
    raise AssertionError(f"no {event_type} event of *{job_suffix}")


def test_run_events_name_every_changed_table_and_carry_the_convoy_facet(
    cluster: Any, pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    uri = _with_password(pg_database("orders_db"))
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, amount int)")
        conn.execute("INSERT INTO public.orders SELECT g, g FROM generate_series(1, 300) g")
    root = tmp_path / "policies"
    (root / "migrations" / "orders").mkdir(parents=True)
    for name, text in MIGRATIONS.items():
        (root / "migrations" / "orders" / name).write_text(text)
    path = root / f"{POLICY}.yaml"
    path.write_text(yaml.safe_dump(_policy(), sort_keys=False))
    from convoy.policy import load_policy

    seeded = cluster.seed_from_policy(load_policy(path).policy, previous_tag="2.3.0")
    planned = subprocess.run(
        [str(Path(AIRFLOW).with_name("convoy")), "plan", str(path), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    digest = json.loads(planned.stdout)["digest"]

    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW_CONN_ORDERS_DB": uri,
        "CONVOY_POLICIES_DIR": str(root),
        "CONVOY_RUNS_DIR": str(tmp_path / "runs"),
        "CONVOY_MAX_PARTITIONS": "2",
        "AIRFLOW__OPENLINEAGE__DISABLED": "false",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "convoy-test",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": "convoy.airflow.lineage.convoy_run_facets",
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": "convoy.airflow.lineage.ConvoyExtractor",
        # As deployed: a forked emitter cannot reach the in-process supervisor
        # of `airflow dags test` (it hangs until execution_timeout).
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "true",
    }
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", POLICY],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    events = _events(events_file)
    assert events, "no OpenLineage event written"

    outputs = _outputs(events)
    assert {n for ns, n in outputs if ns == "postgres://orders_db:5432"} == TABLES
    assert {(ns, n) for ns, n in outputs if ns.startswith("k8s://")} == WORKLOADS
    assert all(e["job"]["namespace"] == "convoy-test" for e in events)

    tasks = [e for e in events if e["job"]["name"].startswith(f"{POLICY}.")]
    assert tasks, "no task event"
    assert [e["job"]["name"] for e in tasks if "convoy" not in e["run"]["facets"]] == []
    convoy = [e["run"]["facets"]["convoy"] for e in tasks]
    assert {f["policy"] for f in convoy} == {POLICY}
    assert {f["digest"] for f in convoy} == {digest}

    migrate = _facet(events, "datastore_orders.migrate", "COMPLETE")
    assert migrate["datastores"]["orders"]["migrationsApplied"] == ["1", "2"]
    assert migrate["dryRun"] is False
    cart = _facet(events, "wave_1.rollout_cart", "COMPLETE")["services"]["cart"]
    assert cart["workload"] == "shop/deployment/cartservice"
    assert cart["previous"] == seeded["cart"]
    assert cart["applied"] == TARGETS["cart"]
    report = _facet(events, ".report", "COMPLETE")
    assert set(report["services"]) == {"redis", "cart"}
    assert report["services"]["redis"]["applied"] == TARGETS["redis"]
    assert report["datastores"]["orders"]["migrationsApplied"] == ["1", "2"]
    assert report["datastores"]["orders"]["transforms"]["fill-status"]["rowsDone"] == 300

    text = events_file.read_text()
    assert PASSWORD not in text
    assert "lineage_user" not in text
