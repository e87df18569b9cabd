"""An inconclusive analysis goes to the policy's approval gate (``approval.required``).

When an analysis of a verified step (after a service's rollout, between its
canary steps, or after a wave) has too many measurements without a number, a
metric cannot say whether the new version works; a human can. With an
approval gate in the run's plan the task does not fail: it writes an Airflow
Human-in-the-loop request (options *Approve* / *Reject*, the policy's
``approvers``, the measurements as the body) and parks in ``awaiting_input``
exactly as ``ApprovalOperator`` does on Airflow 3.3
(:class:`~airflow.sdk.exceptions.TaskAwaitingInput`, no triggerer). The
answer, or the scheduler's timeout sweep after ``timeoutMinutes``, resumes the
task in :meth:`VerifiedStepOperator.resume_after_decision`, which calls the
task's callable again with ``resume={"event": ..., "checkpoint": ...}``:

- approved: the step goes on from its checkpoint (the next canary step, the
  next analysis, the next service of the wave);
- rejected or timed out: the step fails at once with
  :class:`~convoy.rollout.analysis.AnalysisInconclusive` naming the decision,
  and the rollback runs.

Airflow keeps one HITL request per task try, and the text of an answered
request cannot be replaced (a second request of the same try keeps the first
one's subject and body). So a step asks once: a second inconclusive analysis
after an approval in the same task fails the step rather than showing the
approver the measurements of the first one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, NoReturn

from convoy.airflow.cheap_setattr import ConvoyPythonOperator
from convoy.redaction import get_logger, redact

log = get_logger(__name__)

#: The operator method a parked task resumes in.
RESUME_METHOD = "resume_after_decision"
APPROVE, REJECT = "Approve", "Reject"
#: The decision of an analysis while its request waits for an answer.
AWAITING = "awaiting approval"
#: The decision of a second inconclusive analysis of a step that already asked once.
NOT_ASKED = "not asked again: this step's approval request was already answered"


class VerifiedStepOperator(ConvoyPythonOperator):
    """``PythonOperator`` of a verified step whose callable may park for an approval.

    The callable raises ``TaskAwaitingInput`` itself (:func:`park`); this
    class only adds the method Airflow resumes it in.
    """

    def resume_after_decision(
        self, context: Any, event: Any = None, checkpoint: Any = None, **_: Any
    ) -> Any:
        # The callable runs again with the answer: PythonOperator passes op_kwargs through.
        self.op_kwargs = {**self.op_kwargs, "resume": {"event": event, "checkpoint": checkpoint}}
        return self.execute(context)


def gate(context: Mapping[str, Any], frozen: Any) -> Any:
    """The run's approval gate when this task can park for it (``None``: fail as before).

    A task built before the policy had an approval (a plain ``ConvoyPythonOperator``)
    could not be resumed, so it does not park.
    """
    approval = getattr(getattr(frozen, "plan", None), "approval", None)
    if approval is None or getattr(frozen, "dry_run", False):
        return None
    if not hasattr(context.get("task"), RESUME_METHOD):
        log.warning("this task cannot wait for an approval; the inconclusive analysis fails it")
        return None
    return approval


def park(
    context: Mapping[str, Any],
    approval: Any,
    *,
    run: Mapping[str, Any],
    workload: str,
    images: Mapping[str, str],
    then: str,
    checkpoint: Mapping[str, Any],
) -> NoReturn:
    """Write the HITL request for the inconclusive analysis ``run`` and park the task."""
    from airflow.sdk.exceptions import TaskAwaitingInput
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    from convoy.airflow.approval import assigned_users
    from convoy.observe.report_analysis import approval_markdown

    subject = redact(
        f"Inconclusive analysis {run.get('template')} of {run.get('service')} "
        f"({run.get('where')}): go on?"
    )
    body = redact(approval_markdown(run, workload=workload, images=images, then=then))
    upsert_hitl_detail(
        ti_id=context["task_instance"].id,
        options=[APPROVE, REJECT],
        subject=subject,
        body=body,
        # No defaults: a timeout must never approve.
        defaults=None,
        multiple=False,
        params={},
        assigned_users=assigned_users(tuple(approval.approvers)),  # type: ignore[arg-type]
    )
    log.info(
        "waiting up to %d min for %s to decide:\n%s",
        approval.timeout_minutes,
        ", ".join(approval.approvers),
        body,
    )
    raise TaskAwaitingInput(
        method_name=RESUME_METHOD,
        kwargs={"checkpoint": dict(checkpoint)},
        timeout=dt.timedelta(minutes=int(approval.timeout_minutes)),
    )


def decision(event: Any, approval: Any) -> tuple[bool, str]:
    """``(approved, text)`` of the answer a parked task resumed with."""
    event = event if isinstance(event, Mapping) else {}
    minutes = getattr(approval, "timeout_minutes", None)
    if event.get("error_type") == "timeout" or event.get("error"):
        within = f" within {minutes} min" if minutes else ""
        return False, f"approval timed out: no answer{within}"
    chosen = list(event.get("chosen_options") or ())
    user = event.get("responded_by_user")
    by = ""
    if isinstance(user, Mapping):
        by = str(user.get("name") or user.get("id") or "")
    by = by or "unknown user"
    if chosen == [APPROVE]:
        return True, f"approved by {by}"
    return False, f"rejected by {by}"


__all__ = [
    "APPROVE",
    "AWAITING",
    "NOT_ASKED",
    "REJECT",
    "RESUME_METHOD",
    "VerifiedStepOperator",
    "decision",
    "gate",
    "park",
]
