"""The human approval of a run (policy ``approval.required``): Airflow's ``ApprovalOperator``.

``approve`` runs after ``preflight`` and before the first forward step. Its
body, built when the task starts, is the run's plan as waves with the image
diff (current images read through the policy's Kubernetes connection, "unknown"
when they cannot be read), the datastore steps with their migration files and
the rollback order. The task parks in Airflow's ``awaiting_input`` state until
one of the ``approvers`` answers in the UI (Required Actions) or through the
REST API (``PATCH .../taskInstances/approve/-1/hitlDetails``).

- *Approve*: the task succeeds and the run goes on.
- *Reject* or no answer within ``timeoutMinutes``: the task **fails** (no retry),
  so every forward step ends ``upstream_failed`` and nothing changes; the
  rollback gate stays closed (it is told about the approval, see
  :func:`convoy.airflow.gates.rollback_gate`), ``report`` records the decision
  and ``outcome`` fails the run.
- A dry run changes nothing and is not held for approval.

The decision is pushed as XCom ``approval`` of the task (:func:`decision`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.exceptions import HITLRejectException
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from convoy.airflow import local_rollout
from convoy.airflow import preflight as preflight_task
from convoy.plan import Plan, render_approval_markdown, render_rollback_approval_markdown
from convoy.plan.record import RunRecord
from convoy.redaction import get_logger

log = get_logger(__name__)

TASK_ID = "approve"
#: XCom key of the decision (``approved``, ``rejected``, ``timed out``, ``not needed``).
DECISION_KEY = "approval"

APPROVED = "approved"
REJECTED = "rejected"
TIMED_OUT = "timed out"
NOT_NEEDED = "not needed"

#: The run report's final state when the approval was not given.
FINAL_STATES = {REJECTED: "rejected", TIMED_OUT: "approval timed out"}


def assigned_users(approvers: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    """``assigned_users`` of the operator.

    Airflow checks a respondent by the auth manager's user *id*; the policy
    names approvers by that id, which doubles as the displayed name.
    """
    return [{"id": name, "name": name} for name in approvers]


def current_images(plan: Plan, conn_id: str, in_cluster: bool) -> dict[str, dict[str, str]] | None:
    """Service -> container -> image now (one GET each); ``None`` when the cluster is unreachable.

    Only a diff for the approver: any error leaves the images "unknown" rather
    than holding up the approval.
    """
    try:
        from convoy.rollout.runner import RolloutRunner, Target

        runner = RolloutRunner(local_rollout.kube_api_client(conn_id, in_cluster), log=log)
    except Exception:
        log.warning("cannot read the current images; the diff shows them as unknown")
        return None
    found: dict[str, dict[str, str]] = {}
    for step in plan.steps:
        target = Target(namespace=step.namespace, kind=step.kind, name=step.workload, containers={})
        try:
            images = runner.status(target).images
        except Exception as exc:
            log.warning("cannot read the images of %s: %s", step.service, exc)
            if not found:
                return None  # the first read failing means the rest would wait and fail too
            continue
        found[step.service] = {str(k): str(v) for k, v in dict(images).items()}
    return found


def request_body(
    record: RunRecord, *, conn_id: str, in_cluster: bool, read_images: bool = True
) -> str:
    """The Markdown an approver reads for this run: its frozen plan (selection, mode, dry run).

    What is approved is exactly what the later tasks execute: the run record
    preflight froze, with its digest.
    """
    plan = record.plan
    if record.mode == "rollback":
        body = render_rollback_approval_markdown(
            plan, record.rollback_run_id or "", dry_run=record.dry_run
        )
    else:
        current = current_images(plan, conn_id, in_cluster) if read_images else None
        body = render_approval_markdown(
            plan, current=current, migrations=record.migration_names(), dry_run=record.dry_run
        )
    return body + f"\nRun record `{record.digest[:12]}` (frozen at preflight).\n"


class PlanApprovalOperator(ApprovalOperator):
    """``ApprovalOperator`` whose body is the run's plan and dry-run diff, built at run time."""

    # The body holds policy text; Jinja must never interpret it.
    template_fields = ()

    def __init__(
        self,
        *,
        plan: Plan,
        conn_id: str,
        in_cluster: bool,
        **kwargs: Any,
    ) -> None:
        gate = plan.approval
        if gate is None:
            raise ValueError(f"policy {plan.policy_name} does not require an approval")
        super().__init__(
            task_id=TASK_ID,
            subject=f"Approve the upgrade {plan.policy_name}?",
            # Parse-time fallback; execute() replaces it with the run's own plan and diff.
            body=render_approval_markdown(plan),
            assigned_users=assigned_users(gate.approvers),
            response_timeout=dt.timedelta(minutes=gate.timeout_minutes),
            fail_on_reject=True,
            # A retry would ask again after a rejection or a timeout.
            retries=0,
            **kwargs,
        )
        self.conn_id = conn_id
        self.in_cluster = in_cluster
        self.approvers = tuple(gate.approvers)
        self.timeout_minutes = gate.timeout_minutes

    def execute(self, context: Any) -> Any:
        chosen = preflight_task.selection(context)
        if chosen.get("dry_run"):
            log.info("dry run: nothing will change, so no approval is needed")
            return record(context, NOT_NEEDED, reason="dry run")
        frozen = preflight_task.run_record(context)
        self.body = request_body(frozen, conn_id=self.conn_id, in_cluster=self.in_cluster)
        log.info(
            "waiting up to %d min for %s to approve:\n%s",
            self.timeout_minutes,
            ", ".join(self.approvers),
            self.body,
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event.get("error_type") == "timeout":
            record(context, TIMED_OUT)
            raise AirflowFailException(
                f"approval timed out: no answer within {self.timeout_minutes} min "
                "from " + ", ".join(self.approvers) + "; nothing was changed"
            )
        by = _user(event.get("responded_by_user"))
        try:
            result = super().execute_complete(context=context, event=event)
        except HITLRejectException:
            record(context, REJECTED, by=by)
            raise AirflowFailException(
                f"rejected by {by or 'unknown user'}; nothing was changed"
            ) from None
        record(context, APPROVED, by=by)
        log.info("approved by %s", by)
        return result


def _user(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return str(value.get("name") or value.get("id") or "") or None
    return None


def record(
    context: Mapping[str, Any], outcome: str, *, by: str | None = None, reason: str = ""
) -> dict[str, Any]:
    """Push the decision as XCom ``approval`` and return it."""
    at = dt.datetime.now(dt.UTC).isoformat()
    value: dict[str, Any] = {"decision": outcome, "by": by, "at": at}
    if reason:
        value["reason"] = reason
    try:
        context["ti"].xcom_push(key=DECISION_KEY, value=value)
    except Exception:
        log.warning("approval decision %s not recorded", value, exc_info=True)
    return value


def decision(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The approval decision of the current run, if its DAG has an ``approve`` task."""
    value = context["ti"].xcom_pull(task_ids=TASK_ID, key=DECISION_KEY)
    return dict(value) if isinstance(value, Mapping) else None


def final_state(found: Mapping[str, Any] | None) -> str | None:
    """The run report's final state for a rejected or timed-out approval, else ``None``."""
    if not found:
        return None
    return FINAL_STATES.get(str(found.get("decision")))
