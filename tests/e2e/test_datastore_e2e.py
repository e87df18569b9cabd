"""Datastore groups end to end: ``dag.test()`` against the real embedded PostgreSQL
(and mongomock through the documented client factory), with the emulated cluster.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from e2e_helpers import images, load_dag, pg_state, reset_mongomock, states

pytestmark = pytest.mark.e2e

PREVIOUS = "2.3.0"
V1 = "ALTER TABLE public.orders ADD COLUMN status text;\n"
U1 = "ALTER TABLE public.orders DROP COLUMN status;\n"
V2 = "CREATE INDEX orders_status_idx ON public.orders (status);\n"
U2 = "DROP INDEX public.orders_status_idx;\n"


def _policy(name: str, *, crashloop: bool = False, **extra: Any) -> dict[str, Any]:
    cart = "registry.example.com/cart:2.4.0" + ("-crashloop" if crashloop else "")
    data: dict[str, Any] = {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": name, "owner": "platform"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        "rollout": {"maxParallel": 2, "progressDeadlineSeconds": 10},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": {"redis": "registry.example.com/redis:2.4.0"}},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": {"server": cart}, "dependsOn": ["redis"]},
        ],
    }  # fmt: skip
    data.update(extra)
    return data


def _orders(**extra: Any) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "name": "orders",
        "type": "postgres",
        "connId": "orders_db",
        "after": [],
        "backup": "snapshot",
        "migrations": "migrations/orders",
        "transforms": [
            {"name": "fill-status", "table": "public.orders", "key": "id", "batchSize": 250,
             "where": "status IS NULL",
             "set": {"status": "CASE WHEN id % 2 = 0 THEN 'open' ELSE 'shipped' END"}},
        ],
    }  # fmt: skip
    ds.update(extra)
    return ds


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    root = tmp_path / "policies"
    (root / "migrations" / "orders").mkdir(parents=True)
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    monkeypatch.setenv("CONVOY_MAX_PARTITIONS", "3")
    monkeypatch.setenv("CONVOY_RUNS_DIR", str(tmp_path / "runs"))

    def write(data: dict[str, Any], migrations: dict[str, str]) -> Path:
        for file, text in migrations.items():
            (root / "migrations" / "orders" / file).write_text(text)
        path = root / f"{data['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def _seed(uri: str, rows: int, extra_columns: str = "", values: str = "") -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE public.orders (id bigint PRIMARY KEY, amount int{extra_columns})"
        )
        conn.execute(
            f"INSERT INTO public.orders SELECT g, g %% 97{values} FROM generate_series(1, %s) g",
            (rows,),
        )


def _history(uri: str) -> list[tuple[str, str, bool, bool]]:
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "SELECT version, kind, success, reverted_on IS NOT NULL FROM convoy.schema_history"
            " ORDER BY rank"
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_happy_path_migrates_transforms_and_rolls_out(
    cluster: Any, write: Callable[..., Path], pg_database: Callable[[str], str]
) -> None:
    uri = pg_database("orders_db")
    _seed(uri, 2000)
    from convoy.policy import load_policy

    files = {"V1__status.sql": V1, "U1__status.sql": U1, "V2__idx.sql": V2, "U2__idx.sql": U2}
    path = write(_policy("pg-happy", datastores=[_orders()]), files)
    loaded = load_policy(path)
    cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("pg-happy").test()
    got = states(run)
    assert run.state == "success", got
    assert got["datastore_orders.backup"] == "success"
    assert got["datastore_orders.transform_fill-status_0"] == "success"
    assert len([t for t in got if t.startswith("datastore_orders.transform_fill-status_")]) == 3
    assert got["rollback.revert_data_orders"] == "skipped"
    assert [(v, k, ok) for v, k, ok, _ in _history(uri)] == [("1", "V", True), ("2", "V", True)]
    with psycopg.connect(uri) as conn:
        counts = conn.execute(
            "SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert counts == [("open", 1000), ("shipped", 1000)]
    assert images(cluster, loaded.policy) == {
        s.name: dict(s.containers) for s in loaded.policy.services
    }
    ti = next(t for t in run.get_task_instances() if t.task_id == "datastore_orders.migrate")
    assert "postgresql://" not in str(ti.xcom_pull(task_ids="datastore_orders.migrate"))


def test_failed_wave_after_datastore_reverts_data_then_images(
    cluster: Any, write: Callable[..., Path], pg_database: Callable[[str], str]
) -> None:
    uri = pg_database("orders_db")
    _seed(uri, 1500)
    before = pg_state(uri)
    from convoy.policy import load_policy

    # V2 has no undo file: the revert restores the snapshot for it.
    path = write(_policy("pg-fail", crashloop=True, datastores=[_orders()]),
                 {"V1__status.sql": V1, "U1__status.sql": U1, "V2__idx.sql": V2})  # fmt: skip
    loaded = load_policy(path)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("pg-fail").test()
    got = states(run)
    assert run.state == "failed"
    assert got["datastore_orders.validate" if "datastore_orders.validate" in got else
               "datastore_orders.transform_fill-status_0"] == "success"  # fmt: skip
    assert got["wave_1.rollout_cart"] == "failed"
    assert got["rollback.gate"] == "success"
    assert got["rollback.revert_data_orders"] == "success"
    assert got["rollback.revert_redis"] == "success"
    assert got["outcome"] == "failed"
    assert pg_state(uri) == before  # schema and every row as before the run
    assert images(cluster, loaded.policy) == seeded
    assert [(v, k, rev) for v, k, _, rev in _history(uri) if k == "V"] == [
        ("1", "V", True),
        ("2", "V", True),
    ]


def test_three_interval_backfill_transforms_each_row_exactly_once(
    cluster: Any, write: Callable[..., Path], pg_database: Callable[[str], str]
) -> None:
    uri = pg_database("orders_db")
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, created_at timestamptz)")
        # 4 days x 300 rows; the 4th day is outside the three backfilled intervals.
        conn.execute(
            "INSERT INTO public.orders SELECT g, timestamptz '2026-01-01 00:00+00'"
            " + (g - 1) * interval '288 seconds' FROM generate_series(1, 1200) g"
        )
    transform = {
        "name": "count-touch", "table": "public.orders", "key": "id", "batchSize": 100,
        "where": "created_at >= {{ data_interval_start }} AND created_at < {{ data_interval_end }}",
        "set": {"touched": "touched + 1"},
    }  # fmt: skip
    ds = _orders(after=None, transforms=[transform])
    path = write(
        _policy("pg-daily", schedule="@daily", datastores=[ds]),
        {"V1__touched.sql": "ALTER TABLE orders ADD COLUMN touched int NOT NULL DEFAULT 0;\n",
         "U1__touched.sql": "ALTER TABLE public.orders DROP COLUMN touched;\n"},
    )  # fmt: skip
    from convoy.policy import load_policy

    cluster.seed_from_policy(load_policy(path).policy, previous_tag=PREVIOUS)
    dag = load_dag("pg-daily")
    # `airflow backfill create` needs a running scheduler; dag.test() per interval
    # runs the same DAG runs in-process. A run at logical date D covers the
    # @daily interval ending at D (CronDataIntervalTimetable). The last run
    # repeats the second interval: its checkpoint says done, nothing is applied twice.
    for day in (2, 3, 4, 3):
        run = dag.test(logical_date=dt.datetime(2026, 1, day, tzinfo=dt.UTC))
        assert run.state == "success", states(run)
        assert run.data_interval_start == dt.datetime(2026, 1, day - 1, tzinfo=dt.UTC)
        assert run.data_interval_end == dt.datetime(2026, 1, day, tzinfo=dt.UTC)
    with psycopg.connect(uri) as conn:
        per_day = conn.execute(
            "SELECT created_at::date, min(touched), max(touched), count(*) FROM orders"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert [(str(d), lo, hi, n) for d, lo, hi, n in per_day] == [
        ("2026-01-01", 1, 1, 300),
        ("2026-01-02", 1, 1, 300),
        ("2026-01-03", 1, 1, 300),
        ("2026-01-04", 0, 0, 300),
    ]
    assert [(v, k, ok) for v, k, ok, _ in _history(uri)] == [("1", "V", True)]


FIRST_WORD = {"$arrayElemAt": [{"$split": ["$fullName", " "]}, 0]}
CATALOG = {
    "name": "catalog",
    "type": "mongo",
    "connId": "catalog_mongo",
    "database": "catalog",
    "after": ["redis"],
    "backup": "snapshot",
    "transforms": [
        {"name": "split-name", "collection": "users", "batchSize": 50,
         "filter": {"firstName": {"$exists": False}},
         "update": [{"$set": {"firstName": FIRST_WORD}}]},
    ],
}  # fmt: skip


def _run_mongo_policy(cluster: Any, write: Callable[..., Path], client: Any) -> None:
    users = client["catalog"]["users"]
    users.delete_many({})
    users.insert_many([{"_id": i, "fullName": f"Ann{i} Smith"} for i in range(300)])
    path = write(_policy("mongo-shop", datastores=[CATALOG]), {})
    from convoy.policy import load_policy

    loaded = load_policy(path)
    cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("mongo-shop").test()
    got = states(run)
    assert run.state == "success", got
    assert got["datastore_catalog.partitions_split-name"] == "success"
    assert users.count_documents({"firstName": {"$exists": False}}) == 0
    assert users.find_one({"_id": 7})["firstName"] == "Ann7"


def test_mongo_datastore_through_the_client_factory(
    cluster: Any, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_MONGO_CLIENT_FACTORY", "e2e_helpers:mongomock_client")
    _run_mongo_policy(cluster, write, reset_mongomock())


@pytest.mark.mongo_server
def test_mongo_datastore_on_a_real_server(
    cluster: Any, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = os.environ.get("MONGO_URI")
    if not uri:
        pytest.skip("needs a real MongoDB: set MONGO_URI")
    import pymongo

    monkeypatch.delenv("CONVOY_MONGO_CLIENT_FACTORY", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_CATALOG_MONGO", uri)
    client: Any = pymongo.MongoClient(uri)
    try:
        client.drop_database("catalog")
        _run_mongo_policy(cluster, write, client)
    finally:
        client.drop_database("catalog")
        client.close()


IN_SET = {"expect_column_values_to_be_in_set": {"column": "status", "value_set": ["open"]}}


def test_dry_run_changes_nothing_and_an_empty_expansion_skips_only_the_mapped_task(
    cluster: Any, write: Callable[..., Path], pg_database: Callable[[str], str]
) -> None:
    uri = pg_database("orders_db")
    _seed(uri, 500)
    before = pg_state(uri)
    from convoy.policy import load_policy

    ds = _orders(validation=[{"table": "public.orders", "expectations": [IN_SET]}])
    path = write(_policy("pg-dry", datastores=[ds]), {"V1__status.sql": V1, "U1__status.sql": U1})
    loaded = load_policy(path)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("pg-dry").test(run_conf={"dry_run": True})
    got = states(run)
    assert run.state == "success", got
    # The column the transform needs is only added by a migration the dry run rolled
    # back: no partitions, the mapped task expands to nothing and is skipped, and
    # validation (which would fail: the column is missing) still runs and only reports.
    assert got["datastore_orders.partitions_fill-status"] == "success"
    assert got["datastore_orders.transform_fill-status"] == "skipped"
    assert got["datastore_orders.validate"] == "success"
    assert got["wave_0.rollout_redis"] == "success"
    assert pg_state(uri) == before
    assert images(cluster, loaded.policy) == seeded


def test_blocking_validation_failure_fails_the_validate_task(
    write: Callable[..., Path], pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from convoy.airflow import datastores

    uri = pg_database("orders_db")
    _seed(uri, 100, ", status text", ", CASE WHEN g = 7 THEN 'lost' ELSE 'open' END")
    ds = _orders(validation=[{"table": "public.orders", "expectations": [IN_SET]}])
    path = write(_policy("pg-valid", datastores=[ds]), {"V1__status.sql": V1})
    pushed: dict[str, Any] = {}
    from convoy.plan import build_plan
    from convoy.plan.record import freeze
    from convoy.policy import load_policy

    loaded = load_policy(path)
    plan = build_plan(loaded)
    record = freeze(loaded, plan, dag_plan_digest=plan.digest, mode="upgrade", dry_run=False)

    class TI:
        def xcom_pull(self, task_ids: str, key: str = "return_value") -> dict[str, Any]:
            if key == "run_record":
                return record.to_dict()
            return {"datastores": ["orders"], "dry_run": False, "services": []}

        def xcom_push(self, key: str, value: Any) -> None:
            pushed[key] = value

    with pytest.raises(AirflowFailException, match="validation of orders failed"):
        datastores.validate(datastore="orders", ti=TI(), run_id="r1")
    assert pushed["result"]["datastore"] == "orders"
    assert "postgresql://" not in str(pushed)


def test_failed_validation_after_the_rollout_reverts_data_then_images(
    cluster: Any, write: Callable[..., Path], pg_database: Callable[[str], str]
) -> None:
    """A blocking expectation fails after every service rolled out: all of it goes back."""
    uri = pg_database("orders_db")
    _seed(uri, 600)
    before = pg_state(uri)
    from convoy.policy import load_policy

    # The transform leaves every row 'open' or 'shipped'; IN_SET only allows 'open'.
    ds = _orders(after=None, validation=[{"table": "public.orders", "expectations": [IN_SET]}])
    files = {"V1__status.sql": V1, "U1__status.sql": U1, "V2__idx.sql": V2, "U2__idx.sql": U2}
    path = write(_policy("pg-invalid", datastores=[ds]), files)
    loaded = load_policy(path)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    run = load_dag("pg-invalid").test()
    got = states(run)
    assert run.state == "failed", got
    assert got["wave_1.rollout_cart"] == "success"
    assert got["datastore_orders.validate"] == "failed"
    assert got["rollback.revert_data_orders"] == "success"
    assert got["rollback.revert_cart"] == "success"
    assert got["rollback.revert_redis"] == "success"
    assert got["outcome"] == "failed"
    assert pg_state(uri) == before  # schema and every row as before the run
    assert images(cluster, loaded.policy) == seeded
