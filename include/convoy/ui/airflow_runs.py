"""Read recent runs of the policy DAGs from Airflow's metadata database.

Runs inside the api-server (the plugin), through Airflow's ORM models and
session, read-only. Airflow is imported lazily so :mod:`convoy.ui` stays
importable (and testable) without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from convoy.ui.analysis import ANALYSIS_KEY
from convoy.ui.runs import PROGRESS_KEY, RunRecord, TaskRecord, task_key


def fetch_runs(dag_ids: Iterable[str], *, limit: int = 5) -> dict[str, list[RunRecord]]:
    """The ``limit`` most recent runs of each DAG, newest first, with tasks and progress XComs."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    result: dict[str, list[RunRecord]] = {}
    with create_session() as session:
        for dag_id in sorted(set(dag_ids)):
            runs = session.scalars(
                select(DagRun)
                .where(DagRun.dag_id == dag_id)
                .order_by(DagRun.id.desc())
                .limit(limit)
            ).all()
            if not runs:
                result[dag_id] = []
                continue
            run_ids = [r.run_id for r in runs]
            tasks: dict[str, list[TaskRecord]] = {rid: [] for rid in run_ids}
            rows = session.execute(
                select(
                    TaskInstance.run_id,
                    TaskInstance.task_id,
                    TaskInstance.map_index,
                    TaskInstance.state,
                    TaskInstance.start_date,
                    TaskInstance.end_date,
                ).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(run_ids))
            ).all()
            for run_id, task_id, map_index, state, start, end in rows:
                tasks[run_id].append(TaskRecord(task_id, _state(state), int(map_index), start, end))
            progress: dict[str, dict[str, Any]] = {rid: {} for rid in run_ids}
            analysis: dict[str, dict[str, Any]] = {rid: {} for rid in run_ids}
            xcoms = session.scalars(
                select(XComModel).where(
                    XComModel.dag_id == dag_id,
                    XComModel.run_id.in_(run_ids),
                    XComModel.key.in_([PROGRESS_KEY, ANALYSIS_KEY]),
                )
            ).all()
            for x in xcoms:
                found = progress if x.key == PROGRESS_KEY else analysis
                found[x.run_id][task_key(x.task_id, x.map_index)] = XComModel.deserialize_value(x)
            result[dag_id] = [
                RunRecord(
                    dag_id=dag_id,
                    run_id=r.run_id,
                    state=_state(r.state),
                    run_type=_state(r.run_type) or "",
                    start=r.start_date,
                    end=r.end_date,
                    tasks=tuple(sorted(tasks[r.run_id], key=lambda t: (t.task_id, t.map_index))),
                    progress=progress[r.run_id],
                    analysis=analysis[r.run_id],
                )
                for r in runs
            ]
    return result


def _state(value: Any) -> str | None:
    """Airflow states are str enums; keep their plain value."""
    if value is None:
        return None
    return str(getattr(value, "value", value))
