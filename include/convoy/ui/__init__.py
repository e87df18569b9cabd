"""Data and HTML of the "Upgrades" Airflow UI page (the plugin in ``plugins/`` serves it).

Pure apart from :mod:`convoy.ui.airflow_runs`, which reads runs from Airflow's
metadata database inside the api-server. No FastAPI import here.
"""

from convoy.ui.page import render_page
from convoy.ui.policies import DiagnosticView, PolicyView, gather_policies, policies_dir
from convoy.ui.runs import (
    ProgressView,
    RunRecord,
    RunView,
    TaskRecord,
    aggregate_state,
    summarize_run,
)

__all__ = [
    "DiagnosticView",
    "PolicyView",
    "ProgressView",
    "RunRecord",
    "RunView",
    "TaskRecord",
    "aggregate_state",
    "gather_policies",
    "policies_dir",
    "render_page",
    "summarize_run",
]
