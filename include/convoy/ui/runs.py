"""Recent runs of a policy's DAG: per-service and per-datastore state, progress and ETA.

Pure: works on plain records (:class:`RunRecord`, :class:`TaskRecord`) that
:mod:`convoy.ui.airflow_runs` reads from Airflow, so it is tested without Airflow.

Task ids follow :mod:`convoy.airflow.config`: rollout tasks ``wave_<n>.rollout_<svc>``,
datastore groups ``datastore_<name>.<stage>``, the ``rollback`` group. A task may
push its latest progress as XCom ``progress`` (also while it runs): a mapping
with ``done`` and optionally ``total``, ``unit``, ``rate`` (units/s),
``eta_seconds``, ``label`` and ``updated_at`` (ISO 8601).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from convoy.observe.progress import format_duration
from convoy.ui.analysis import analysis_chips

PROGRESS_KEY = "progress"
ROLLOUT_PREFIX = "rollout_"
DATASTORE_PREFIX = "datastore_"
ROLLBACK_GROUP = "rollback"

FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
#: Task id of the approval gate (``convoy.airflow.approval.TASK_ID``; no Airflow import here).
APPROVAL_TASK = "approve"
#: States of a gate still waiting for its answer (HITL parks in ``awaiting_input``).
_WAITING = frozenset({"awaiting_input", "deferred", "running", "queued", "scheduled"})
FAILED = frozenset({"failed", "upstream_failed"})
_ACTIVE = frozenset(
    {
        "running",
        "queued",
        "scheduled",
        "up_for_retry",
        "up_for_reschedule",
        "restarting",
        "deferred",
        "awaiting_input",
    }
)


@dataclass(frozen=True)
class TaskRecord:
    """One task instance (``map_index`` >= 0 for one instance of a mapped task)."""

    task_id: str
    state: str | None
    map_index: int = -1
    start: dt.datetime | None = None
    end: dt.datetime | None = None


@dataclass(frozen=True)
class RunRecord:
    """One DAG run, its task instances and the ``progress`` XComs of its tasks."""

    dag_id: str
    run_id: str
    state: str | None
    run_type: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    tasks: tuple[TaskRecord, ...] = ()
    #: :func:`task_key` -> the task's ``progress`` XCom value
    progress: Mapping[str, Any] = field(default_factory=dict)
    #: :func:`task_key` -> the task's ``analysis`` XCom value (verified steps)
    analysis: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressView:
    """Progress of one task (from its XCom) or of the whole run (tasks done/total)."""

    label: str
    done: int
    total: int | None
    unit: str = "tasks"
    rate: float | None = None
    eta_seconds: float | None = None
    #: When the task pushed this progress (``updated_at`` of the XCom), if it said.
    updated_at: dt.datetime | None = None
    #: Seconds between ``updated_at`` and the page's "now".
    age_seconds: float | None = None

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return min(100.0, 100.0 * self.done / self.total)

    @property
    def text(self) -> str:
        parts = [f"{self.done}/{self.total}" if self.total is not None else str(self.done)]
        parts.append(self.unit)
        if self.percent is not None:
            parts.append(f"({self.percent:.1f}%)")
        if self.rate is not None:
            parts.append(f"{self.rate:.0f} {self.unit}/s")
        if self.eta_seconds is not None:
            parts.append(f"ETA {format_duration(self.eta_seconds)}")
        if self.age_seconds is not None:
            parts.append(f"(updated {format_duration(self.age_seconds)} ago)")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "rate": self.rate,
            "eta_seconds": self.eta_seconds,
            "percent": self.percent,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "age_seconds": self.age_seconds,
            "text": self.text,
        }


@dataclass(frozen=True)
class RunView:
    """A run as the page shows it."""

    dag_id: str
    run_id: str
    state: str
    run_type: str
    start: dt.datetime | None
    end: dt.datetime | None
    services: tuple[tuple[str, str], ...]
    datastores: tuple[tuple[str, str], ...]
    rollback: str | None
    overall: ProgressView | None
    task_progress: tuple[ProgressView, ...] = ()
    report_url: str | None = None
    #: ``awaiting approval`` / ``approved`` / ``not approved``; ``None``: no gate.
    approval: str | None = None
    #: ``(label, state class)`` per analysis: phase, verdict, latest value.
    analyses: tuple[tuple[str, str], ...] = ()

    @property
    def running(self) -> bool:
        return self.state in ("running", "queued")

    def duration_seconds(self, now: dt.datetime) -> float | None:
        if self.start is None:
            return None
        return max(0.0, ((self.end or now) - self.start).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "state": self.state,
            "run_type": self.run_type,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "services": dict(self.services),
            "datastores": dict(self.datastores),
            "rollback": self.rollback,
            "progress": self.overall.to_dict() if self.overall else None,
            "task_progress": [p.to_dict() for p in self.task_progress],
            "report_url": self.report_url,
            "approval": self.approval,
            "analyses": [label for label, _ in self.analyses],
        }


def aggregate_state(states: Iterable[str | None]) -> str:
    """One state for several task instances (a group or a mapped task)."""
    found = [s or "none" for s in states]
    if not found:
        return "none"
    if any(s in FAILED for s in found):
        return "failed"
    if any(s in _ACTIVE for s in found):
        return "running"
    if all(s == "skipped" for s in found):
        return "skipped"
    if all(s in FINISHED for s in found):
        return "success"
    if any(s in FINISHED for s in found):
        return "running"  # part done, the rest not started yet
    return "none"


def task_key(task_id: str, map_index: int = -1) -> str:
    """Key of :attr:`RunRecord.progress`: the task id, ``<task_id>[<i>]`` for a mapped instance."""
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def _leaf(task_id: str) -> str:
    return task_id.rsplit(".", 1)[-1]


def _services(tasks: Sequence[TaskRecord], order: Sequence[str]) -> tuple[tuple[str, str], ...]:
    by_service: dict[str, list[str | None]] = {}
    for t in tasks:
        leaf = _leaf(t.task_id)
        if leaf.startswith(ROLLOUT_PREFIX) and not t.task_id.startswith(ROLLBACK_GROUP + "."):
            by_service.setdefault(leaf[len(ROLLOUT_PREFIX) :], []).append(t.state)
    names = [n for n in order if n in by_service] + sorted(set(by_service) - set(order))
    return tuple((n, aggregate_state(by_service[n])) for n in names)


def _datastores(tasks: Sequence[TaskRecord], order: Sequence[str]) -> tuple[tuple[str, str], ...]:
    by_store: dict[str, list[str | None]] = {}
    for t in tasks:
        head = t.task_id.split(".", 1)[0]
        if head.startswith(DATASTORE_PREFIX) and "." in t.task_id:
            by_store.setdefault(head[len(DATASTORE_PREFIX) :], []).append(t.state)
    names = [n for n in order if n in by_store] + sorted(set(by_store) - set(order))
    return tuple((n, aggregate_state(by_store[n])) for n in names)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _timestamp(value: Any) -> dt.datetime | None:
    """An aware datetime from an ISO-8601 string (naive = UTC); ``None`` when malformed."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def progress_from_xcom(
    task_id: str, value: Any, now: dt.datetime | None = None
) -> ProgressView | None:
    """A :class:`ProgressView` from a ``progress`` XCom value; ``None`` when malformed.

    With ``now`` and the value's ``updated_at``, the ETA counts down from when the
    task pushed it (a push every few seconds, a page refresh every 15 s).
    """
    if not isinstance(value, Mapping):
        return None
    done = _number(value.get("done"))
    if done is None:
        return None
    total = _number(value.get("total"))
    unit = value.get("unit")
    label = value.get("label")
    eta = _number(value.get("eta_seconds"))
    updated = _timestamp(value.get("updated_at"))
    age: float | None = None
    if updated is not None and now is not None:
        age = max(0.0, (now - updated).total_seconds())
        if eta is not None:
            eta = max(0.0, eta - age)
    return ProgressView(
        label=str(label) if isinstance(label, str) and label else task_id,
        done=int(done),
        total=None if total is None else int(total),
        unit=unit if isinstance(unit, str) and unit else "rows",
        rate=_number(value.get("rate")),
        eta_seconds=eta,
        updated_at=updated,
        age_seconds=age,
    )


