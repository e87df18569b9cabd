"""Task states of the run, the rollback gate and the final ``outcome`` task."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from convoy.airflow import config
from convoy.airflow.preflight import manual_rollback_of, selection
from convoy.airflow.runtime import policy_name
from convoy.observe import metrics
from convoy.observe.assembly import mapping
from convoy.redaction import get_logger

log = get_logger(__name__)


FAILED_STATES = frozenset({"failed", "upstream_failed"})


def run_states(context: Mapping[str, Any]) -> dict[str, str | None]:
    ti = context["ti"]
    run_id = str(context["run_id"])
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id])
    return {k: (str(v) if v is not None else None) for k, v in states.get(run_id, {}).items()}


def states_of(
    states: Mapping[str, str | None], task_id: str, *, mapped: bool = False
) -> list[str | None]:
    """States of ``task_id``; for a mapped task, of each instance (``<task_id>_<index>``).

    A mapped task that expanded to nothing has a single unmapped instance (skipped).
    """
    if mapped:
        pattern = re.compile(re.escape(task_id) + r"_\d+")
        found = [s for k, s in states.items() if pattern.fullmatch(k)]
        if found:
            return found
    return [states.get(task_id)]


def rollback_gate(
    *,
    watched: list[str],
    mapped: list[str] | None = None,
    approval_task_id: str | None = None,
    **context: Any,
) -> list[str]:
    """Open the rollback (return failed steps) only if a rollout/datastore step failed.

    With an approval in the DAG, only once it was given: a rejected or timed-out
    approval leaves every step ``upstream_failed`` and nothing to revert, and a
    manual rollback must not revert anything it was not approved for.
    """
    if approval_task_id is not None:
        state = run_states(context).get(approval_task_id)
        if state != "success":
            raise AirflowSkipException(f"approval not given ({approval_task_id}: {state})")
    target = manual_rollback_of(context)
    if target is not None:
        log.warning("manual rollback: reverting what run %s changed", target)
        if not selection(context).get("dry_run"):
            metrics.rollback(policy_name(context), "started")
        return [f"manual rollback of {target}"]
    states = run_states(context)
    expanded = set(mapped or ())
    failed = sorted(t for t in watched if "failed" in states_of(states, t, mapped=t in expanded))
    if not failed:
        raise AirflowSkipException("no rollout or datastore step failed: nothing to roll back")
    log.warning("rolling back because these steps failed: %s", ", ".join(failed))
    chosen = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if not (isinstance(chosen, Mapping) and chosen.get("dry_run")):
        metrics.rollback(policy_name(context), "started")
    return failed


def rollback_open(context: Mapping[str, Any]) -> list[str] | None:
    """The failed steps if the rollback gate opened in this run (never in a dry run)."""
    gate = context["ti"].xcom_pull(task_ids=f"{config.ROLLBACK_GROUP}.{config.ROLLBACK_GATE}")
    if not gate:
        return None
    chosen = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if isinstance(chosen, Mapping) and chosen.get("dry_run"):
        return None
    return [str(t) for t in gate]


def outcome(**context: Any) -> str:
    """Fail the run if any task failed, even when the rollback succeeded."""
    own = context["ti"].task_id
    states = run_states(context)
    bad = sorted(t for t, s in states.items() if t != own and s in FAILED_STATES)
    _outcome_metrics(context, states, bad)
    if bad:
        raise AirflowFailException(f"run failed: {', '.join(f'{t}={states[t]}' for t in bad)}")
    return "success"


def _outcome_metrics(
    context: Mapping[str, Any], states: Mapping[str, str | None], bad: list[str]
) -> None:
    """``run_outcome`` and ``run_duration``; never raises."""
    try:
        name = policy_name(context)
        chosen = mapping(context["ti"].xcom_pull(task_ids=config.PREFLIGHT))
        gate = states.get(f"{config.ROLLBACK_GROUP}.{config.ROLLBACK_GATE}")
        rollback_failed = any(t.startswith(f"{config.ROLLBACK_GROUP}.") for t in bad)
        result: metrics.RunOutcome
        if bad:
            result = "rolled_back" if gate == "success" and not rollback_failed else "failed"
        else:
            result = "dry_run" if chosen.get("dry_run") else "success"
        metrics.run_outcome(name, result)
        started = getattr(context.get("dag_run"), "start_date", None)
        if isinstance(started, dt.datetime):
            metrics.run_duration(name, (dt.datetime.now(dt.UTC) - started).total_seconds())
    except Exception:
        log.warning("outcome metrics not sent", exc_info=True)
