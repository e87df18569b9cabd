"""Policy -> ordered, pure steps (waves, datastore phases, rollback). No Airflow import."""

from convoy.plan.builder import build_plan, expand_subset, topological_levels
from convoy.plan.errors import PlanError
from convoy.plan.models import (
    BEFORE_ROLLOUT,
    STAGES,
    ApprovalGate,
    DatastorePhase,
    DatastoreStep,
    Plan,
    RevertDataStep,
    RevertImagesStep,
    RollbackStep,
    RolloutStep,
    Wave,
    compute_digest,
)
from convoy.plan.render import (
    render_approval_markdown,
    render_rollback_approval_markdown,
    render_text,
)

__all__ = [
    "BEFORE_ROLLOUT",
    "STAGES",
    "ApprovalGate",
    "DatastorePhase",
    "DatastoreStep",
    "Plan",
    "PlanError",
    "RevertDataStep",
    "RevertImagesStep",
    "RollbackStep",
    "RolloutStep",
    "Wave",
    "build_plan",
    "compute_digest",
    "expand_subset",
    "render_approval_markdown",
    "render_rollback_approval_markdown",
    "render_text",
    "topological_levels",
]
