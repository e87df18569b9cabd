"""Alert targets of ``alerts.onFailure`` / ``onSuccess`` / ``onRollback`` (pure, no Airflow).

Syntax of one entry::

    smtp://<conn_id>?to=a@example.com,b@example.com[&from=convoy@example.com]
    slack://<conn_id>#<channel>
    https://hooks.example.com/convoy        (or http://; a JSON POST, see docs)
    <conn_id>                               (an Airflow connection of type smtp
                                             or slack, resolved when the DAG is built)

The policy loader calls :func:`parse_alert_target` on every entry so a typo is
a policy error with its file:line; :mod:`convoy.airflow.alerts` turns the
targets into Airflow notifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from convoy.policy.names import CONN_ID
from convoy.redaction import origin, redact

AlertKind = Literal["smtp", "slack", "webhook", "connection"]

SYNTAX = (
    "smtp://<conn_id>?to=<address>[,<address>...], slack://<conn_id>#<channel>, "
    "https://<url>, http://<url> or an Airflow connection id"
)

_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
_CHANNEL = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


@dataclass(frozen=True)
class AlertTarget:
    """One parsed entry. ``url`` only for webhooks; ``recipients`` only for smtp."""

    kind: AlertKind
    entry: str
    conn_id: str | None = None
    url: str | None = None
    recipients: tuple[str, ...] = ()
    sender: str | None = None
    channel: str | None = None

    def describe(self) -> str:
        """A description without secrets (webhook URLs may carry a token in the path)."""
        if self.kind == "webhook" and self.url:
            return f"webhook {origin(self.url)}"
        if self.kind == "smtp":
            return f"email via {self.conn_id} to {', '.join(self.recipients)}"
        if self.kind == "slack":
            return f"slack via {self.conn_id}" + (f" #{self.channel}" if self.channel else "")
        return f"connection {self.conn_id}"


def shown(entry: str) -> str:
    """``entry`` as messages may show it: a webhook's path and query may be its token."""
    text = entry.strip()
    if text.split("://", 1)[0].lower() in ("http", "https") and "://" in text:
        try:
            more = any(urlsplit(text)[2:])
        except ValueError:
            more = True
        return origin(text) + ("/..." if more else "")
    return redact(entry)


def _bad(entry: str, why: str) -> ValueError:
    return ValueError(f"alert target {shown(entry)!r}: {why} (expected {SYNTAX})")


def _conn_id(entry: str, value: str | None) -> str:
    if value and ("@" in value or ":" in value):
        raise _bad(
            entry,
            "the part after :// is an Airflow connection id, not a host with credentials; "
            "keep user, password and server in the Airflow connection",
        )
    if not value or not CONN_ID.match(value):
        raise _bad(entry, f"{redact(value or '')!r} is not a valid connection id")
    return value


def parse_alert_target(entry: str) -> AlertTarget:
    """Parse one ``alerts.on*`` entry; ``ValueError`` says what is wrong and the syntax."""
    text = entry.strip()
    if not text:
        raise _bad(entry, "empty entry")
    if "://" not in text:
        return AlertTarget("connection", entry, conn_id=_conn_id(entry, text))
    scheme = text.split("://", 1)[0].lower()
    parts = urlsplit(text)
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise _bad(entry, "the URL has no host")
        if parts.username or parts.password:
            raise _bad(entry, "credentials in the URL would end up in logs; use a connection")
        return AlertTarget("webhook", entry, url=text)
    if scheme == "smtp":
        conn_id = _conn_id(entry, parts.netloc)
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"to", "from"})
        if unknown:
            raise _bad(entry, f"unknown parameter(s) {', '.join(unknown)}; use to= and from=")
        recipients = tuple(a.strip() for v in query.get("to", []) for a in v.split(",") if a)
        if not recipients:
            raise _bad(entry, "no recipient: add ?to=<address>")
        for address in recipients:
            if not _EMAIL.match(address):
                raise _bad(entry, f"{address!r} is not an email address")
        senders = query.get("from", [])
        if len(senders) > 1 or (senders and not _EMAIL.match(senders[0])):
            raise _bad(entry, "from= must be one email address")
        return AlertTarget(
            "smtp",
            entry,
            conn_id=conn_id,
            recipients=recipients,
            sender=senders[0] if senders else None,
        )
    if scheme == "slack":
        conn_id = _conn_id(entry, parts.netloc)
        if parts.path not in ("", "/") or parts.query:
            raise _bad(entry, "only slack://<conn_id>#<channel> is supported")
        channel = parts.fragment.lstrip("#") or None
        if channel is not None and not _CHANNEL.match(channel):
            raise _bad(entry, f"{channel!r} is not a Slack channel name")
        return AlertTarget("slack", entry, conn_id=conn_id, channel=channel)
    raise _bad(entry, f"unknown scheme {scheme + '://'!r}")


def alert_target_errors(entries: tuple[str, ...] | list[str]) -> list[tuple[int, str]]:
    """``(index, message)`` for every bad entry of one list (for the policy loader)."""
    errors = []
    for i, entry in enumerate(entries):
        try:
            parse_alert_target(entry)
        except ValueError as exc:
            errors.append((i, str(exc)))
    return errors
