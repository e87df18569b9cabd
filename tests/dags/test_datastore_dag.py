"""Datastore groups: stages, mapped transforms, placement, rollback order, assets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict

from convoy.airflow import build_dag
from convoy.policy import load_policy

NOT_NULL = {"expect_column_values_to_not_be_null": {"column": "status"}}


def _pg(name: str, after: list[str] | None, **extra: Any) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "name": name,
        "type": "postgres",
        "connId": f"{name}_db",
        "backup": "snapshot",
        "migrations": f"migrations/{name}",
        "snapshotTables": ["public.audit"],
        "transforms": [
            {"name": "fill-status", "table": "public.orders", "key": "id",
             "where": "status IS NULL", "set": {"status": "'open'"}},
            {"name": "fill-total", "table": "items", "key": "id",
             "where": "total IS NULL", "set": {"total": "0"}},
        ],
        "validation": [{"table": "public.orders", "expectations": [NOT_NULL]}],
    }  # fmt: skip
    if after is not None:
        ds["after"] = after
    ds.update(extra)
    return ds


def _mongo(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "mongo",
        "connId": "catalog_mongo",
        "database": "catalog",
        "after": ["cart"],
        "backup": "snapshot",
        "transforms": [{"name": "split-name", "collection": "users",
                        "filter": {"firstName": {"$exists": False}},
                        "update": {"$set": {"firstName": "x"}}}],
    }  # fmt: skip


@pytest.fixture
def dag(write_policy: Callable[..., Path]) -> Any:
    root = write_policy("x", "").parent
    for name in ("early", "mid", "late"):
        d = root / "migrations" / name
        d.mkdir(parents=True)
        (d / "V1__add.sql").write_text("ALTER TABLE public.orders ADD COLUMN status text;\n")
        (d / "U1__add.sql").write_text("ALTER TABLE public.orders DROP COLUMN status;\n")
    data = policy_dict(
        "ds",
        datastores=[_pg("early", []), _pg("mid", ["cart"]), _pg("late", None), _mongo("cat")],
    )
    return build_dag(load_policy(write_policy("ds.yaml", data)))


def _order(dag: Any) -> list[str]:
    return [t.task_id for t in dag.topological_sort()]


def test_stages_in_order_with_one_mapped_transform_per_transform(dag: Any) -> None:
    t = dag.task_dict
    g = "datastore_early."
    assert t[g + "backup"].upstream_task_ids == {"preflight"}
    assert t[g + "migrate"].upstream_task_ids == {g + "backup"}
    assert t[g + "partitions_fill-status"].upstream_task_ids == {g + "migrate"}
    assert t[g + "transform_fill-status"].upstream_task_ids == {g + "partitions_fill-status"}
    assert t[g + "partitions_fill-total"].upstream_task_ids == {g + "transform_fill-status"}
    assert t[g + "validate"].upstream_task_ids == {g + "transform_fill-total"}
    mapped = t[g + "transform_fill-status"]
    assert mapped.is_mapped
    assert mapped.trigger_rule == "none_failed"
    assert t[g + "validate"].trigger_rule == "none_failed"
    assert "op_args" in mapped.expand_input.value


def test_groups_placed_before_between_and_after_waves(dag: Any) -> None:
    order = _order(dag)

    def pos(task_id: str) -> int:
        return order.index(task_id)

    assert pos("datastore_early.validate") < pos("wave_0.rollout_redis")
    assert pos("wave_1.rollout_cart") < pos("datastore_mid.backup")
    assert pos("datastore_mid.validate") < pos("wave_2.rollout_checkout")
    assert pos("datastore_cat.backup") > pos("wave_1.rollout_cart")
    assert pos("wave_2.rollout_checkout") < pos("datastore_late.backup")
    assert dag.task_dict["wave_0.rollout_redis"].upstream_task_ids == {"datastore_early.validate"}


def test_rollback_reverts_data_newest_first_then_images(dag: Any) -> None:
    reverts = [i for i in _order(dag) if i.startswith("rollback.revert")]
    data = [r for r in reverts if r.startswith("rollback.revert_data_")]
    assert data == [
        "rollback.revert_data_late",
        "rollback.revert_data_mid",
        "rollback.revert_data_cat",
        "rollback.revert_data_early",
    ]
    assert reverts[: len(data)] == data
    assert reverts[len(data)] == "rollback.revert_checkout"
    rev = dag.task_dict["rollback.revert_data_early"]
    assert rev.trigger_rule == "none_skipped"
    assert "datastore_early.transform_fill-status" in rev.op_kwargs["stage_task_ids"]
    assert "datastore_early.transform_fill-status" in rev.op_kwargs["mapped_task_ids"]
    gate = dag.task_dict["rollback.gate"]
    assert "datastore_late.transform_fill-total" in gate.upstream_task_ids


def test_outlets_are_assets_of_tables_collections_and_workloads(dag: Any) -> None:
    t = dag.task_dict

    def uris(task_id: str) -> set[str]:
        return {a.uri for a in t[task_id].outlets}

    assert uris("datastore_early.transform_fill-status") == {
        "postgres://early_db:5432/early/public/orders"
    }
    assert uris("datastore_early.transform_fill-total") == {
        "postgres://early_db:5432/early/public/items"
    }
    assert uris("datastore_early.migrate") == {
        "postgres://early_db:5432/early/public/audit",
        "postgres://early_db:5432/early/public/orders",
        "postgres://early_db:5432/early/public/items",
    }
    assert uris("datastore_cat.transform_split-name") == {
        "mongodb://catalog_mongo:27017/catalog/users"
    }
    assert uris("wave_1.rollout_cart") == {"k8s://shop/deployment/cartservice"}
    assert uris("wave_0.rollout_redis") == {"k8s://shop/statefulset/redis-cart"}
    for task_id in t:
        for asset in t[task_id].outlets:
            assert "@" not in asset.uri


def test_dag_with_datastores_serializes(dag: Any) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dag)
    text = json.dumps(data)
    assert "postgres://early_db:5432/early/public/orders" in text
    restored = DagSerialization.from_dict(data)
    assert restored.task_dict["datastore_early.transform_fill-status"].is_mapped


def test_unusable_asset_uri_never_fails_the_parse() -> None:
    from convoy.airflow.assets import _asset

    assert _asset("postgres://host/only-db") is None  # rejected by the provider's normaliser


def test_datastore_dag_loads_through_the_dagbag(
    write_policy: Callable[..., Path], load_dagbag: Callable[..., Any]
) -> None:
    root = write_policy("x", "").parent
    d = root / "migrations" / "early"
    d.mkdir(parents=True)
    (d / "V1__add.sql").write_text("ALTER TABLE orders ADD COLUMN status text;\n")
    write_policy("ds.yaml", policy_dict("ds", datastores=[_pg("early", [])]))
    (root / "x").unlink()
    bag = load_dagbag(root)
    assert bag.import_errors == {}
    assert "datastore_early.transform_fill-status" in bag.dags["ds"].task_dict


class _TI:
    """Just enough of a RuntimeTaskInstance for the rollback callables."""

    dag_id = "ds"

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states

    def xcom_pull(self, task_ids: str, **_: Any) -> Any:
        if task_ids == "rollback.gate":
            return ["wave_2.rollout_checkout"]
        return {"datastores": ["late"], "dry_run": False, "services": []}

    def get_task_states(self, **_: Any) -> dict[str, dict[str, str]]:
        return {"r1": self.states}


def test_states_of_mapped_instances() -> None:
    from convoy.airflow.gates import states_of

    states = {"g.transform_a_0": "success", "g.transform_a_1": "failed", "g.transform_a": None}
    assert sorted(states_of(states, "g.transform_a", mapped=True)) == ["failed", "success"]
    assert states_of({"g.transform_a": "skipped"}, "g.transform_a", mapped=True) == ["skipped"]
    assert states_of(states, "g.transform_a") == [None]


def test_data_revert_is_a_noop_for_a_datastore_whose_steps_never_ran() -> None:
    from convoy.airflow import datastores

    ti = _TI({"datastore_late.backup": "upstream_failed", "datastore_late.transform_x": "skipped"})
    result = datastores.revert(
        policy_path="/nonexistent.yaml",  # never read: nothing to revert
        datastore="late",
        stage_task_ids=["datastore_late.backup", "datastore_late.transform_x"],
        mapped_task_ids=["datastore_late.transform_x"],
        ti=ti,
        run_id="r1",
    )
    assert result == {"datastore": "late", "reverted": False, "reason": "no step ran in this run"}


def test_mongo_client_factory_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from convoy.airflow import datastores

    monkeypatch.setenv("CONVOY_MONGO_CLIENT_FACTORY", "dag_policies:policy_dict")
    assert datastores.mongo_client("n")["metadata"]["name"] == "n"  # called with the conn id
    monkeypatch.setenv("CONVOY_MONGO_CLIENT_FACTORY", "nocolon")
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="module:function"):
        datastores.mongo_client("n")


def test_postgres_conninfo_from_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from convoy.airflow import datastores

    monkeypatch.setenv("AIRFLOW_CONN_SOCK_DB", "postgresql://postgres:@/shop?host=/tmp/pgsock")
    assert datastores.postgres_conninfo("sock_db") == "host=/tmp/pgsock user=postgres dbname=shop"
    conn = {
        "conn_type": "postgres",
        "host": "db",
        "login": "app",
        "password": "p w",
        "schema": "shop",
        "port": 5433,
        "extra": {"sslmode": "require", "cursor": "x"},  # cursor: a hook option, left out
    }
    monkeypatch.setenv("AIRFLOW_CONN_JSON_DB", json.dumps(conn))
    assert datastores.postgres_conninfo("json_db") == (
        "host=db port=5433 user=app password='p w' dbname=shop sslmode=require"
    )
