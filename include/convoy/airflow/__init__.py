"""The only package that builds Airflow objects from convoy plans."""

from convoy.airflow.dag_builder import build_dag
from convoy.airflow.registry import placeholder_dag, policies_dir, register_policies

__all__ = ["build_dag", "placeholder_dag", "policies_dir", "register_policies"]
