"""Policy language: models, loading with positions, semantic checks. No Airflow import."""

from convoy.policy.errors import Diagnostic, PolicyError, format_diagnostics
from convoy.policy.loader import LoadedPolicy, declared_name, discover_policies, load_policy
from convoy.policy.migrations import MigrationFile, scan_migrations
from convoy.policy.models import Policy
from convoy.policy.schema import json_schema

__all__ = [
    "Diagnostic",
    "LoadedPolicy",
    "MigrationFile",
    "Policy",
    "PolicyError",
    "declared_name",
    "discover_policies",
    "format_diagnostics",
    "json_schema",
    "load_policy",
    "scan_migrations",
]
