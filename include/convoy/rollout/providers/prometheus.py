"""Prometheus HTTP API provider (``GET /api/v1/query``) and a plain HTTP check.

Authentication comes from the Airflow connection: a password without a login
is a bearer token, login and password are basic auth. The ``Authorization``
header is built once and is never part of a message or a log line; error
messages name the server as ``scheme://host:port`` only.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from convoy.rollout.providers import ProviderError

DEFAULT_TIMEOUT_S = 10.0
_MAX_BODY = 4 * 1024 * 1024


def auth_header(login: str | None, password: str | None) -> dict[str, str]:
    """``Authorization`` header of a connection's credentials (empty without a password)."""
    if not password:
        return {}
    if login:
        token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    return {"Authorization": f"Bearer {password}"}


def base_url(host: str, *, schema: str | None = None, port: int | None = None) -> str:
    """``scheme://host[:port][/path]`` from an Airflow connection's parts."""
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = f"{schema or 'http'}://{host}"
    parts = urllib.parse.urlsplit(host)
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6
        netloc = f"[{netloc}]"
    if parts.port or port:
        netloc += f":{parts.port or port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class _Http:
    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def server(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        url = self.url.rstrip("/") + "/" + path.lstrip("/")
        if params:
            url += "?" + urllib.parse.urlencode(params)
        if not url.startswith(("http://", "https://")):
            raise ProviderError(f"{self.server}: only http and https are supported")
        headers = {"Accept": "application/json", **self.headers}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return int(response.status), response.read(_MAX_BODY)
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read(_MAX_BODY)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProviderError(f"{self.server} unreachable: {reason}") from None


class PrometheusProvider(_Http):
    """One number from an instant query: a scalar, or a vector of exactly one sample."""

    def measure(self, query: str) -> float | None:
        status, body = self.get("/api/v1/query", {"query": query})
        try:
            data: Any = json.loads(body)
        except ValueError:
            raise ProviderError(f"{self.server} answered HTTP {status} without JSON") from None
        if status != 200 or not isinstance(data, dict) or data.get("status") != "success":
            error = data.get("error") if isinstance(data, dict) else None
            raise ProviderError(f"Prometheus {self.server}: HTTP {status}: {error or 'failed'}")
        result = data.get("data") or {}
        kind, value = result.get("resultType"), result.get("result")
        if kind == "scalar" and isinstance(value, list) and len(value) == 2:
            return _number(value[1])
        if kind == "vector" and isinstance(value, list):
            if not value:
                return None
            if len(value) > 1:
                raise ProviderError(
                    f"the query returned {len(value)} series; aggregate it to one "
                    "(sum, max, avg...)"
                )
            return _number(value[0]["value"][1])
        raise ProviderError(f"the query returned a {kind}; an analysis needs one number")


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ProviderError(f"not a number: {raw!r}") from None
    return None if math.isnan(value) else value


class HttpCheckProvider(_Http):
    """``GET url + path``: 1.0 for a 2xx answer, 0.0 otherwise (Flagger's webhook check)."""

    def measure(self, query: str) -> float | None:
        status, _ = self.get(query or "/")
        return 1.0 if 200 <= status < 300 else 0.0
