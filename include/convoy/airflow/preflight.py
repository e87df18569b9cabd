"""``preflight``: check the policy against the DAG, resolve the run, freeze its plan.

The run record (:mod:`convoy.plan.record`) is pushed as XCom ``run_record``;
every later task reads it through :func:`run_record` (digest-checked) and
executes its step from it, never from the policy file as it is now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from convoy.airflow import config
from convoy.observe import metrics
from convoy.plan import build_plan, render_text
from convoy.plan.record import (
    RecordError,
    RunRecord,
    compute_record_digest,
    drift,
    freeze,
    record_from_json,
)
from convoy.policy.loader import load_policy
from convoy.redaction import get_logger, redact

log = get_logger(__name__)


#: XCom key of preflight's run record (``convoy.plan.record``).
RECORD_KEY = "run_record"


def preflight(*, policy_path: str, digest: str, **context: Any) -> dict[str, Any]:
    """Re-check the policy against the built DAG, resolve this run's selection, freeze it.

    The run's record (:mod:`convoy.plan.record`: the plan, the datastores'
    specifications, the migration files with their contents) is pushed as
    XCom ``run_record``; its digest is in the returned selection. Every later
    task executes its step from that record and never reads the policy again.
    """
    loaded = load_policy(policy_path)
    current = build_plan(loaded)
    if current.digest != digest:
        raise AirflowFailException(
            f"policy {policy_path} changed since this DAG was built "
            f"(plan digest {current.digest[:12]} != {digest[:12]}); "
            "wait for the DAG to be re-parsed and trigger again"
        )
    params: Mapping[str, Any] = context.get("params") or {}
    mode = str(params.get("mode", "upgrade"))
    if mode == "rollback":
        chosen_rollback = _preflight_rollback(current, digest, params)
        frozen = _freeze(loaded, current, digest, chosen_rollback)
        return _with_record(context, chosen_rollback, frozen)
    if mode != "upgrade":
        raise AirflowFailException(f"mode {mode!r}: expected 'upgrade' or 'rollback'")
    chosen = list(params.get("services") or [])
    try:
        selected = build_plan(loaded, services=chosen or None)
    except Exception as exc:  # PlanError: unknown service names
        raise AirflowFailException(str(exc)) from exc
    dry_run = bool(params.get("dry_run", False))
    log.info("plan digest %s; dry_run=%s; selection %s", digest, dry_run, chosen or "all")
    log.info("plan of this run:\n%s", render_text(selected))
    name = loaded.policy.metadata.name
    metrics.services_total(name, len(selected.services))
    metrics.services_done(name, 0)
    result: dict[str, Any] = {
        "digest": digest,
        "mode": mode,
        "dry_run": dry_run,
        "services": list(selected.services),
        "datastores": [p.datastore for p in selected.datastore_phases],
    }
    return _with_record(context, result, _freeze(loaded, selected, digest, result))


def _freeze(loaded: Any, plan: Any, digest: str, chosen: Mapping[str, Any]) -> RunRecord:
    try:
        return freeze(
            loaded,
            plan,
            dag_plan_digest=digest,
            mode="rollback" if chosen["mode"] == "rollback" else "upgrade",
            dry_run=bool(chosen["dry_run"]),
            rollback_run_id=chosen.get("rollback_run_id"),
        )
    except RecordError as exc:
        raise AirflowFailException(f"cannot freeze the run's plan: {exc}") from exc


def _with_record(
    context: Mapping[str, Any], chosen: dict[str, Any], frozen: RunRecord
) -> dict[str, Any]:
    sealed = seal(frozen.to_dict())
    if "sealed" not in sealed:
        # Stored in clear: alert targets keep no token (the report alerts the others).
        alerts = {k: tuple(redact(e) for e in v) for k, v in frozen.alerts.items()}
        frozen = replace(frozen, alerts=alerts)
        frozen = replace(frozen, digest=compute_record_digest(frozen))
        sealed = frozen.to_dict()
    context["ti"].xcom_push(key=RECORD_KEY, value=sealed)
    files = sum(len(ds.migrations) for ds in frozen.datastores)
    log.info(
        "run record %s: plan %s, %d datastore(s), %d migration file(s) frozen; later tasks "
        "execute this record, whatever happens to the policy files meanwhile",
        frozen.digest,
        frozen.plan.digest,
        len(frozen.datastores),
        files,
    )
    return {**chosen, "record": frozen.digest}


def run_record(context: Mapping[str, Any]) -> RunRecord:
    """This run's record (frozen by preflight), its digest checked; fails the task otherwise."""
    chosen = selection(context)
    value = context["ti"].xcom_pull(task_ids=config.PREFLIGHT, key=RECORD_KEY)
    try:
        return record_from_json(
            unseal(value), expected_digest=str(chosen.get("record") or "") or None
        )
    except RecordError as exc:
        raise AirflowFailException(str(exc)) from exc


