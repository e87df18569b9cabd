"""Alert content and the notifiers that deliver it (SMTP, Slack, a JSON webhook).

:func:`alert_facts` reads what an operator needs from an Airflow callback
context: which policy and run, which step failed, what was rolled back, what
is left for a human, where the run and its report are. It only uses task ids,
states, dag and run ids, never exception texts, connection fields or XCom
values, so an alert cannot carry a secret. :func:`alert_message` renders those
facts as a mail or chat message, :func:`alert_payload` as webhook JSON.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

from convoy.redaction import get_logger, origin, redact, redact_data

log = get_logger(__name__)

#: ``drift``: the scheduled drift check (``driftCheck``) found the live state off the policy.
AlertEvent = Literal["failure", "success", "rollback", "deadline", "drift"]

FAILED_STATES = frozenset({"failed", "upstream_failed"})
#: Task ids that are bookkeeping, not steps (their failure repeats another's).
NOT_STEPS = frozenset({"outcome", "report"})
ROLLBACK_PREFIX = "rollback."
RUNS_DIR_ENV = "CONVOY_RUNS_DIR"
BASE_URL_ENV = "CONVOY_AIRFLOW_BASE_URL"
DEFAULT_SENDER = "convoy@localhost"


def _get(obj: Any, name: str) -> Any:
    """``obj[name]`` or ``obj.name`` (callback contexts hold models or plain dicts)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _state(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


@dataclass(frozen=True)
class AlertFacts:
    policy: str
    run_id: str
    event: AlertEvent
    state: str
    failed_steps: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    rollback_failed: tuple[str, ...] = ()
    left_for_human: tuple[str, ...] = field(default=())
    run_url: str | None = None
    report: str | None = None
    #: Failed or inconclusive analyses of failed rollouts: template, query, values.
    analyses: tuple[str, ...] = ()


def task_states(context: Mapping[str, Any]) -> dict[str, str | None]:
    """Task states of the context's run, from whatever the context offers."""
    given = context.get("convoy_task_states")
    if isinstance(given, Mapping):
        return {str(k): _state(v) for k, v in given.items()}
    ti = context.get("ti") or context.get("task_instance")
    run_id = str(context.get("run_id") or _get(context.get("dag_run"), "run_id") or "")
    getter = getattr(ti, "get_task_states", None)
    if ti is not None and getter is not None and run_id:
        try:
            states = getter(dag_id=ti.dag_id, run_ids=[run_id])
            return {str(k): _state(v) for k, v in states.get(run_id, {}).items()}
        except Exception:
            log.debug("get_task_states failed", exc_info=True)
    dag_run = context.get("dag_run")
    tis = getattr(dag_run, "get_task_instances", None)
    if tis is not None:
        try:
            return {str(t.task_id): _state(t.state) for t in tis()}
        except Exception:
            log.debug("dag_run.get_task_instances failed", exc_info=True)
    dag_id = str(_get(context.get("dag"), "dag_id") or _get(dag_run, "dag_id") or "")
    if dag_id and run_id and (states := _states_from_metadata_db(dag_id, run_id)):
        return states
    if ti is not None and _get(ti, "task_id"):
        return {str(_get(ti, "task_id")): _state(_get(ti, "state"))}
    return {}


def _states_from_metadata_db(dag_id: str, run_id: str) -> dict[str, str | None]:
    """Task states read from the metadata DB, where the process may (else ``{}``).

    ``DAG.test()`` (so ``airflow dags test``) runs the DAG's callbacks in its
    own process, with a task instance that cannot reach the API server
    (``get_task_states`` fails) and a run without task instances; that process
    owns the metadata DB. Workers, which must not touch it, never get here
    because ``get_task_states`` works there.
    """
    try:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
                )
            ).all()
    except Exception:
        log.debug("task states not readable from the metadata DB", exc_info=True)
        return {}
    return {str(task_id): _state(state) for task_id, state in rows}


