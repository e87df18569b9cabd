"""A policy's ``alerts`` section as Airflow notifiers and a Deadline Alert.

- :func:`notifiers_for` turns ``alerts.onFailure`` / ``onSuccess`` /
  ``onRollback`` entries (syntax: :mod:`convoy.policy.alerts`) into notifiers
  for the DAG's ``on_failure_callback`` / ``on_success_callback``;
- :func:`deadline_alert` turns ``alerts.deadlineMinutes`` into the DAG's
  ``deadline=``; when the run is still going after that many minutes since it
  was queued, :func:`deadline_missed` runs in the triggerer and sends the
  ``onFailure`` alerts (event ``deadline``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseNotifier

from convoy.airflow.notifiers import (
    AlertEvent,
    ConvoySlackNotifier,
    ConvoySmtpNotifier,
    WebhookNotifier,
    alert_message,
    alert_payload,
)
from convoy.policy.alerts import AlertTarget, parse_alert_target
from convoy.redaction import get_logger

__all__ = [
    "alert_message",
    "alert_payload",
    "deadline_alert",
    "deadline_missed",
    "lazy_notifiers",
    "notifier_for",
    "notifiers_for",
]

log = get_logger(__name__)

SMTP_CONN_TYPES = frozenset({"smtp", "email"})
SLACK_CONN_TYPES = frozenset({"slack"})
#: Test-only: the deadline in seconds instead of ``deadlineMinutes`` (read when the DAG is built).
DEADLINE_OVERRIDE_ENV = "CONVOY_DEADLINE_SECONDS_OVERRIDE"


def _connection(conn_id: str) -> Any:
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception as exc:  # AirflowNotFoundException and friends
        raise ValueError(f"alert target {conn_id!r}: no Airflow connection with that id") from exc


def _recipients(conn: Any) -> tuple[str, ...]:
    """``to`` of an smtp connection's extra (a string with commas, or a list)."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    value = extra.get("to")
    if isinstance(value, str):
        return tuple(a.strip() for a in value.split(",") if a.strip())
    if isinstance(value, list):
        return tuple(str(a) for a in value)
    return ()


def notifier_for(
    target: AlertTarget | str, *, policy: str | None = None, event: AlertEvent | None = None
) -> BaseNotifier:
    """One notifier. Plain connection ids are looked up to pick smtp or slack."""
    if isinstance(target, str):
        target = parse_alert_target(target)
    if target.kind == "webhook":
        assert target.url is not None
        return WebhookNotifier(target.url, policy=policy, event=event)
    if target.kind == "smtp":
        assert target.conn_id is not None
        return ConvoySmtpNotifier(
            smtp_conn_id=target.conn_id,
            to=target.recipients,
            from_email=target.sender,
            policy=policy,
            event=event,
        )
    if target.kind == "slack":
        assert target.conn_id is not None
        return ConvoySlackNotifier(
            slack_conn_id=target.conn_id, channel=target.channel, policy=policy, event=event
        )
    assert target.conn_id is not None
    conn = _connection(target.conn_id)
    conn_type = str(conn.conn_type or "").lower()
    if conn_type in SMTP_CONN_TYPES:
        to = _recipients(conn)
        if not to:
            raise ValueError(
                f"alert target {target.conn_id!r}: the smtp connection has no recipients; "
                f"use smtp://{target.conn_id}?to=<address> or set 'to' in its extra"
            )
        return ConvoySmtpNotifier(smtp_conn_id=target.conn_id, to=to, policy=policy, event=event)
    if conn_type in SLACK_CONN_TYPES:
        return ConvoySlackNotifier(slack_conn_id=target.conn_id, policy=policy, event=event)
    raise ValueError(
        f"alert target {target.conn_id!r}: connection type {conn_type!r} cannot send alerts "
        "(use an smtp or slack connection, or an http(s) URL)"
    )


def notifiers_for(
    entries: Sequence[str], *, policy: str | None = None, event: AlertEvent | None = None
) -> list[BaseNotifier]:
    """Notifiers for one ``alerts.on*`` list. ``ValueError`` names the bad entry."""
    return [notifier_for(entry, policy=policy, event=event) for entry in entries]


class LazyNotifiers:
    """A DAG/task callback sending to ``entries``, resolved when it fires.

    The entries' syntax is checked at build time (``ValueError`` naming the
    entry); connection ids are only looked up when an alert is sent, so a
    connection that is missing while the DAG file is parsed never breaks the
    DAG. Sending never raises: a broken target is logged and the others still
    get the alert.
    """

    def __init__(
        self, entries: Sequence[str], *, policy: str | None, event: AlertEvent | None = None
    ) -> None:
        for entry in entries:
            parse_alert_target(entry)
        self.entries = tuple(entries)
        self.policy = policy
        self.event = event

    def __call__(self, context: Any) -> None:
        for entry in self.entries:
            try:
                notifier_for(entry, policy=self.policy, event=self.event)(context)
            except Exception:
                log.exception("alert via %s failed", parse_alert_target(entry).describe())


def lazy_notifiers(
    entries: Sequence[str], *, policy: str | None = None, event: AlertEvent | None = None
) -> LazyNotifiers | None:
    """:class:`LazyNotifiers` for one ``alerts.on*`` list, ``None`` when it is empty."""
    return LazyNotifiers(entries, policy=policy, event=event) if entries else None


def deadline_alert(minutes: int, *, policy: str, targets: Sequence[str]) -> Any:
    """The Airflow Deadline Alert for ``alerts.deadlineMinutes`` (``DAG(deadline=...)``).

    Measured from when the run was queued; the callback runs in the triggerer
    (Airflow's recommended place) with the ``onFailure`` targets. The targets
    are validated now so a bad entry fails at DAG build time.
    """
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    if minutes < 1:
        raise ValueError("deadlineMinutes must be at least 1")
    for entry in targets:
        parse_alert_target(entry)
    interval = timedelta(minutes=minutes)
    override = os.environ.get(DEADLINE_OVERRIDE_ENV)
    if override:
        # Only for tests: a real scheduler run would otherwise wait a full minute.
        interval = timedelta(seconds=float(override))
        log.warning("%s set: deadline of %s is %s", DEADLINE_OVERRIDE_ENV, policy, interval)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            deadline_missed, kwargs={"policy": policy, "targets": list(targets)}
        ),
        name=f"convoy-{policy}-deadline",
    )


async def deadline_missed(
    *, policy: str, targets: Sequence[str], context: Mapping[str, Any] | None = None
) -> int:
    """Deadline callback: send the ``deadline`` alert to every target; return how many sent.

    The scheduler's context holds the run as the REST API shows it
    (``{"dag_run": {"dag_run_id": ..., "dag_id": ..., "state": ...}, "deadline": ...}``),
    so the run id is lifted to ``run_id`` where the alert content looks for it.
    """
    ctx: Any = dict(context or {})
    dag_run = ctx.get("dag_run")
    if not ctx.get("run_id") and isinstance(dag_run, Mapping):
        ctx["run_id"] = dag_run.get("run_id") or dag_run.get("dag_run_id")
    sent = 0
    for entry in targets:
        try:
            notifier = notifier_for(entry, policy=policy, event="deadline")
            await asyncio.to_thread(notifier.notify, ctx)
            sent += 1
        except Exception:
            log.exception("deadline alert via %s failed", parse_alert_target(entry).describe())
    return sent