def overall_progress(run: RunRecord, now: dt.datetime) -> ProgressView:
    """Tasks done/total (rollback tasks excluded) with an ETA extrapolated from elapsed time."""
    tasks = [t for t in run.tasks if not t.task_id.startswith(ROLLBACK_GROUP + ".")]
    total = len(tasks)
    done = sum(1 for t in tasks if t.state in FINISHED)
    eta: float | None = None
    if run.start is not None and 0 < done < total:
        elapsed = max(0.0, (now - run.start).total_seconds())
        eta = elapsed / done * (total - done)
    elif done == total:
        eta = 0.0
    return ProgressView(label="run", done=done, total=total, unit="tasks", eta_seconds=eta)


def approval_status(tasks: Sequence[TaskRecord]) -> str | None:
    """Where the run's approval gate stands; ``None`` when the policy has none."""
    states = [t.state for t in tasks if t.task_id == APPROVAL_TASK]
    if not states:
        return None
    state = states[0]
    if state == "success":
        return "approved"
    if state in ("failed", "upstream_failed"):
        return "not approved"
    if state in _WAITING:
        return "awaiting approval"
    return None


def summarize_run(
    run: RunRecord,
    *,
    now: dt.datetime,
    service_order: Sequence[str] = (),
    datastore_order: Sequence[str] = (),
    report_url: str | None = None,
) -> RunView:
    """The page's view of one run. Progress is computed for running runs only."""
    state = run.state or "none"
    rollback_states = [t.state for t in run.tasks if t.task_id.startswith(ROLLBACK_GROUP + ".")]
    rollback = aggregate_state(rollback_states) if rollback_states else None
    overall: ProgressView | None = None
    task_progress: tuple[ProgressView, ...] = ()
    if state in ("running", "queued"):
        overall = overall_progress(run, now)
        active = {task_key(t.task_id, t.map_index) for t in run.tasks if t.state in _ACTIVE}
        items = []
        for key, value in sorted(run.progress.items()):
            if key in active:
                view = progress_from_xcom(key, value, now)
                if view is not None:
                    items.append(view)
        task_progress = tuple(items)
    return RunView(
        dag_id=run.dag_id,
        run_id=run.run_id,
        state=state,
        run_type=run.run_type,
        start=run.start,
        end=run.end,
        services=_services(run.tasks, service_order),
        datastores=_datastores(run.tasks, datastore_order),
        rollback=rollback,
        overall=overall,
        task_progress=task_progress,
        report_url=report_url,
        approval=approval_status(run.tasks),
        analyses=analysis_chips(run.analysis),
    )