def run_url(dag_id: str, run_id: str, base_url: str | None = None) -> str | None:
    """Link to the run in the Airflow UI (``[api] base_url`` or ``CONVOY_AIRFLOW_BASE_URL``)."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    if not base:
        try:
            from airflow.sdk.configuration import conf

            base = conf.get("api", "base_url", fallback=None)
        except Exception:
            base = None
    if not base or not dag_id or not run_id:
        return None
    return f"{base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def report_location(dag_id: str, run_id: str) -> str | None:
    """Where the runtime wrote the run report (``$CONVOY_RUNS_DIR/<dag>/<run>/``), if it did."""
    root = os.environ.get(RUNS_DIR_ENV)
    if not root:
        return None
    folder = Path(root) / dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    for name in ("report.html", "report.md", "report.json"):
        if (folder / name).exists():
            return str(folder / name)
    return None


def left_behind(context: Mapping[str, Any]) -> list[str]:
    """What a failed rollback left, as the ``report`` task listed it (never raises)."""
    given = context.get("convoy_left_behind")
    if given is None:
        ti = context.get("ti") or context.get("task_instance")
        try:
            given = ti.xcom_pull(task_ids="report", key="left_behind") if ti is not None else None
        except Exception:
            given = None
    if not isinstance(given, list | tuple):
        return []
    return [str(line) for line in given]


def alert_facts(
    context: Mapping[str, Any], *, policy: str | None = None, event: AlertEvent | None = None
) -> AlertFacts:
    """What happened in the context's run, in terms an on-call human can act on."""
    dag_run = context.get("dag_run")
    dag_id = str(_get(context.get("dag"), "dag_id") or _get(dag_run, "dag_id") or "")
    run_id = str(context.get("run_id") or _get(dag_run, "run_id") or "")
    states = task_states(context)
    failed = sorted(
        t
        for t, s in states.items()
        if s in FAILED_STATES and t not in NOT_STEPS and not t.startswith(ROLLBACK_PREFIX)
    )
    rollback_tasks = {t: s for t, s in states.items() if t.startswith(ROLLBACK_PREFIX)}
    rolled_back = sorted(t for t, s in rollback_tasks.items() if s == "success" and "revert" in t)
    rollback_failed = sorted(t for t, s in rollback_tasks.items() if s in FAILED_STATES)
    run_state = _state(_get(dag_run, "state")) or ("failed" if failed else "success")
    if event is None:
        event = "rollback" if rolled_back else ("failure" if failed else "success")
    left = left_behind(context)
    if rollback_failed and not left:
        left.append(
            "the rollback did not finish: check and restore by hand what "
            + ", ".join(rollback_failed)
            + " should have reverted"
        )
    if failed and not rolled_back and not rollback_failed:
        left.append(
            "nothing was rolled back: "
            + ", ".join(failed)
            + " failed and any change it made is still in place"
        )
    if failed and rolled_back and not rollback_failed:
        left.append("every change was reverted: fix the cause of the failure, then run again")
    if event == "deadline":
        left.append("the run is still going past its deadline: check whether it is stuck")
    from convoy.airflow.analysis import failed_analyses

    return AlertFacts(
        analyses=tuple(failed_analyses(context, failed)),
        policy=policy or dag_id,
        run_id=run_id,
        event=event,
        state=run_state,
        failed_steps=tuple(failed),
        rolled_back=tuple(rolled_back),
        rollback_failed=tuple(rollback_failed),
        left_for_human=tuple(left),
        run_url=run_url(dag_id, run_id),
        report=report_location(dag_id, run_id),
    )


_HEADLINES: dict[str, str] = {
    "failure": "failed",
    "success": "succeeded",
    "rollback": "failed and was rolled back",
    "deadline": "missed its deadline",
    "drift": "drift check: the live state is off the policy",
}


def render_message(facts: AlertFacts) -> tuple[str, str]:
    headline = _HEADLINES[facts.event]
    if facts.event == "rollback" and facts.rollback_failed:
        headline = "failed and its rollback failed too"
    subject = f"[convoy] {facts.policy}: run {facts.run_id} {headline}"
    lines = [
        f"Policy: {facts.policy}",
        f"Run: {facts.run_id} ({facts.state})",
        f"Failed: {', '.join(facts.failed_steps) or 'nothing'}",
        f"Rolled back: {', '.join(facts.rolled_back) or 'nothing'}",
    ]
    lines += [f"Analysis: {line}" for line in facts.analyses]
    if facts.rollback_failed:
        lines.append(f"Rollback failed: {', '.join(facts.rollback_failed)}")
    lines.append("Left for a human: " + ("; ".join(facts.left_for_human) or "nothing"))
    if facts.run_url:
        lines.append(f"Run in Airflow: {facts.run_url}")
    if facts.report:
        lines.append(f"Report: {facts.report}")
    return redact(subject), redact("\n".join(lines) + "\n")


def alert_message(
    context: Mapping[str, Any], *, policy: str | None = None, event: AlertEvent | None = None
) -> tuple[str, str]:
    """``(subject, body)``: what failed, what was rolled back, what is left for a human."""
    return render_message(alert_facts(context, policy=policy, event=event))


def alert_payload(
    context: Mapping[str, Any], *, policy: str | None = None, event: AlertEvent | None = None
) -> dict[str, Any]:
    """The webhook JSON."""
    facts = alert_facts(context, policy=policy, event=event)
    subject, body = render_message(facts)
    data = asdict(facts)
    return redact_data(
        {
            "policy": facts.policy,
            "run_id": facts.run_id,
            "event": facts.event,
            "state": facts.state,
            "failed_step": facts.failed_steps[0] if facts.failed_steps else None,
            "failed_steps": list(facts.failed_steps),
            "rolled_back": list(facts.rolled_back),
            "rollback_failed": list(facts.rollback_failed),
            "state_left_behind": list(facts.left_for_human),
            "analyses": list(facts.analyses),
            "run_url": data["run_url"],
            "report": data["report"],
            "subject": subject,
            "message": body,
        }
    )


