"""``rollout_local`` pushes XCom ``progress`` while the rollout waits (emulated cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict
from fake_ti import FakeTI

from convoy.airflow import config, local_rollout, runtime

NS = "shop"


@pytest.fixture
def policy(write_policy: Any) -> Path:
    """``cart`` with the emulator's slow image (the run record's target)."""
    cart = {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
            "containers": {"server": "cart:2.4.0-slow"}}  # fmt: skip
    return write_policy("shop.yaml", policy_dict("shop", services=[cart]))  # type: ignore[no-any-return]


@pytest.fixture
def kube_conn(emulated_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    return "kubernetes_default"


def test_rollout_local_pushes_progress_while_it_waits(
    emulated_cluster: Any, kube_conn: str, policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "0")
    emulated_cluster.add_workload("Deployment", NS, "cartservice", {"server": "cart:2.3.0"})
    ti = FakeTI("wave_1.rollout_cart")
    ti.freeze(policy, services=["cart"])
    step = {
        "service": "cart",
        "namespace": NS,
        "kind": "Deployment",
        "workload": "cartservice",
        "containers": {"server": "cart:2.4.0-slow"},
    }
    data = local_rollout.rollout_local(
        step=step,
        conn_id=kube_conn,
        in_cluster=False,
        deadline_seconds=60,
        ti=ti,
        run_id="manual__1",
    )
    assert data["status"] == "complete"
    progress = ti.progress()
    # mid-run records from the runner, then the final one of rollout_done
    assert len(progress) >= 3
    assert any(0 < v["done"] < 3 for v in progress)
    assert {v["label"] for v in progress} == {"cart"}
    assert {v["unit"] for v in progress} == {"replicas"}
    assert {v["total"] for v in progress} == {3}
    assert progress[-1]["done"] == 3
    assert progress[-1]["eta_seconds"] == 0
    # progress was pushed before the result existed, i.e. while the rollout ran
    keys = ti.keys()
    assert keys.index(config.RESULT_KEY) > keys.index(runtime.PROGRESS_KEY)
    json.dumps(progress)


def test_rollout_local_keeps_going_when_a_progress_push_fails(
    emulated_cluster: Any, kube_conn: str, policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "0")
    emulated_cluster.add_workload("Deployment", NS, "cartservice", {"server": "cart:2.3.0"})

    class RefusingTI(FakeTI):
        def xcom_push(self, key: str, value: Any) -> None:
            if key == runtime.PROGRESS_KEY:
                raise RuntimeError("execution API unreachable")
            super().xcom_push(key, value)

    ti = RefusingTI("wave_1.rollout_cart")
    ti.freeze(policy, services=["cart"])
    data = local_rollout.rollout_local(
        step={
            "service": "cart",
            "namespace": NS,
            "kind": "Deployment",
            "workload": "cartservice",
            "containers": {"server": "cart:2.4.0"},
        },
        conn_id=kube_conn,
        in_cluster=False,
        deadline_seconds=60,
        ti=ti,
        run_id="manual__1",
    )
    assert data["status"] == "complete"
    assert ti.keys() == [local_rollout.BEFORE_KEY, config.RESULT_KEY]
