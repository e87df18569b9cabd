"""The Kubernetes side of convoy: roll images of one workload, wait, explain, revert.

Runs inside the rollout pod as ``python -m convoy.rollout apply|verify|revert|status|analyze``
(see docs/rollout.md); :class:`RolloutRunner` is the library entry point.

Names are imported lazily: importing the official Kubernetes client takes
seconds, and the CLI should answer usage errors without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convoy.rollout.api import KubernetesIO, RetryPolicy, WorkloadRef
    from convoy.rollout.errors import (
        ApiUnavailable,
        ConflictRetriesExhausted,
        ContainerNotFound,
        CrashLooping,
        DeadlineExceeded,
        Forbidden,
        ImagePullFailed,
        NothingToRevert,
        PodUnschedulable,
        RolloutError,
        UnsupportedUpdateStrategy,
        WorkloadNotFound,
    )
    from convoy.rollout.runner import RolloutResult, RolloutRunner, Target

_HOME = {
    "KubernetesIO": "api",
    "RetryPolicy": "api",
    "WorkloadRef": "api",
    "RolloutResult": "runner",
    "RolloutRunner": "runner",
    "Target": "runner",
}

__all__ = [
    "ApiUnavailable",
    "ConflictRetriesExhausted",
    "ContainerNotFound",
    "CrashLooping",
    "DeadlineExceeded",
    "Forbidden",
    "ImagePullFailed",
    "KubernetesIO",
    "NothingToRevert",
    "PodUnschedulable",
    "RetryPolicy",
    "RolloutError",
    "RolloutResult",
    "RolloutRunner",
    "Target",
    "UnsupportedUpdateStrategy",
    "WorkloadNotFound",
    "WorkloadRef",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"convoy.rollout.{_HOME.get(name, 'errors')}")
    return getattr(module, name)
