"""Register one Airflow DAG per upgrade policy in ``dags/policies/*.yaml``.

``CONVOY_POLICIES_DIR`` overrides the directory. Everything else lives in
:mod:`convoy.airflow`; an invalid policy becomes a paused placeholder DAG that
shows its errors, so it never hides the other policies' DAGs.

A task process parses this file to find its task: Airflow's parsing context
then names the task's DAG, and only that policy is loaded and built.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import get_parsing_context

from convoy.airflow.collector import collector_paused

# convoy's modules are imported with the collector paused too, as the DAGs are
# built: a full collection set off by the imports walks every object Airflow
# has made so far and finds next to nothing.
with collector_paused():
    from convoy.airflow import policies_dir, register_policies

    globals().update(
        register_policies(
            policies_dir(Path(__file__).parent / "policies"),
            dag_id=get_parsing_context().dag_id,
        )
    )
