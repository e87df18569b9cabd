"""Constants and small resolvers shared by the DAG builder modules."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

from convoy.policy.models import Policy

ExecutionMode = Literal["kubernetes", "local"]

#: Environment variable that overrides ``policy.execution`` for every DAG.
EXECUTION_ENV = "CONVOY_EXECUTION_MODE"
#: Environment variable that overrides the directory the DAG file discovers policies in.
POLICIES_DIR_ENV = "CONVOY_POLICIES_DIR"

#: Environment variable: the directory of the DAG file's parse cache
#: (:mod:`convoy.policy.cache`), or ``off``. Default ``$AIRFLOW_HOME/convoy/parse-cache``.
PARSE_CACHE_ENV = "CONVOY_PARSE_CACHE_DIR"


def parse_cache_root() -> Path | None:
    """Where the DAG file keeps checked policies between parses; ``None`` when turned off."""
    raw = os.environ.get(PARSE_CACHE_ENV, "").strip()
    if raw.lower() in ("off", "false", "0", "none"):
        return None
    if raw:
        return Path(raw)
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return Path(home) / "convoy" / "parse-cache"


#: Environment variable naming the pool of the tasks that roll images out or back
#: (read when the DAG is built). Deployments set it to ``convoy_rollout``, the pool
#: ``airflow_settings.yaml`` and the Helm values create, so one cap holds rollout
#: pods across all policies.
ROLLOUT_POOL_ENV = "CONVOY_ROLLOUT_POOL"
#: Unset, rollouts share Airflow's default pool: it always exists, whereas a task
#: naming a pool that does not exist is never scheduled (the scheduler only logs a
#: warning), so an installation without the pool would stall on the first rollout.
DEFAULT_POOL = "default_pool"
#: Pool of the data reverts: they run no rollout pod.
ROLLBACK_POOL = DEFAULT_POOL
#: Revert tasks go first when their pool frees a slot: they end an outage, rollouts
#: of other policies can wait.
REVERT_PRIORITY_WEIGHT = 1000

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


def rollout_pool() -> str:
    """The pool of rollout and image-revert tasks: ``CONVOY_ROLLOUT_POOL`` or the default."""
    name = os.environ.get(ROLLOUT_POOL_ENV, "").strip()
    if not name:
        return DEFAULT_POOL
    if len(name) > 256 or any(ch.isspace() for ch in name):
        raise ValueError(f"{ROLLOUT_POOL_ENV}={name!r}: expected a pool name without spaces")
    return name


def revert_task_kwargs() -> dict[str, Any]:
    """Operator kwargs every revert task shares: retry delay and priority."""
    return {
        **revert_retry_kwargs(),
        "priority_weight": REVERT_PRIORITY_WEIGHT,
        "weight_rule": "absolute",
    }


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
