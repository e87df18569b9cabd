"""``alerts.deadlineMinutes`` through a real scheduler and triggerer.

Airflow 3.3 evaluates Deadline Alerts outside the DAG run: creating the run
stores a ``deadline`` row (queued_at + interval); the scheduler loop marks it
missed once that time has passed and queues the ``AsyncCallback`` as a
trigger; the triggerer then runs ``convoy.airflow.alerts.deadline_missed``.
``dag.test()`` does none of that, so this test starts ``airflow scheduler``,
``triggerer``, ``dag-processor`` and ``api-server`` (LocalExecutor, SQLite) in
a private ``AIRFLOW_HOME``, triggers a policy whose only rollout never becomes
ready on the emulated cluster, and waits for the webhook to receive the
deadline alert while the run is still going.

``CONVOY_DEADLINE_SECONDS_OVERRIDE`` shortens the policy's one-minute deadline
so the whole test stays around two minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow_services import AirflowServices, airflow_services, wait_for
from e2e_helpers import REPO
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

DAG_ID = "deadline-e2e"
NAMESPACE = "deadline"
RUN_ID = "manual__deadline-e2e"
DEADLINE_SECONDS = 15
NEW_IMAGE = "registry.example.com/api:2.0.0-never-ready"
#: Every step after the services are up: trigger, deadline, scheduler loop, triggerer.
ALERT_TIMEOUT = 120


def _policy(webhook: str) -> dict[str, Any]:
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": DAG_ID, "description": "a rollout that never becomes ready"},
        "execution": "local",
        "kubernetes": {
            "namespace": NAMESPACE,
            "connId": "kubernetes_default",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        # Longer than the test: the run must still be going when the deadline passes.
        "rollout": {"maxParallel": 1, "progressDeadlineSeconds": 600},
        "services": [
            {
                "name": "api",
                "workload": {"kind": "Deployment", "name": "api"},
                "containers": {"server": NEW_IMAGE},
            }
        ],
        "alerts": {"onFailure": [webhook], "deadlineMinutes": 1},
    }


def test_a_run_that_misses_its_deadline_fires_the_deadline_alert(
    emulated_cluster: Any, webhook_receiver: WebhookReceiver, tmp_path: Path
) -> None:
    from convoy.policy import load_policy

    policies = tmp_path / "policies"
    policies.mkdir()
    # The path carries a token, as real webhook URLs do: it must never reach the alert.
    token = secrets.token_hex(8)
    path = policies / f"{DAG_ID}.yaml"
    path.write_text(
        yaml.safe_dump(_policy(webhook_receiver.url(f"/hooks/{token}")), sort_keys=False)
    )
    loaded = load_policy(path)
    emulated_cluster.seed_from_policy(loaded.policy)
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    conn_secret = secrets.token_hex(12)
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
            {
                "conn_type": "kubernetes",
                "password": conn_secret,
                "extra": {"kube_config_path": str(kubeconfig)},
            }
        ),
        "CONVOY_EXECUTION_MODE": "local",
        "CONVOY_POLICIES_DIR": str(policies),
        "CONVOY_RUNS_DIR": str(tmp_path / "runs"),
        "CONVOY_REPORTS_DIR": str(tmp_path / "reports"),
        "CONVOY_DEADLINE_SECONDS_OVERRIDE": str(DEADLINE_SECONDS),
    }
    started = time.monotonic()
    with airflow_services(tmp_path / "af", env) as af:
        up = time.monotonic()
        _wait_for_serialized_dag(af)
        parsed = time.monotonic()
        af.cli("dags", "trigger", DAG_ID, "--run-id", RUN_ID)
        triggered = time.monotonic()
        if not webhook_receiver.received.wait(ALERT_TIMEOUT):
            raise AssertionError(
                f"no alert within {ALERT_TIMEOUT} s of the trigger; "
                + _db_state(af)
                + af.log_tails()
            )
        waited = time.monotonic() - triggered
        run_state = af.query(
            "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", DAG_ID, RUN_ID
        )
        [(missed, deadline_time, queued_at)] = af.query(
            "SELECT d.missed, d.deadline_time, r.queued_at FROM deadline d "
            "JOIN dag_run r ON d.dagrun_id = r.id WHERE r.run_id = ?",
            RUN_ID,
        )
        [raw] = webhook_receiver.raw
        body = json.loads(raw)
        context = f"\nalert: {body}" + _db_state(af) + af.log_tails()
        assert body["event"] == "deadline", context
        assert body["policy"] == DAG_ID, context
        assert body["run_id"] == RUN_ID, context
        assert body["state"] == "running", context
        assert "missed its deadline" in body["subject"], context
        assert RUN_ID in body["subject"], context
        assert "past its deadline" in body["message"], context
        assert body["run_url"].endswith(f"/dags/{DAG_ID}/runs/{RUN_ID}"), context
        for secret in (token, conn_secret, af.env["AIRFLOW__API_AUTH__JWT_SECRET"]):
            assert secret not in raw.decode(), "a secret reached the alert"
        # Sent by the scheduler's deadline check while the run was going, not by a run callback.
        assert run_state == [("running",)], context
        assert missed == 1, context
        assert _utc(deadline_time) - _utc(queued_at) == dt.timedelta(seconds=DEADLINE_SECONDS)
        assert webhook_receiver.arrived[0] >= _utc(deadline_time).timestamp(), context
        # What kept the run going: its rollout, patched and waiting for pods that never get
        # ready. Under load the deadline can pass while preflight still runs, so this is
        # checked after the alert rather than at the moment it arrived.
        try:
            wait_for(
                lambda: _rollout_hangs(af, emulated_cluster), timeout=60, what="the hung rollout"
            )
            # The triggerer reports the callback's result (alerts sent) back to the DB.
            wait_for(
                lambda: (
                    af.query("SELECT state, output FROM callback") == [("success", "1")] or None
                ),
                timeout=30,
                what="the callback to be recorded as successful",
            )
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(str(exc) + _db_state(af) + af.log_tails()) from None
        checked = time.monotonic()
    print(
        f"services up {up - started:.0f} s, DAG parsed +{parsed - up:.0f} s, "
        f"trigger +{triggered - parsed:.0f} s, alert +{waited:.0f} s, "
        f"rollout seen +{checked - triggered - waited:.0f} s, "
        f"stopped after {time.monotonic() - started:.0f} s in all; exits {af.stopped}"
    )


def _utc(value: str) -> dt.datetime:
    """A metadata DB timestamp (SQLite keeps UTC as naive text)."""
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


def _rollout_hangs(af: AirflowServices, cluster: Any) -> bool | None:
    [(run_state,)] = af.query(
        "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", DAG_ID, RUN_ID
    )
    assert run_state == "running", f"the run ended ({run_state}) with a hung rollout"
    rollout = af.query(
        "SELECT state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        DAG_ID,
        RUN_ID,
        "wave_0.rollout_api",
    )
    patched = cluster.images("Deployment", NAMESPACE, "api") == {"server": NEW_IMAGE}
    return True if patched and rollout == [("running",)] else None


def _wait_for_serialized_dag(af: AirflowServices) -> None:
    def parsed() -> bool | None:
        if not af.db_path.exists():
            return None
        rows = af.query(
            "SELECT count(*) FROM deadline_alert d JOIN serialized_dag s "
            "ON d.serialized_dag_id = s.id WHERE s.dag_id = ?",
            DAG_ID,
        )
        return True if rows and rows[0][0] else None

    try:
        wait_for(parsed, timeout=120, interval=1, what="the DAG and its deadline alert in the DB")
    except TimeoutError as exc:
        raise AssertionError(str(exc) + _db_state(af) + af.log_tails()) from None


def _db_state(af: AirflowServices) -> str:
    """The run, its task states, deadlines, callbacks and triggers, for failure messages."""
    queries = {
        "dag_run": "SELECT run_id, state, queued_at, start_date FROM dag_run",
        "task_instance": "SELECT task_id, state, try_number FROM task_instance",
        "deadline": "SELECT deadline_time, missed, callback_id FROM deadline",
        "callback": "SELECT type, state, output FROM callback",
        "trigger": "SELECT id, classpath, triggerer_id FROM trigger",
        "import_error": "SELECT filename, stacktrace FROM import_error",
    }
    lines = ["\n----- metadata DB -----"]
    for name, sql in queries.items():
        try:
            lines.append(f"{name}: {af.query(sql)}")
        except Exception as exc:  # the table may not exist yet
            lines.append(f"{name}: {type(exc).__name__}: {exc}")
    return "\n".join(lines)
