"""The one exception type of :mod:`convoy.plan`."""

from __future__ import annotations


class PlanError(Exception):
    """A plan cannot be built (unknown service in a subset, dependency cycle...)."""
