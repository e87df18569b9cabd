"""Register one Airflow DAG per upgrade policy in ``dags/policies/*.yaml``.

``CONVOY_POLICIES_DIR`` overrides the directory. Everything else lives in
:mod:`convoy.airflow`; an invalid policy becomes a paused placeholder DAG that
shows its errors, so it never hides the other policies' DAGs.
"""

from __future__ import annotations

from pathlib import Path

from convoy.airflow import policies_dir, register_policies

globals().update(register_policies(policies_dir(Path(__file__).parent / "policies")))
