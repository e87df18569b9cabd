"""The only package that builds Airflow objects from convoy plans.

The public names are imported on first use: the triggerer imports
``convoy.airflow.alerts`` for a deadline callback inside its event loop, and
importing the DAG builder (and with it the KubernetesPodOperator) there would
block every other trigger for seconds.

Importing the package installs the Airflow adapters of the Airflow-free layers:
convoy's metrics go through Airflow's ``Stats`` (:mod:`convoy.airflow.stats`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convoy.airflow.dag_builder import build_dag
    from convoy.airflow.registry import placeholder_dag, policies_dir, register_policies

from convoy.airflow import stats as _stats

_stats.install()

__all__ = ["build_dag", "placeholder_dag", "policies_dir", "register_policies"]

_HOMES = {
    "build_dag": "convoy.airflow.dag_builder",
    "placeholder_dag": "convoy.airflow.registry",
    "policies_dir": "convoy.airflow.registry",
    "register_policies": "convoy.airflow.registry",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