def redacted_url(url: str) -> str:
    """``scheme://host[:port]``: webhook paths and queries often carry a token."""
    return origin(url)


# --------------------------------------------------------------------------- notifiers


class _AnyDagTemplates:
    """Template rendering that works when the callback's ``dag`` is a ``SerializedDAG``.

    A DAG callback run by ``DAG.test()`` (so ``airflow dags test``) gets the
    serialized DAG, which has no ``get_template_env``: ``BaseNotifier`` then
    fails before sending (apache/airflow#64649, unreleased fix), and the
    ``onFailure`` alert was lost. convoy's notifiers render nothing from the
    DAG's Jinja settings (their text is set after rendering), so a plain
    sandboxed environment is equivalent.
    """

    def get_template_env(self, dag: Any = None) -> Any:
        if dag is not None and not hasattr(dag, "get_template_env"):
            dag = None
        return super().get_template_env(dag=dag)  # type: ignore[misc]


class WebhookNotifier(_AnyDagTemplates, BaseNotifier):
    """POSTs :func:`alert_payload` as JSON; bounded retries on network errors and 5xx."""

    template_fields: Sequence[str] = ()

    def __init__(
        self,
        url: str,
        *,
        policy: str | None = None,
        event: AlertEvent | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 1.0,
    ) -> None:
        super().__init__()
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s): {redacted_url(url)}")
        self.url = url
        self.policy = policy
        self.event = event
        self.timeout = timeout
        self.retries = max(0, min(retries, 5))
        self.backoff = backoff

    def notify(self, context: Any) -> None:
        payload = alert_payload(context, policy=self.policy, event=self.event)
        self.post(payload)

    async def async_notify(self, context: Any) -> None:
        import asyncio

        await asyncio.to_thread(self.notify, context)

    def post(self, payload: Mapping[str, Any]) -> int:
        """Send ``payload``; return the HTTP status. Raises after the last attempt fails."""
        body = json.dumps(payload, sort_keys=True).encode()
        where = redacted_url(self.url)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
                self.url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "convoy-alerts"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    status = int(response.status)
                    log.info("alert delivered to webhook %s (HTTP %d)", where, status)
                    return status
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # the receiver refuses this request: retrying will not help
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = type(exc).__name__
        raise RuntimeError(f"webhook {where} did not accept the alert: {last}")


class ConvoySmtpNotifier(_AnyDagTemplates, SmtpNotifier):
    """The smtp provider's notifier, with convoy's subject and body."""

    def __init__(
        self,
        *,
        smtp_conn_id: str,
        to: Sequence[str],
        from_email: str | None = None,
        policy: str | None = None,
        event: AlertEvent | None = None,
    ) -> None:
        super().__init__(to=list(to), from_email=from_email, smtp_conn_id=smtp_conn_id)
        self.policy = policy
        self.event = event

    def notify(self, context: Any) -> None:
        subject, body = alert_message(context, policy=self.policy, event=self.event)
        # Set after template rendering: the content is never evaluated as Jinja.
        self.subject = subject
        self.html_content = f"<pre>{html.escape(body)}</pre>"
        super().notify(context)

    def _build_email_content(self, smtp: Any, context: Any) -> None:
        # A connection without from_email still sends (the provider would refuse).
        if self.from_email is None and not smtp.from_email:
            self.from_email = DEFAULT_SENDER
        super()._build_email_content(smtp, context)


def slack_available() -> bool:
    try:
        import airflow.providers.slack.notifications.slack  # noqa: F401
    except ImportError:
        return False
    return True


class ConvoySlackNotifier(_AnyDagTemplates, BaseNotifier):
    """Posts convoy's message through the slack provider's ``SlackNotifier``."""

    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        slack_conn_id: str,
        channel: str | None = None,
        policy: str | None = None,
        event: AlertEvent | None = None,
    ) -> None:
        super().__init__()
        if not slack_available():
            raise ValueError(
                f"Slack alert via connection {slack_conn_id!r} needs the Airflow slack "
                "provider: add apache-airflow-providers-slack to requirements.txt"
            )
        self.slack_conn_id = slack_conn_id
        self.channel = channel
        self.policy = policy
        self.event = event

    def notify(self, context: Any) -> None:
        from airflow.providers.slack.notifications.slack import SlackNotifier

        subject, body = alert_message(context, policy=self.policy, event=self.event)
        kwargs: dict[str, Any] = {
            "slack_conn_id": self.slack_conn_id,
            "text": f"*{subject}*\n{body}",
        }
        if self.channel:
            kwargs["channel"] = f"#{self.channel}"
        SlackNotifier(**kwargs).notify(context)
