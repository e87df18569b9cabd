"""Alerts: target parsing, message content, and delivery to real local servers.

An aiosmtpd server on 127.0.0.1 receives the mail the smtp provider's notifier
sends through an ``AIRFLOW_CONN_...`` connection (with a password, which must
never show up in a message); an ``http.server`` receives the webhook JSON.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from webhook_receiver import WebhookReceiver

from convoy.airflow import alerts
from convoy.airflow.notifiers import (
    ConvoySmtpNotifier,
    WebhookNotifier,
    alert_message,
    alert_payload,
    slack_available,
)
from convoy.policy.alerts import alert_target_errors, parse_alert_target

SECRET = "s3cr3t-Pa55word"
POLICY = "shop"
RUN_ID = "manual__2026-11-25T10:00:00+00:00"

FAILED_AND_ROLLED_BACK = {
    "preflight": "success",
    "wave_0.rollout_redis": "success",
    "wave_1.rollout_cart": "success",
    "wave_2.rollout_checkout": "failed",
    "rollback.gate": "success",
    "rollback.revert_cart": "success",
    "rollback.revert_redis": "success",
    "report": "success",
    "outcome": "failed",
}


def context(states: dict[str, str], **extra: Any) -> dict[str, Any]:
    from airflow.sdk import DAG

    return {
        "dag": DAG(dag_id="shop", schedule=None),
        "run_id": RUN_ID,
        "dag_run": {"dag_id": "shop", "run_id": RUN_ID, "state": "failed"},
        "convoy_task_states": states,
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("entry", "kind", "conn_id"),
    [
        ("smtp://ops_mail?to=oncall@example.com,dba@example.com", "smtp", "ops_mail"),
        ("slack://ops_slack#upgrades", "slack", "ops_slack"),
        ("https://hooks.example.com/convoy", "webhook", None),
        ("http://127.0.0.1:9000/alerts", "webhook", None),
        ("ops_mail", "connection", "ops_mail"),
    ],
)
def test_good_targets_parse(entry: str, kind: str, conn_id: str | None) -> None:
    target = parse_alert_target(entry)
    assert target.kind == kind
    assert target.conn_id == conn_id


def test_smtp_target_details() -> None:
    target = parse_alert_target("smtp://ops?to=a@example.com,b@example.com&from=c@example.com")
    assert target.recipients == ("a@example.com", "b@example.com")
    assert target.sender == "c@example.com"
    assert parse_alert_target("slack://ops#upgrades").channel == "upgrades"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("pagerduty://ops", "unknown scheme 'pagerduty://'"),
        ("smtp://ops", "no recipient"),
        ("smtp://ops?to=not-an-address", "is not an email address"),
        ("smtp://ops?to=a@example.com&cc=b@example.com", "unknown parameter(s) cc"),
        ("https://user:pw@hooks.example.com/x", "credentials in the URL"),
        ("https:///path-only", "no host"),
        ("bad id!", "is not a valid connection id"),
        ("", "empty entry"),
    ],
)
def test_bad_targets_say_why_and_show_the_syntax(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match="expected smtp://") as info:
        parse_alert_target(entry)
    assert why in str(info.value)


def test_loader_helper_reports_the_index_of_each_bad_entry() -> None:
    errors = alert_target_errors(["https://ok.example.com", "ftp://x", "smtp://ops"])
    assert [i for i, _ in errors] == [1, 2]


def test_webhook_description_hides_the_path() -> None:
    target = parse_alert_target("https://hooks.example.com/T000/B000/token")
    assert target.describe() == "webhook https://hooks.example.com"


# --------------------------------------------------------------------------- content


def test_message_names_failure_rollback_and_what_is_left() -> None:
    subject, body = alert_message(context(FAILED_AND_ROLLED_BACK), policy=POLICY)
    assert subject == f"[convoy] shop: run {RUN_ID} failed and was rolled back"
    assert "Failed: wave_2.rollout_checkout\n" in body
    assert "Rolled back: rollback.revert_cart, rollback.revert_redis\n" in body
    assert "every change was reverted" in body


def test_message_when_the_rollback_itself_failed() -> None:
    states = {**FAILED_AND_ROLLED_BACK, "rollback.revert_redis": "failed"}
    subject, body = alert_message(context(states), policy=POLICY)
    assert "rollback failed too" in subject
    assert "Rollback failed: rollback.revert_redis" in body
    assert "restore by hand" in body


def test_message_without_rollback_says_changes_are_still_in_place() -> None:
    states = {"wave_0.rollout_redis": "failed", "rollback.gate": "skipped", "outcome": "failed"}
    subject, body = alert_message(context(states), policy=POLICY)
    assert subject.endswith(" failed")
    assert "still in place" in body


def test_payload_has_the_documented_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOY_AIRFLOW_BASE_URL", "https://airflow.example.com/")
    payload = alert_payload(context(FAILED_AND_ROLLED_BACK), policy=POLICY)
    assert payload["policy"] == POLICY
    assert payload["run_id"] == RUN_ID
    assert payload["state"] == "failed"
    assert payload["failed_step"] == "wave_2.rollout_checkout"
    assert payload["state_left_behind"]
    assert payload["run_url"] == (
        "https://airflow.example.com/dags/shop/runs/manual__2026-11-25T10%3A00%3A00%2B00%3A00"
    )
    assert "report" in payload


# --------------------------------------------------------------------------- webhook


#: The token in the path must never reach a log line or an alert.
HOOK = "/hooks/convoy?token=abc"


@pytest.fixture
def receiver(webhook_receiver: WebhookReceiver) -> WebhookReceiver:
    return webhook_receiver


def test_webhook_delivers_one_json_alert(receiver: WebhookReceiver) -> None:
    [notifier] = alerts.notifiers_for([receiver.url(HOOK)], policy=POLICY)
    assert isinstance(notifier, WebhookNotifier)
    notifier(context(FAILED_AND_ROLLED_BACK))
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["policy"] == POLICY
    assert body["failed_step"] == "wave_2.rollout_checkout"
    assert body["rolled_back"] == ["rollback.revert_cart", "rollback.revert_redis"]


def test_webhook_retries_server_errors_a_bounded_number_of_times() -> None:
    r = WebhookReceiver([500, 503])
    try:
        WebhookNotifier(r.url(HOOK), policy=POLICY, retries=2, backoff=0.01)(
            context(FAILED_AND_ROLLED_BACK)
        )
        assert len(r.bodies) == 3
        r.statuses[:] = [500] * 10
        with pytest.raises(RuntimeError, match=r"did not accept the alert: HTTP 500"):
            WebhookNotifier(r.url(HOOK), retries=1, backoff=0.01).notify(context({}))
        assert len(r.bodies) == 5
    finally:
        r.close()


def test_webhook_does_not_retry_a_refusal_and_hides_the_url_token() -> None:
    r = WebhookReceiver([400])
    try:
        with pytest.raises(RuntimeError) as info:
            WebhookNotifier(r.url(HOOK), retries=3, backoff=0.01).notify(context({}))
        assert len(r.bodies) == 1
        assert "token" not in str(info.value)
        assert "/hooks" not in str(info.value)
    finally:
        r.close()


def test_webhook_to_a_closed_port_fails_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(RuntimeError, match="did not accept the alert"):
        WebhookNotifier(url, retries=1, backoff=0.01, timeout=2).notify(context({}))


# --------------------------------------------------------------------------- smtp


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[Any] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Mailbox]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    mailbox = _Mailbox()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = data.login == b"convoy" and data.password == SECRET.encode()
        if ok:
            mailbox.logins.append(data.login.decode())
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "login": "convoy",
        "password": SECRET,
        "extra": {
            "disable_tls": True,
            "disable_ssl": True,
            "from_email": "convoy@example.com",
            "timeout": 5,
            "retry_limit": 0,
            "to": "dba@example.com",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_SMTP", json.dumps(conn))
    try:
        yield mailbox
    finally:
        controller.stop()


def _text(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    out = []
    for part in parts:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            out.append(payload.decode())
    return "\n".join(out)


def test_smtp_delivers_one_mail_without_secrets(smtp_server: _Mailbox) -> None:
    [notifier] = alerts.notifiers_for(
        ["smtp://alerts_smtp?to=oncall@example.com"], policy=POLICY, event="rollback"
    )
    assert isinstance(notifier, ConvoySmtpNotifier)
    notifier(context(FAILED_AND_ROLLED_BACK))
    assert smtp_server.logins == ["convoy"]
    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert mail["To"] == "oncall@example.com"
    assert mail["From"] == "convoy@example.com"
    assert mail["Subject"] == f"[convoy] shop: run {RUN_ID} failed and was rolled back"
    text = _text(mail)
    assert "wave_2.rollout_checkout" in text
    assert "rollback.revert_cart" in text
    raw = smtp_server.envelopes[0].original_content.decode()
    assert SECRET not in raw
    assert "password" not in raw.lower()


def test_plain_smtp_connection_id_uses_the_recipients_of_its_extra(
    smtp_server: _Mailbox,
) -> None:
    [notifier] = alerts.notifiers_for(["alerts_smtp"], policy=POLICY)
    assert isinstance(notifier, ConvoySmtpNotifier)
    notifier(context(FAILED_AND_ROLLED_BACK))
    assert [m["To"] for m in smtp_server.messages] == ["dba@example.com"]


def test_failure_delivers_exactly_one_alert_per_channel(
    smtp_server: _Mailbox, receiver: WebhookReceiver
) -> None:
    notifiers = alerts.notifiers_for(
        ["smtp://alerts_smtp?to=oncall@example.com", receiver.url(HOOK)], policy=POLICY
    )
    ctx = context(FAILED_AND_ROLLED_BACK)
    for notifier in notifiers:
        notifier(ctx)
    assert len(smtp_server.messages) == 1
    assert len(receiver.bodies) == 1
    assert SECRET not in json.dumps(receiver.bodies[0])


# --------------------------------------------------------------------------- mapping


def test_unknown_connection_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="no Airflow connection with that id"):
        alerts.notifiers_for(["no_such_conn_xyz"])


def test_connection_of_another_type_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SOME_PG", "postgres://u:p@localhost/db")
    with pytest.raises(ValueError, match="cannot send alerts") as info:
        alerts.notifiers_for(["some_pg"])
    assert "u:p" not in str(info.value)


def test_unknown_scheme_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown scheme"):
        alerts.notifiers_for(["sms://+15550100"])


@pytest.mark.skipif(slack_available(), reason="the slack provider is installed")
def test_slack_without_the_provider_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="apache-airflow-providers-slack"):
        alerts.notifiers_for(["slack://ops_slack#upgrades"])


# --------------------------------------------------------------------------- deadline


def test_deadline_alert_builds_and_a_dag_accepts_it() -> None:
    from datetime import timedelta

    from airflow.sdk import DAG
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DagRunQueuedAtDeadline, DeadlineAlert

    alert = alerts.deadline_alert(45, policy=POLICY, targets=["https://hooks.example.com/x"])
    assert isinstance(alert, DeadlineAlert)
    assert alert.interval == timedelta(minutes=45)
    assert isinstance(alert.reference, DagRunQueuedAtDeadline)
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "convoy.airflow.alerts.deadline_missed"
    assert alert.callback.kwargs == {"policy": POLICY, "targets": ["https://hooks.example.com/x"]}
    dag = DAG(dag_id="deadline_probe", schedule=None, deadline=alert)
    assert alert in list(dag.deadline or [])
    with pytest.raises(ValueError, match="unknown scheme"):
        alerts.deadline_alert(5, policy=POLICY, targets=["sms://x"])


def test_deadline_callback_sends_the_deadline_alert(receiver: WebhookReceiver) -> None:
    ctx = context({"wave_0.rollout_redis": "running"})
    sent = asyncio.run(
        alerts.deadline_missed(policy=POLICY, targets=[receiver.url(HOOK)], context=ctx)
    )
    assert sent == 1
    [body] = receiver.bodies
    assert body["event"] == "deadline"
    assert "missed its deadline" in body["subject"]
    assert "past its deadline" in body["message"]


def test_deadline_callback_takes_the_run_id_from_the_scheduler_context(
    receiver: WebhookReceiver,
) -> None:
    # What Deadline.handle_miss passes: the run as the REST API shows it.
    ctx = {
        "dag_run": {"dag_id": "convoy_shop", "dag_run_id": "manual__2026", "state": "running"},
        "deadline": {"id": "d1", "deadline_time": "2026-11-26T00:00:00+00:00"},
    }
    sent = asyncio.run(
        alerts.deadline_missed(policy=POLICY, targets=[receiver.url(HOOK)], context=ctx)
    )
    assert sent == 1
    [body] = receiver.bodies
    assert body["event"] == "deadline"
    assert body["run_id"] == "manual__2026"
    assert "manual__2026" in body["subject"]


# --------------------------------------------------------------------------- DAG callbacks


def serialized_context(states: dict[str, str]) -> dict[str, Any]:
    """The context of a DAG callback under ``DAG.test()``: its ``dag`` is a ``SerializedDAG``."""
    from airflow.serialization.serialized_objects import DagSerialization

    ctx = context(states)
    ctx["dag"] = DagSerialization.from_dict(DagSerialization.to_dict(ctx["dag"]))
    assert not hasattr(ctx["dag"], "get_template_env")
    return ctx


def test_alerts_get_through_when_the_callback_has_a_serialized_dag(
    smtp_server: _Mailbox, receiver: WebhookReceiver
) -> None:
    """``airflow dags test`` runs DAG callbacks with a SerializedDAG (apache/airflow#64649)."""
    callback = alerts.lazy_notifiers(
        ["smtp://alerts_smtp?to=oncall@example.com", receiver.url(HOOK)], policy=POLICY
    )
    assert callback is not None
    callback(serialized_context(FAILED_AND_ROLLED_BACK))
    assert len(smtp_server.messages) == 1
    assert [b["failed_step"] for b in receiver.bodies] == ["wave_2.rollout_checkout"]
