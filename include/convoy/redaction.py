"""The one redaction rule for everything convoy prints, logs, stores or serves.

Policy diagnostics, ``convoy plan`` output, DAG descriptions and docs, log
lines, run reports, lineage facets and the Upgrades page all pass their text
through :func:`redact` (or :func:`redact_data` for JSON-like values), so a
credential that reaches convoy by mistake (a connection URI pasted into a
policy, a webhook URL with its token) is masked the same way everywhere:

- userinfo of any URI: ``scheme://user:password@host`` ->
  ``scheme://user:***@host``; a user name alone is often a token
  (``https://<token>@github.com``), so ``scheme://token@host`` ->
  ``scheme://***@host``;
- secret-named parameters in query strings and ``key=value`` connection
  strings (``?token=``, ``&sig=``, ``password=``, ``AccountKey=`` ...) and in
  JSON/dict text (``"password": "..."``);
- webhook secrets in paths (Slack ``hooks.slack.com/services/...``, Discord,
  Microsoft Teams, any ``/hooks/`` or ``/webhooks/`` path) and well-known
  token shapes (Slack ``xox?-``, GitHub ``ghp_``, AWS access key ids,
  ``Bearer`` credentials).

The rule is pure (no Airflow import) so :mod:`convoy.policy` can use it.
It is idempotent: redacting redacted text changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

MASK = "***"

T = TypeVar("T")

# Characters a URI authority cannot contain unencoded (RFC 3986) plus quotes and
# brackets that end a URI in prose, logs, JSON and HTML.
_AUTHORITY = r"[^\s/?#@'\"<>`\\\[\]{}|]"
# A password may hold an unencoded '@': it runs to the last '@' of the authority.
_USERINFO = re.compile(
    rf"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>{_AUTHORITY}*?)"
    r"(?P<password>:[^\s/?#'\"<>`\\\[\]{}|]*)?@"
)

# Parameter names whose values are secrets: exact names, and words a name contains
# (compared without '-', '_' and '.', lower-case).
_SECRET_NAMES = frozenset({"key", "sig", "pass", "pw", "pwd", "auth"})
_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "accountkey",
    "sharedaccesskey",
    "privatekey",
    "subscriptionkey",
    "credential",
    "signature",
    "sessionid",
    "authorization",
)
_PARAM = re.compile(
    r"(?P<key>(?<![\w.%-])[A-Za-z_][\w.-]*)="
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&#;,'\"<>)\]}]+)"
)
_JSON_PARAM = re.compile(
    r"(?P<q>[\"'])(?P<key>[A-Za-z_][\w.-]*)(?P=q)(?P<sep>\s*:\s*)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
)

_WEBHOOK_PATHS = (
    # Slack incoming webhooks and workflow triggers: /services/T.../B.../<secret>
    re.compile(
        r"(?P<keep>\bhooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/)[^\s?#'\"<>]+"
    ),
    # Discord: /api/webhooks/<id>/<token>
    re.compile(r"(?P<keep>\bdiscord(?:app)?\.com/api/webhooks/)[^\s?#'\"<>]+"),
    # Microsoft Teams / Office 365 connectors and Power Automate workflows
    re.compile(r"(?P<keep>\b[\w.-]*webhook\.office\.com/)[^\s?#'\"<>]+"),
    re.compile(r"(?P<keep>\boutlook\.office(?:365)?\.com/webhook/)[^\s?#'\"<>]+"),
    # Any other service that keeps the secret in the path after /hooks/ or /webhooks/
    re.compile(
        r"(?P<keep>://[^\s/?#'\"<>]+(?:/[^\s/?#'\"<>]+)*?/(?:hooks|webhooks?|webhookb2)/)"
        r"[^\s?#'\"<>]+"
    ),
)
# Each with the literals one of which any match contains: text without them
# skips the pattern (most text, e.g. a DAG's docs, holds none of them).
_TOKENS = (
    (("xox",), re.compile(r"(?P<keep>\bxox[abposre]-)[A-Za-z0-9-]{8,}")),
    (("xapp-",), re.compile(r"(?P<keep>\bxapp-)[A-Za-z0-9-]{8,}")),
    (("gh",), re.compile(r"(?P<keep>\bgh[pousr]_)[A-Za-z0-9]{20,}")),
    (("github_pat_",), re.compile(r"(?P<keep>\bgithub_pat_)[A-Za-z0-9_]{20,}")),
    (("glpat-",), re.compile(r"(?P<keep>\bglpat-)[A-Za-z0-9_-]{20,}")),
    (("AKIA", "ASIA"), re.compile(r"(?P<keep>\b(?:AKIA|ASIA))[0-9A-Z]{16}\b")),
    (("AIza",), re.compile(r"(?P<keep>\bAIza)[0-9A-Za-z_-]{35}")),
    (("Bearer",), re.compile(r"(?P<keep>\bBearer\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}")),
)


def is_secret_name(name: str) -> bool:
    """Whether a parameter or field named ``name`` holds a secret (``password``, ``sig``...)."""
    folded = re.sub(r"[-_.]", "", name).lower()
    if folded.startswith("xamz"):
        folded = folded[4:]
    return folded in _SECRET_NAMES or any(word in folded for word in _SECRET_WORDS)


def _userinfo(match: re.Match[str]) -> str:
    if match["password"] is None:
        return f"{match['scheme']}{MASK}@" if match["user"] else match[0]
    return f"{match['scheme']}{match['user']}:{MASK}@"


def _param(match: re.Match[str]) -> str:
    if not is_secret_name(match["key"]):
        return match[0]
    return f"{match['key']}={MASK}"


def _json_param(match: re.Match[str]) -> str:
    if not is_secret_name(match["key"]):
        return match[0]
    quote = match["value"][0]
    return f"{match['q']}{match['key']}{match['q']}{match['sep']}{quote}{MASK}{quote}"


def _keep(match: re.Match[str]) -> str:
    return f"{match['keep']}{MASK}"


def redact(text: str) -> str:
    """``text`` with every credential the rule recognises replaced by ``***``.

    >>> redact("smtp://user:password@host:587 and https://h/x?a=1&token=abc")
    'smtp://user:***@host:587 and https://h/x?a=1&token=***'
    """
    if not text:
        return text
    # A pattern runs only on text holding a literal every match of it contains
    # (the substitutions only ever add ``***``).
    out = _USERINFO.sub(_userinfo, text) if "@" in text else text
    if "hook" in out:  # every _WEBHOOK_PATHS pattern has it
        for pattern in _WEBHOOK_PATHS:
            out = pattern.sub(_keep, out)
    if "=" in out:
        out = _PARAM.sub(_param, out)
    if ":" in out and ('"' in out or "'" in out):
        out = _JSON_PARAM.sub(_json_param, out)
    for literals, pattern in _TOKENS:
        if any(literal in out for literal in literals):
            out = pattern.sub(_keep, out)
    return out


def redact_data(value: T) -> T:
    """A copy of a JSON-like value with every string redacted and secret-named keys masked."""
    return _redact_any(value)  # type: ignore[no-any-return]


def _redact_any(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = redact(key) if isinstance(key, str) else key
            secret = isinstance(key, str) and is_secret_name(key) and isinstance(item, str)
            out[name] = MASK if secret and item else _redact_any(item)
        return out
    if isinstance(value, list):
        return [_redact_any(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_any(v) for v in value)
    return value


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: all a message needs of a webhook URL."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return redact(url.split("/", 3)[0] + "//…") if "://" in url else MASK
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


class RedactingFilter(logging.Filter):
    """Applies :func:`redact` to a record's message (formatted with its arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            trace = logging.Formatter().formatException(record.exc_info)
            clean_trace = redact(trace)
            if clean_trace != trace:
                # Handlers format exc_info themselves; only the redacted text may reach them.
                record.msg = f"{record.msg}\n{clean_trace}"
                record.exc_info, record.exc_text = None, None
        return True


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are redacted before any handler sees them."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
