"""OpenLineage hooks of convoy.airflow.lineage on built DAGs (no Airflow run).

The end-to-end run with the file transport is tests/e2e/test_lineage_e2e.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict

from convoy.airflow import build_dag, lineage
from convoy.plan import build_plan
from convoy.plan.record import freeze
from convoy.policy import load_policy

ORDERS = {
    "name": "orders", "type": "postgres", "connId": "orders_db", "after": ["redis"],
    "backup": "snapshot", "migrations": "migrations/orders",
    "transforms": [{"name": "fill-status", "table": "public.orders", "key": "id",
                    "where": "status IS NULL", "set": {"status": "'open'"}}],
}  # fmt: skip
CATALOG = {
    "name": "catalog", "type": "mongo", "connId": "catalog_mongo", "database": "catalog",
    "backup": "snapshot",
    "transforms": [{"name": "split", "collection": "users",
                    "filter": {"first": {"$exists": False}}, "update": {"$set": {"first": "x"}}}],
}  # fmt: skip


class FakeTI:
    """What the provider hands to the hooks: task, ids, and XCom of this run."""

    def __init__(self, task: Any, xcom: dict[tuple[str, str], Any] | None = None) -> None:
        self.task = task
        self.task_id = task.task_id
        self.dag_id = task.dag.dag_id
        self.map_index = -1
        self.xcom = xcom or {}

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get((task_ids, key))


@pytest.fixture
def built(write_policy: Callable[..., Path]) -> tuple[Any, str]:
    root = write_policy("x", "").parent
    (root / "migrations" / "orders").mkdir(parents=True)
    (root / "migrations" / "orders" / "V1__status.sql").write_text(
        "ALTER TABLE orders ADD COLUMN status text;\n"
    )
    (root / "migrations" / "orders" / "V2__audit.sql").write_text(
        "CREATE TABLE audit.order_log (id bigint);\n"
    )
    (root / "migrations" / "orders" / "U2__audit.sql").write_text("DROP TABLE audit.order_log;\n")
    loaded = load_policy(write_policy("shop.yaml", policy_dict(datastores=[ORDERS, CATALOG])))
    return build_dag(loaded), build_plan(loaded).digest


def _names(datasets: list[Any]) -> set[tuple[str, str]]:
    return {(d.namespace, d.name) for d in datasets}


def test_workload_asset_becomes_a_dataset_and_tables_keep_the_provider_naming(
    built: tuple[Any, str],
) -> None:
    dag, _ = built
    rollout = dag.get_task("wave_1.rollout_cart")
    assert _names(lineage.output_datasets(rollout)) == {("k8s://shop", "deployment/cartservice")}
    transform = dag.get_task("datastore_orders.transform_fill-status")
    assert _names(lineage.output_datasets(transform)) == {
        ("postgres://orders_db:5432", "orders.public.orders")
    }
    mongo = dag.get_task("datastore_catalog.transform_split")
    assert _names(lineage.output_datasets(mongo)) == {
        ("mongodb://catalog_mongo:27017", "catalog.users")
    }


def test_reverts_name_what_they_put_back(built: tuple[Any, str]) -> None:
    dag, _ = built
    revert = dag.get_task("rollback.revert_cart")
    assert _names(lineage.output_datasets(revert)) == {("k8s://shop", "deployment/cartservice")}
    revert_data = dag.get_task("rollback.revert_data_orders")
    assert ("postgres://orders_db:5432", "orders.public.orders") in _names(
        lineage.output_datasets(revert_data)
    )


def test_migrate_adds_the_tables_its_applied_files_touch(built: tuple[Any, str]) -> None:
    dag, _ = built
    migrate = dag.get_task("datastore_orders.migrate")
    applied = [{"version": v, "status": "applied"} for v in ("1", "2")]
    result = {"datastore": "orders", "applied": applied}
    # The migration files the run executed: as preflight froze them in the run record.
    loaded = load_policy(dag.get_task("preflight").op_kwargs["policy_path"])
    frozen = freeze(
        loaded, build_plan(loaded), dag_plan_digest="d", mode="upgrade", dry_run=False
    ).to_dict()
    record = {("preflight", "run_record"): frozen}
    ti = FakeTI(migrate, {(migrate.task_id, "result"): result, **record})
    assert _names(lineage.output_datasets(migrate, ti)) == {
        ("postgres://orders_db:5432", "orders.public.orders"),
        ("postgres://orders_db:5432", "orders.audit.order_log"),
    }
    revert = dag.get_task("rollback.revert_data_orders")
    undone = {"datastore": "orders", "reverted": True, "result": {"undone": ["2"]}}
    ti = FakeTI(revert, {(revert.task_id, "result"): undone, **record})
    assert ("postgres://orders_db:5432", "orders.audit.order_log") in _names(
        lineage.output_datasets(revert, ti)
    )


def test_rollout_facet_has_digest_target_and_versions_applied(built: tuple[Any, str]) -> None:
    dag, digest = built
    task = dag.get_task("wave_1.rollout_cart")
    result = {
        "action": "apply", "namespace": "shop", "kind": "Deployment", "name": "cartservice",
        "changed": True, "dryRun": False, "status": "succeeded", "message": "ok",
        "previousImages": {"server": "reg/cart:2.3.0"}, "images": {"server": "reg/cart:2.4.0"},
    }  # fmt: skip
    ti = FakeTI(task, {(task.task_id, "result"): result, ("preflight", "return_value"): {
        "dry_run": False}})  # fmt: skip
    start = lineage.convoy_run_facets(ti, "running")["convoy"]
    assert (start.policy, start.digest, start.step, start.dryRun) == (
        "shop",
        digest,
        "rollout",
        False,
    )
    assert start.services["cart"]["target"] == {
        "server": "reg/cart:2.4.0",
        "proxy": "reg/envoy:1.30.0",
    }
    assert "applied" not in start.services["cart"]
    done = lineage.convoy_run_facets(ti, "success")["convoy"].services["cart"]
    assert done["previous"] == {"server": "reg/cart:2.3.0"}
    assert done["applied"] == {"server": "reg/cart:2.4.0"}
    assert done["workload"] == "shop/deployment/cartservice"
    assert "message" not in done


def test_report_facet_adds_up_mapped_transforms_and_lists_migrations(
    built: tuple[Any, str],
) -> None:
    dag, _ = built
    report = dag.get_task("report")
    part = {"datastore": "orders", "transform": "fill-status", "rows_done": 150}
    summary = {
        "steps": {
            "datastore_orders.migrate": {"state": "success", "result": {
                "datastore": "orders", "applied": [{"version": "1", "status": "applied"}]}},
            "datastore_orders.transform_fill-status": {"state": "success", "result": [
                {**part, "partition": "1of2"}, {**part, "partition": "2of2"}]},
            "wave_0.rollout_redis": {"state": "success", "result": {
                "namespace": "shop", "kind": "StatefulSet", "name": "redis-cart", "changed": True,
                "previousImages": {"redis": "reg/redis:2.3.0"},
                "images": {"redis": "reg/redis:2.4.0"}}},
        },
        "reverts": {"rollback.revert_redis": {"state": "success", "result": {
            "service": "redis", "reverted": False, "reason": "rollback not requested"}}},
    }  # fmt: skip
    facet = lineage.build_facet(FakeTI(report, {("report", "result"): summary}), "success")
    assert facet is not None
    orders = facet.datastores["orders"]
    assert orders["migrationsApplied"] == ["1"]
    assert orders["transforms"] == {
        "fill-status": {"rowsDone": 300, "partitions": ["1of2", "2of2"]}
    }
    assert facet.services["redis"]["applied"] == {"redis": "reg/redis:2.4.0"}
    assert facet.services["redis"]["reverted"] is False


def test_other_tasks_are_left_alone() -> None:
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    with DAG("not-convoy", schedule=None):
        task = PythonOperator(task_id="t", python_callable=print)
    assert lineage.convoy_run_facets(FakeTI(task), "success") == {}
    extractor = lineage.ConvoyExtractor(task)
    got = extractor.extract()
    assert got.outputs == []
    assert "sourceCode" in got.job_facets  # what the provider's PythonExtractor gives


def test_a_broken_task_never_raises_out_of_the_hook() -> None:
    class Broken:
        @property
        def task(self) -> Any:
            raise RuntimeError("boom")

    assert lineage.convoy_run_facets(Broken(), "success") == {}


def test_configured_hooks_are_importable_from_the_helm_values(repo_root: Path) -> None:
    import yaml
    from airflow.providers.openlineage.utils.utils import try_import_from_string

    values = yaml.safe_load((repo_root / "deploy/helm/values.yaml").read_text())
    section = values["config"]["openlineage"]
    assert try_import_from_string(section["custom_run_facets"]) is lineage.convoy_run_facets
    assert try_import_from_string(section["extractors"]) is lineage.ConvoyExtractor
    assert section["execute_in_thread"] == "True"


def test_rollout_pods_get_the_same_datasets_and_target(write_policy: Callable[..., Path]) -> None:
    dag = build_dag(load_policy(write_policy("pods.yaml", policy_dict(execution="kubernetes"))))
    apply = dag.get_task("wave_1.rollout_cart")
    assert type(apply).__name__ in lineage.ConvoyExtractor.get_operator_classnames()
    assert lineage.ConvoyExtractor(apply).extract().outputs == lineage.output_datasets(apply)
    assert _names(lineage.output_datasets(apply)) == {("k8s://shop", "deployment/cartservice")}
    revert = dag.get_task("rollback.revert_cart")
    assert _names(lineage.output_datasets(revert)) == {("k8s://shop", "deployment/cartservice")}
    facet = lineage.build_facet(FakeTI(apply), "running")
    assert facet is not None
    assert facet.services["cart"] == {
        "workload": "shop/deployment/cartservice",
        "target": {"server": "reg/cart:2.4.0", "proxy": "reg/envoy:1.30.0"},
    }
