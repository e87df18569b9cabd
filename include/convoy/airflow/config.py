"""Constants and small resolvers shared by the DAG builder modules."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Literal

from convoy.policy.models import Policy

ExecutionMode = Literal["kubernetes", "local"]

#: Environment variable that overrides ``policy.execution`` for every DAG.
EXECUTION_ENV = "CONVOY_EXECUTION_MODE"
#: Environment variable that overrides the directory the DAG file discovers policies in.
POLICIES_DIR_ENV = "CONVOY_POLICIES_DIR"

#: Pool of the rollout and revert tasks. Dedicated pools are a later issue; until
#: then the default pool, which always exists, so DAGs never wait on a missing pool.
ROLLOUT_POOL = "default_pool"
ROLLBACK_POOL = "default_pool"

RETRIES = 2
RETRY_DELAY = dt.timedelta(seconds=30)
MAX_RETRY_DELAY = dt.timedelta(minutes=10)

#: Environment variable: fixed delay (seconds) between retries of the revert tasks,
#: read when the DAG is built (default: the exponential ``RETRY_DELAY`` backoff).
REVERT_RETRY_DELAY_ENV = "CONVOY_REVERT_RETRY_DELAY_SECONDS"


def revert_retry_kwargs() -> dict[str, Any]:
    """Operator kwargs of the revert tasks: ``{}`` or a fixed retry delay."""
    raw = os.environ.get(REVERT_RETRY_DELAY_ENV, "").strip()
    if not raw:
        return {}
    seconds = float(raw)
    if seconds < 0:
        raise ValueError(f"{REVERT_RETRY_DELAY_ENV}={raw!r}: expected seconds >= 0")
    return {"retry_delay": dt.timedelta(seconds=seconds), "retry_exponential_backoff": False}


#: Extra pod lifetime on top of the rollout deadline (image pull, start, reporting).
POD_DEADLINE_MARGIN_SECONDS = 300

LABEL_POLICY = "convoy.dev/policy"
LABEL_SERVICE = "convoy.dev/service"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

#: Task ids (groups are ``wave_<n>``, ``datastore_<name>`` and ``rollback``).
PREFLIGHT = "preflight"
REPORT = "report"
OUTCOME = "outcome"
ROLLBACK_GROUP = "rollback"
ROLLBACK_GATE = "gate"
RESULT_KEY = "result"


def execution_mode(policy: Policy) -> ExecutionMode:
    """``CONVOY_EXECUTION_MODE`` if set, else the policy's ``execution``."""
    override = os.environ.get(EXECUTION_ENV, "").strip().lower()
    if override in ("kubernetes", "local"):
        return "local" if override == "local" else "kubernetes"
    if override:
        raise ValueError(f"{EXECUTION_ENV}={override!r}: expected 'kubernetes' or 'local'")
    return policy.execution


def wave_group_id(index: int) -> str:
    return f"wave_{index}"


def rollout_task_id(service: str) -> str:
    return f"rollout_{service}"


def revert_task_id(service: str) -> str:
    return f"revert_{service}"


def datastore_group_id(name: str) -> str:
    return f"datastore_{name}"


def revert_data_task_id(name: str) -> str:
    return f"revert_data_{name}"


#: Environment variable naming a ``module:function`` that returns a pymongo-compatible
#: client for a connection id (tests point it at a mongomock client). Unset: ``MongoHook``.
MONGO_CLIENT_FACTORY_ENV = "CONVOY_MONGO_CLIENT_FACTORY"
#: Environment variable: directory for per-run artifacts (validation results).
RUNS_DIR_ENV = "CONVOY_RUNS_DIR"
#: Environment variable: at most this many key-range partitions per transform (default 4).
MAX_PARTITIONS_ENV = "CONVOY_MAX_PARTITIONS"
DEFAULT_MAX_PARTITIONS = 4


def max_partitions() -> int:
    raw = os.environ.get(MAX_PARTITIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARTITIONS
    value = int(raw)
    if not 1 <= value <= 256:
        raise ValueError(f"{MAX_PARTITIONS_ENV}={raw!r}: expected 1..256")
    return value


def partitions_task_id(transform: str) -> str:
    return f"partitions_{transform}"


def transform_task_id(transform: str) -> str:
    return f"transform_{transform}"
