"""Seed the metadata DB of the browser test with two runs of ``shop-demo`` and a report.

Run as a subprocess (``python tests/ui/seed_runs.py``) with the test's
AIRFLOW_HOME, after ``airflow db migrate``: parses the DAG folder into the DB
(as ``airflow dags reserialize`` does), creates a failed run (rolled back, with
a run report) and a running one (task states and a ``progress`` XCom), so the
page shows real rows read through Airflow's ORM; when the policy has a
``driftCheck``, a failed run of ``<policy>__drift`` with its ``status`` XCom.
No scheduler needed.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

DAG_ID = os.environ.get("SEED_DAG_ID", "shop-demo")
FAILED_RUN = "manual__2026-11-24T09:00:00+00:00"
RUNNING_RUN = "manual__2026-11-25T09:30:00+00:00"
#: A failed run of the policy's drift check (``driftCheck``), when the policy has one.
DRIFT_RUN = "scheduled__2026-11-26T08:00:00+00:00"
#: What that run's ``report`` task stored: ``convoy status --json``, cart changed by hand.
DRIFT_STATUS = {
    "policy": DAG_ID,
    "verdict": "drift",
    "exit_code": 4,
    "services": [
        {
            "name": "cart",
            "verdict": "drift",
            "reasons": [
                "server: runs registry.example.com/cart:2.4.0-hotfix, convoy last set "
                "registry.example.com/cart:2.4.0, policy registry.example.com/cart:2.4.0"
            ],
        },
        {"name": "redis", "verdict": "in sync", "reasons": []},
        {
            "name": "checkout",
            "verdict": "degraded",
            "reasons": ["rollout failed: CrashLoopBackOff"],
        },
    ],
    "datastores": [{"name": "orders", "verdict": "pending", "reasons": ["pending: 3"]}],
}


def main() -> int:
    from airflow.dag_processing.bundles.base import unpack_bundle_version
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    from convoy.observe.report import ServiceRow, build_report, write_report

    with create_session() as session:
        manager = DagBundlesManager()
        manager.sync_bundles_to_db(session=session)
        session.commit()
        for bundle in manager.get_all_dag_bundles():
            bundle.initialize()
            bag = BundleDagBag(bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
            version, data = unpack_bundle_version(bundle.get_current_version(), bundle)
            sync_bag_to_db(
                bag, bundle.name, bundle_version=version, version_data=data, session=session
            )
        session.commit()

    now = dt.datetime.now(dt.UTC)
    runs = {
        FAILED_RUN: (now - dt.timedelta(hours=20), DagRunState.FAILED),
        RUNNING_RUN: (now - dt.timedelta(minutes=6), DagRunState.RUNNING),
    }
    with create_session() as session:
        dag = SerializedDagModel.get_dag(DAG_ID, session=session)
        assert dag is not None, f"{DAG_ID} was not serialized"
        for run_id, (start, state) in runs.items():
            dr = dag.create_dagrun(
                run_id=run_id,
                run_after=start,
                run_type=DagRunType.MANUAL,
                triggered_by=DagRunTriggeredByType.TEST,
                state=state,
                start_date=start,
                conf={},
                session=session,
            )
            if state == DagRunState.FAILED:
                dr.end_date = start + dt.timedelta(minutes=3)
        session.commit()
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == DAG_ID, TaskInstance.run_id.in_(list(runs))
            )
        ).all()
        for ti in tis:
            ti.state = _state(ti.run_id, ti.task_id)
            if ti.state is not None:
                ti.start_date = runs[ti.run_id][0]
        session.commit()
        running_transform = next(
            ti for ti in tis if ti.run_id == RUNNING_RUN and ti.state == "running"
        )
        session.add(
            XComModel(
                dag_run_id=running_transform.dag_run.id,
                task_id=running_transform.task_id,
                map_index=running_transform.map_index,
                key="progress",
                dag_id=DAG_ID,
                run_id=RUNNING_RUN,
                value={
                    "done": 120000,
                    "total": 300000,
                    "unit": "rows",
                    "rate": 41000,
                    "eta_seconds": 5,
                },
            )
        )
        session.commit()
        print(sorted({ti.task_id for ti in tis}))
        _seed_drift_check(session, now)

    report = build_report(
        policy_name=DAG_ID,
        digest="0" * 64,
        run_id=FAILED_RUN,
        triggered_by="ui-test",
        dry_run=False,
        started=runs[FAILED_RUN][0],
        finished=runs[FAILED_RUN][0] + dt.timedelta(minutes=3),
        final_state="failed",
        services=[ServiceRow("checkout", status="failed", reverted=True)],
    )
    write_report(report, Path(os.environ["CONVOY_REPORTS_DIR"]))
    return 0


def _seed_drift_check(session: Any, now: dt.datetime) -> None:
    """A finished run of ``<policy>__drift`` whose ``report`` task stored :data:`DRIFT_STATUS`."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    dag = SerializedDagModel.get_dag(DAG_ID + "__drift", session=session)
    if dag is None:
        return
    start = now - dt.timedelta(minutes=30)
    dr = dag.create_dagrun(
        run_id=DRIFT_RUN,
        run_after=start,
        run_type=DagRunType.SCHEDULED,
        triggered_by=DagRunTriggeredByType.TEST,
        state=DagRunState.FAILED,
        start_date=start,
        logical_date=start,
        data_interval=(start, start),
        conf={},
        session=session,
    )
    dr.end_date = start + dt.timedelta(seconds=4)
    session.commit()
    ti = session.scalars(
        select(TaskInstance).where(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == DRIFT_RUN
        )
    ).one()
    ti.state = "failed"
    ti.start_date = start
    session.add(
        XComModel(
            dag_run_id=dr.id,
            task_id=ti.task_id,
            map_index=ti.map_index,
            key="status",
            dag_id=dag.dag_id,
            run_id=DRIFT_RUN,
            value=DRIFT_STATUS,
        )
    )
    session.commit()


def _state(run_id: str, task_id: str) -> str | None:
    leaf = task_id.rsplit(".", 1)[-1]
    if run_id == FAILED_RUN:
        if leaf == "rollout_checkout":
            return "failed"
        return "success"  # everything else, the rollback group included, succeeded
    # the running run: waves 0 and 1 done, a datastore transform running, the rest waiting
    if task_id.startswith(("wave_0.", "wave_1.")) or leaf == "preflight":
        return "success"
    if task_id.startswith("datastore_"):
        stage = leaf.split("_", 1)[0]
        return {"backup": "success", "migrate": "success", "partitions": "success"}.get(
            stage, "running" if stage == "transform" else None
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
