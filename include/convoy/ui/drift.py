"""The drift column of the Upgrades page: the latest scheduled drift check of each policy.

:func:`fetch_drift` reads, inside the api-server, the newest run of each
``<policy>__drift`` DAG and its ``report`` task's XCom ``status`` (the
``convoy status --json`` document); :func:`drift_view` turns that into
display values. Airflow is imported lazily (as in :mod:`convoy.ui.airflow_runs`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

#: Kept in step with :mod:`convoy.airflow.drift` (imported there from Airflow modules).
SUFFIX = "__drift"
TASK_ID = "report"
STATUS_KEY = "status"

#: The badge colour (a state class of the page's CSS) of each verdict.
BADGE = {
    "in sync": "success",
    "pending": "queued",
    "drift": "up_for_retry",
    "degraded": "failed",
    "unknown": "none",
}


@dataclass(frozen=True)
class DriftRecord:
    """The newest drift check run of a policy and the status it stored (if any)."""

    run_id: str
    state: str | None
    when: dt.datetime | None
    status: Mapping[str, Any] | None = field(default=None)


def drift_view(policy: str, record: DriftRecord | None, airflow_root: str) -> dict[str, Any] | None:
    """Display values of a policy's drift column (``None``: no drift check has run)."""
    if record is None:
        return None
    root = airflow_root if airflow_root.endswith("/") else airflow_root + "/"
    status = record.status or {}
    verdict = str(status.get("verdict") or ("running" if record.state == "running" else "unknown"))
    items = [
        (str(item.get("name")), BADGE.get(str(item.get("verdict")), "none"))
        for kind in ("services", "datastores")
        for item in status.get(kind, [])
        if item.get("verdict") != "in sync"
    ]
    return {
        "verdict": verdict,
        "badge": BADGE.get(verdict, "running" if verdict == "running" else "none"),
        "when": record.when.strftime("%Y-%m-%d %H:%M:%S UTC") if record.when else "-",
        "findings": items,
        "url": f"{root}dags/{quote(policy + SUFFIX, safe='')}/runs/{quote(record.run_id, safe='')}",
    }


def fetch_drift(policies: Iterable[str]) -> dict[str, DriftRecord]:
    """The newest run of each policy's drift check DAG, with its stored status."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, DriftRecord] = {}
    with create_session() as session:
        for policy in sorted(set(policies)):
            dag_id = policy + SUFFIX
            run = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
            ).first()
            if run is None:
                continue
            xcom = session.scalars(
                select(XComModel).where(
                    XComModel.dag_id == dag_id,
                    XComModel.run_id == run.run_id,
                    XComModel.task_id == TASK_ID,
                    XComModel.key == STATUS_KEY,
                )
            ).first()
            status = XComModel.deserialize_value(xcom) if xcom is not None else None
            state = getattr(run.state, "value", run.state)
            out[policy] = DriftRecord(
                run_id=run.run_id,
                state=str(state) if state is not None else None,
                when=run.end_date or run.start_date,
                status=status if isinstance(status, Mapping) else None,
            )
    return out