def seal(data: dict[str, Any]) -> dict[str, Any]:
    """The record as stored in XCom: encrypted with Airflow's Fernet key, its digest in clear.

    The record holds the policy's expressions (``where``, ``set``, filters),
    which may carry literals nobody should read in the metadata database; they
    are kept as Airflow keeps connection passwords. Without a Fernet key
    (Airflow then stores connections in clear too) the record is stored as is.
    """
    from airflow.models.crypto import get_fernet

    fernet = get_fernet()
    if not getattr(fernet, "is_encrypted", False):
        log.warning("no Fernet key configured: the run record is stored in XCom unencrypted")
        return data
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return {"digest": data["digest"], "sealed": fernet.encrypt(text.encode()).decode()}


def unseal(value: Any) -> Any:
    """The record's JSON from its XCom value (:func:`seal`); other values as they are."""
    if not (isinstance(value, Mapping) and "sealed" in value):
        return value
    from airflow.models.crypto import get_fernet

    try:
        return json.loads(get_fernet().decrypt(str(value["sealed"]).encode()))
    except Exception as exc:
        raise RecordError(f"the run record cannot be decrypted: {type(exc).__name__}") from exc


def log_drift(frozen: RunRecord) -> list[str]:
    """Log the policy files changed since preflight (no effect on this run); the lines."""
    lines = [str(d) for d in drift(frozen)]
    for line in lines:
        log.warning(
            "changed since preflight, not used by this run (it executes the record %s): %s",
            frozen.digest[:12],
            line,
        )
    return lines


def _preflight_rollback(plan: Any, digest: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``mode=rollback``: no forward step runs; the reverts undo ``rollback_run_id``.

    Either execution mode: the image reverts (in-process or in a revert pod) leave
    alone every workload whose ``convoy.dev/run-id`` names another run.
    """
    target = str(params.get("rollback_run_id") or "").strip()
    if not target:
        raise AirflowFailException(
            "mode 'rollback' needs rollback_run_id: the id of the run whose changes to revert"
        )
    if not plan.rollback_automatic:
        raise AirflowFailException(
            "mode 'rollback' needs the rollback tasks: this policy sets rollback.automatic: false"
        )
    dry_run = bool(params.get("dry_run", False))
    log.info(
        "manual rollback of run %s (dry_run=%s); every forward step is skipped", target, dry_run
    )
    return {
        "digest": digest,
        "mode": "rollback",
        "rollback_run_id": target,
        "dry_run": dry_run,
        # Nothing is rolled out or migrated: forward steps skip themselves.
        "services": [],
        "datastores": [],
    }


def manual_rollback_of(context: Mapping[str, Any]) -> str | None:
    """The run id a ``mode=rollback`` run reverts; ``None`` for an upgrade run."""
    chosen = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if isinstance(chosen, Mapping) and chosen.get("mode") == "rollback":
        return str(chosen.get("rollback_run_id") or "") or None
    return None


def selection(context: Mapping[str, Any]) -> dict[str, Any]:
    """The preflight result of the current run."""
    value = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if not isinstance(value, dict):
        raise AirflowFailException("preflight result missing; was preflight skipped?")
    return value


def require_selected_service(context: Mapping[str, Any], service: str) -> dict[str, Any]:
    """Skip the task unless ``service`` is part of this run; return the selection."""
    chosen = selection(context)
    if service not in chosen["services"]:
        raise AirflowSkipException(f"service {service!r} not selected in this run")
    return chosen
