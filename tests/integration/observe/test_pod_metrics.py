"""Rollout pods (``execution: kubernetes``) send the rollout metrics from the Airflow worker.

No cluster: the operator's post-pod handling (``RolloutPod.record_result``,
what ``extract_xcom`` calls with the pod's JSON) gets the results the runner
prints (``{"ok": true, **RolloutResult.to_dict()}`` or the error JSON) in a
subprocess configured only through Airflow's ``[metrics]`` environment, as a
worker would be; a real UDP StatsD listener receives what it sends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from statsd_listener import Sample, StatsdListener, mapped_names

pytestmark = pytest.mark.integration

EMIT = textwrap.dedent(
    """
    import json
    import time

    from convoy.airflow import runtime
    from convoy.airflow.pods import RevertPod, RolloutPod
    from convoy.rollout.errors import DeadlineExceeded
    from convoy.rollout.runner import RolloutResult


    class TI:
        dag_id = "shop"

        def __init__(self, task_id):
            self.task_id = task_id
            self.pushed = {}

        def get_task_states(self, dag_id, run_ids):
            return {run_ids[0]: {"wave_0.rollout_redis": "success", self.task_id: "running"}}

        def xcom_pull(self, task_ids, key="return_value"):
            return None

        def xcom_push(self, key, value):
            self.pushed[key] = value


    def operator(cls, service, task_id):
        op = cls(task_id=task_id, name=f"convoy-{service}", image="runner", namespace="shop")
        op.service = service
        return op


    def applied(service, **kw):
        fields = dict(
            action="apply", namespace="shop", kind="Deployment", name=service, changed=True,
            dry_run=False, previous_images={"server": "cart:2.3.0"},
            images={"server": "cart:2.4.0"}, status="complete", ready_seconds=3.0,
            replicas={"desired": 3, "updated": 3, "ready": 3}, run_id="manual__1",
        )
        fields.update(kw)
        return {"ok": True, **RolloutResult(**fields).to_dict()}


    pushed = {}
    # A failed pod: no rollout metrics; the task's failure callback counts it.
    ctx = {"ti": TI("wave_1.rollout_checkout"), "run_id": "manual__1"}
    failed = {"action": "apply", "ok": False,
              **DeadlineExceeded("rollout of checkout did not complete in 10s").to_dict()}
    operator(RolloutPod, "checkout", "wave_1.rollout_checkout").record_result(ctx, failed)
    runtime.step_failure_callback(ctx)
    # A revert pod and a dry run send nothing either.
    ctx = {"ti": TI("rollback.revert_payment"), "run_id": "manual__1"}
    reverted = {**applied("payment"), "action": "revert", "reverted": True}
    operator(RevertPod, "payment", "rollback.revert_payment").record_result(ctx, reverted)
    ctx = {"ti": TI("wave_1.rollout_catalog"), "run_id": "manual__1"}
    op = operator(RolloutPod, "catalog", "wave_1.rollout_catalog")
    op.record_result(ctx, applied("catalog", dry_run=True, changed=False, status="dry-run"))
    pushed["catalog"] = ctx["ti"].pushed
    # A rollout pod that finished 12.5 s after its task started.
    ctx = {"ti": TI("wave_1.rollout_cart"), "run_id": "manual__1"}
    op = operator(RolloutPod, "cart", "wave_1.rollout_cart")
    op._convoy_started = time.monotonic() - 12.5
    op.record_result(ctx, applied("cart"))
    pushed["cart"] = ctx["ti"].pushed
    print(json.dumps(pushed))
    """
)


def test_rollout_pod_results_send_the_local_rollout_metrics(
    statsd: StatsdListener, tmp_path: Path
) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), **statsd.statsd_env()}
    proc = subprocess.run(
        [sys.executable, "-c", EMIT], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem = "airflow.convoy."
    names = {
        f"{stem}rollout.services_rolled_out.shop.cart",
        f"{stem}rollout.duration.shop.cart",
        f"{stem}rollout.readiness_wait.shop.cart",
        f"{stem}progress.services_done.shop",
    }
    got = [s for s in statsd.wait_for(names) if s.name.startswith(stem)]
    by_name = {s.name: s for s in got}
    duration = by_name.pop(f"{stem}rollout.duration.shop.cart")
    assert duration.type == "ms"
    assert 12_500 <= duration.value < 12_500 + 120_000
    assert [s for s in got if s.name != duration.name] == [
        Sample(f"{stem}step.failed.shop.rollout", 1, "c"),
        Sample(f"{stem}rollout.services_rolled_out.shop.cart", 1, "c"),
        Sample(f"{stem}rollout.readiness_wait.shop.cart", 3000, "ms"),
        # wave_0.rollout_redis already succeeded, and now cart
        Sample(f"{stem}progress.services_done.shop", 2, "g"),
    ]
    for sample in got:
        assert len(mapped_names(sample.name)) == 1, sample.name
    pushed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert pushed["cart"]["progress"]["done"] == 3
    assert pushed["cart"]["progress"]["total"] == 3
    assert pushed["cart"]["progress"]["unit"] == "replicas"
    assert pushed["catalog"]["progress"]["label"] == "catalog"
