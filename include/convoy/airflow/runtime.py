"""What every task of a policy's DAG shares: its policy, progress XCom, failure metrics.

The task callables live by concern: :mod:`convoy.airflow.preflight` (the run
record), :mod:`convoy.airflow.local_rollout` (rollouts and reverts in the
Airflow task), :mod:`convoy.airflow.gates` (rollback gate, outcome),
:mod:`convoy.airflow.report_task` (the run report) and
:mod:`convoy.airflow.datastores`. Kubernetes and engine modules are imported
lazily: parsing a DAG file never needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convoy.airflow import config
from convoy.observe import metrics
from convoy.observe.progress import ProgressSink, progress_value
from convoy.redaction import get_logger

log = get_logger(__name__)


#: XCom key of a long task's latest progress (docs/ui.md).
PROGRESS_KEY = "progress"


def policy_name(context: Mapping[str, Any]) -> str:
    """The policy of the running task (``dag_id`` = ``metadata.name``)."""
    return str(getattr(context.get("ti"), "dag_id", "") or "")


def push_progress(
    ti: Any,
    *,
    done: int,
    total: int | None,
    unit: str,
    rate: float | None,
    eta_seconds: float | None,
    label: str,
) -> None:
    """XCom ``progress`` for the Upgrades page; never raises."""
    publish_progress(
        ti,
        progress_value(
            done=done, total=total, unit=unit, rate=rate, eta_seconds=eta_seconds, label=label
        ),
    )


def publish_progress(ti: Any, value: Mapping[str, Any]) -> None:
    """Push a :func:`~convoy.observe.progress.progress_value` as XCom ``progress``; never raises.

    Also while the task runs: the Task SDK sends the push to the execution API
    at once, so the Upgrades page reads it from the metadata database.
    """
    try:
        ti.xcom_push(key=PROGRESS_KEY, value=dict(value))
    except Exception:
        log.warning("could not push progress %s", value, exc_info=True)


def progress_sink(ti: Any, *, label: str | None = None) -> ProgressSink:
    """A :class:`~convoy.observe.progress.Progress` sink pushing XCom ``progress`` (never raises).

    ``label`` replaces the record's own, so that mid-run records and the final
    one of :func:`rollout_done` (labelled with the service) read the same.
    """

    def sink(value: Mapping[str, Any]) -> None:
        publish_progress(ti, value if label is None else {**value, "label": label})

    return sink


def step_kind(task_id: str) -> metrics.StepKind | None:
    """The ``step_failed`` kind of a task id (``None``: report, outcome, ...)."""
    if task_id == config.PREFLIGHT:
        return "preflight"
    if task_id.startswith(f"{config.ROLLBACK_GROUP}."):
        return "rollback"
    leaf = task_id.rsplit(".", 1)[-1]
    if leaf.startswith("rollout_"):
        return "rollout"
    if leaf == "backup":
        return "backup"
    if leaf == "migrate":
        return "migrate"
    if leaf == "validate":
        return "validate"
    if leaf.startswith(("partitions_", "transform_")):
        return "transform"
    return None


def step_failure_callback(context: Mapping[str, Any]) -> None:
    """Task ``on_failure_callback`` (every task): ``step_failed(policy, kind)``."""
    try:
        kind = step_kind(str(context["ti"].task_id))
        if kind is not None:
            metrics.step_failed(policy_name(context), kind)
    except Exception:
        log.warning("step failure metric not sent", exc_info=True)
