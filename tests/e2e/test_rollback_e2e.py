"""Rollback end to end (local mode, emulated cluster, ``dag.test()``): a revert that
fails once and succeeds on retry, and a manual ``mode=rollback`` run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import images, load_dag, states

pytestmark = pytest.mark.e2e

PREVIOUS = "2.3.0"


def _targets(policy: Any) -> dict[str, dict[str, str]]:
    return {s.name: dict(s.containers) for s in policy.services}


def _try_numbers(run: Any) -> dict[str, int]:
    return {ti.task_id: ti.try_number for ti in run.get_task_instances() if ti.map_index < 0}


def test_revert_that_fails_once_succeeds_on_retry(
    cluster: Any,
    policy_dir: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from convoy.rollout.runner import RolloutRunner

    monkeypatch.setenv("CONVOY_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("CONVOY_REVERT_RETRY_DELAY_SECONDS", "0")
    loaded = policy_dir(crashloop=True)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    # The first image revert meets a 403 on its PATCH (RBAC fault of the emulator);
    # the permission is back for the retry.
    original = RolloutRunner.revert
    calls: list[str] = []
    kinds = ("deployments", "statefulsets", "daemonsets")

    def revert_once_forbidden(self: Any, target: Any, **kwargs: Any) -> Any:
        calls.append(target.name)
        if len(calls) > 1:
            return original(self, target, **kwargs)
        for kind in kinds:
            cluster.forbid("patch", kind)
        try:
            return original(self, target, **kwargs)
        finally:
            for kind in kinds:
                cluster.allow("patch", kind)

    monkeypatch.setattr(RolloutRunner, "revert", revert_once_forbidden)
    run = load_dag("shop-demo").test()
    got = states(run)
    assert run.state == "failed"
    assert got["wave_2.rollout_checkout"] == "failed"
    assert got["rollback.gate"] == "success"
    reverts = [t for t in got if t.startswith("rollback.revert_")]
    assert all(got[t] == "success" for t in reverts), got
    assert any(r.status == 403 and r.verb == "PATCH" for r in cluster.requests)
    # The first revert (newest wave first: checkout) needed a second try.
    assert calls[0] == "checkoutservice"
    assert _try_numbers(run)["rollback.revert_checkout"] == 2
    assert got["outcome"] == "failed"
    assert images(cluster, loaded.policy) == seeded
    (md,) = (tmp_path / "reports" / "shop-demo").glob("*/report.md")
    text = md.read_text()
    assert "**Final state: FAILED - rolled back**" in text
    assert "image checkout:" in text
    assert "LEFT BEHIND" not in text


def test_manual_rollback_reverts_only_what_that_run_changed(
    cluster: Any, policy_dir: Callable[..., Any]
) -> None:
    loaded = policy_dir(crashloop=False)
    seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
    targets = _targets(loaded.policy)
    dag = load_dag("shop-demo")
    first = dag.test(run_conf={"services": ["cart"]})  # cart and its dependency redis
    assert first.state == "success"
    later = dag.test(run_conf={"services": ["currency"]})
    assert later.state == "success"
    assert images(cluster, loaded.policy)["currency"] == targets["currency"]

    run = load_dag("shop-demo").test(run_conf={"mode": "rollback", "rollback_run_id": first.run_id})
    got = states(run)
    assert run.state == "success", got
    assert got["rollback.gate"] == "success"
    assert got["wave_1.rollout_cart"] == "skipped"
    assert got["outcome"] == "success"
    after = images(cluster, loaded.policy)
    assert after["cart"] == seeded["cart"]
    assert after["redis"] == seeded["redis"]
    # A later run's rollout is not flipped back.
    assert after["currency"] == targets["currency"]
    results = _revert_results(run)
    assert results["rollback.revert_cart"]["reverted"] is True
    assert results["rollback.revert_currency"]["reverted"] is False
    assert results["rollback.revert_currency"]["reason"] == (
        f"not changed by {first.run_id}: "
        f"Deployment/currencyservice was last changed by run {later.run_id}"
    )


def _revert_results(run: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == run.dag_id,
            XComModel.run_id == run.run_id,
            XComModel.key == "return_value",
        )
        return {
            r.task_id: XComModel.deserialize_value(r)
            for r in rows
            if r.task_id.startswith("rollback.revert_")
        }
