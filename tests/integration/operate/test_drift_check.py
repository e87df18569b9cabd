"""The drift check task (``driftCheck``): status as XCom, alerts and a failed task on drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from operate_helpers import NS, ctx, rollout, write_policy
from test_status import successful_run

from convoy.airflow import drift
from convoy.engines.postgres import PostgresEngine
from convoy.rollout.api import KubernetesIO, WorkloadRef

pytestmark = pytest.mark.integration


class TI:
    dag_id = "shop__drift"
    task_id = "report"

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def with_alerts(path: Path, url: str) -> None:
    data = yaml.safe_load(path.read_text())
    data["driftCheck"] = {"schedule": "@hourly"}
    data["alerts"] = {"onFailure": [url]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_in_sync_pushes_the_status_and_alerts_nothing(
    kube: Any, orders_db: str, tmp_path: Path, webhook_receiver: Any
) -> None:
    loaded = successful_run(kube, orders_db, tmp_path)
    with_alerts(loaded.path, webhook_receiver.url())
    ti = TI()
    result = drift.check(policy_path=str(loaded.path), ti=ti, run_id="scheduled__1")
    assert result == {"verdict": "in sync"}, ti.pushed
    assert ti.pushed["status"]["verdict"] == "in sync"
    assert webhook_receiver.bodies == []


def test_drift_alerts_and_fails(
    kube: Any, orders_db: str, tmp_path: Path, webhook_receiver: Any
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    loaded = successful_run(kube, orders_db, tmp_path)
    with_alerts(loaded.path, webhook_receiver.url("/hooks/secret-token"))
    KubernetesIO(kube.api_client()).patch(
        WorkloadRef(NS, "Deployment", "cartservice"),
        {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:x"}]}}}},
    )
    kube.wait_idle()
    ti = TI()
    with pytest.raises(AirflowFailException, match=r"^shop: drift: cart: drift \(server: runs"):
        drift.check(policy_path=str(loaded.path), ti=ti, run_id="scheduled__2")
    status = ti.pushed["status"]
    assert status["verdict"] == "drift"
    assert {s["name"]: s["verdict"] for s in status["services"]} == {
        "cart": "drift",
        "redis": "in sync",
    }
    (alert,) = webhook_receiver.bodies
    assert alert["event"] == "drift"
    assert alert["policy"] == "shop"
    assert alert["run_id"] == "scheduled__2"
    assert alert["subject"] == (
        "[convoy] shop: run scheduled__2 drift check: the live state is off the policy"
    )
    (line,) = alert["state_left_behind"]
    assert line.startswith(
        "cart: drift (server: runs cart:x, convoy last set registry.example.com/cart:2.4.0, "
        "policy registry.example.com/cart:2.4.0"
    )
    assert "secret-token" not in str(alert)


def test_pending_does_not_alert(
    kube: Any, orders_db: str, tmp_path: Path, webhook_receiver: Any
) -> None:
    loaded = write_policy(tmp_path)
    kube.seed_from_policy(loaded.policy)
    with_alerts(loaded.path, webhook_receiver.url())
    ti = TI()
    result = drift.check(policy_path=str(loaded.path), ti=ti, run_id="scheduled__3")
    assert result == {"verdict": "pending"}, ti.pushed
    assert webhook_receiver.bodies == []
    # after the policy's run it is in sync
    rollout(kube, loaded, "run-1")
    PostgresEngine(orders_db).migrate(ctx(loaded, "orders", "run-1"))
    assert drift.check(policy_path=str(loaded.path), ti=TI(), run_id="s4") == {"verdict": "in sync"}


def test_drift_dag_run_by_airflow_is_on_the_upgrades_page(
    airflow_db: None,
    kube: Any,
    orders_db: str,
    tmp_path: Path,
    webhook_receiver: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dag.test()`` of the drift DAG; the page's reader finds its verdict in the metadata DB."""
    from convoy.ui.drift import drift_view, fetch_drift
    from convoy.ui.page import render_page
    from convoy.ui.policies import gather_policies

    loaded = successful_run(kube, orders_db, tmp_path)
    with_alerts(loaded.path, webhook_receiver.url())
    KubernetesIO(kube.api_client()).patch(
        WorkloadRef(NS, "StatefulSet", "redis-cart"),
        {"spec": {"template": {"spec": {"containers": [{"name": "redis", "image": "redis:x"}]}}}},
    )
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(tmp_path))
    bag = DagBag(
        dag_folder=str(Path(__file__).resolve().parents[3] / "dags" / "convoy_policies.py")
    )
    assert bag.import_errors == {}
    bag.dags["shop__drift"].test()

    record = fetch_drift(["shop"])["shop"]
    assert record.state == "failed"
    assert record.status is not None
    assert record.status["verdict"] == "drift"
    view = drift_view("shop", record, "/")
    assert view is not None
    assert view["verdict"] == "drift"
    assert view["findings"] == [("redis", "up_for_retry")]
    assert view["url"].startswith("/dags/shop__drift/runs/")
    (alert,) = webhook_receiver.bodies
    assert alert["event"] == "drift"
    page = render_page(
        gather_policies(tmp_path),
        {},
        now=record.when or record_time(),
        drift={"shop": record},
    )
    assert "Drift check:" in page
    assert 'badge s-up_for_retry">drift<' in page
    assert 'href="/dags/shop__drift/runs/' in page


def record_time() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)
