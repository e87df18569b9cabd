"""Policy language: models, loading with positions, semantic checks. No Airflow import."""

from convoy.policy.errors import Diagnostic, PolicyError
from convoy.policy.loader import LoadedPolicy, discover_policies, load_policy
from convoy.policy.models import Policy

__all__ = [
    "Diagnostic",
    "LoadedPolicy",
    "Policy",
    "PolicyError",
    "discover_policies",
    "load_policy",
]
