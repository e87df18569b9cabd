"""All Kubernetes I/O of the runner: one class handed its ``ApiClient``.

Requests go through the official client's ``ApiClient.call_api`` with raw JSON
bodies, so one code path serves every workload kind. Transient failures (5xx,
429, connection errors) are retried with jittered exponential backoff, a bounded
number of times; 403 becomes :class:`Forbidden`; 404 and 409 become the small
internal exceptions :class:`NotFound` and :class:`Conflict` for the runner.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from convoy.rollout.errors import ApiUnavailable, Forbidden

RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class NotFound(Exception):
    """404 from the API server (internal; the runner raises WorkloadNotFound)."""


class Conflict(Exception):
    """409 from the API server (internal; the runner re-reads and retries)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff for transient API failures and conflicts."""

    attempts: int = 5
    base_seconds: float = 0.2
    max_seconds: float = 5.0
    conflict_attempts: int = 5

    def delay(self, attempt: int) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)


@dataclass(frozen=True)
class WorkloadRef:
    """A namespaced workload."""

    namespace: str
    kind: str
    name: str

    def __post_init__(self) -> None:
        if self.kind not in RESOURCES:
            raise ValueError(f"kind must be one of {sorted(RESOURCES)}, not {self.kind!r}")

    @property
    def resource(self) -> str:
        return RESOURCES[self.kind]

    def collection_path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/{self.resource}"

    def path(self) -> str:
        return f"{self.collection_path()}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class KubernetesIO:
    """GET / LIST / WATCH / PATCH of workloads and LIST of pods, with retries."""

    def __init__(
        self,
        api_client: ApiClient,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_client = api_client
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    # ------------------------------------------------------------------ verbs

    def get(self, ref: WorkloadRef) -> dict[str, Any]:
        return self._json("GET", ref.path(), {}, verb="get", ref=ref)

    def list_one(self, ref: WorkloadRef) -> tuple[dict[str, Any] | None, str]:
        """LIST by ``fieldSelector=metadata.name=<name>``: (object or None, resourceVersion)."""
        body = self._json(
            "GET",
            ref.collection_path(),
            {"fieldSelector": f"metadata.name={ref.name}"},
            verb="list",
            ref=ref,
        )
        items = body.get("items") or []
        return (items[0] if items else None), str(body.get("metadata", {}).get("resourceVersion"))

    def list_all(self, ref: WorkloadRef) -> list[dict[str, Any]]:
        """LIST every workload of ``ref``'s kind in its namespace (``ref.name`` is ignored)."""
        body = self._json("GET", ref.collection_path(), {}, verb="list", ref=ref)
        return list(body.get("items") or [])

    def watch(
        self, ref: WorkloadRef, resource_version: str, timeout_seconds: float
    ) -> Iterator[dict[str, Any]]:
        """Watch the one workload from ``resource_version``; yields raw watch events.

        The server closes the stream after ``timeout_seconds`` (rounded up to a
        whole second, at least 1).
        """
        seconds = max(1, math.ceil(timeout_seconds))
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={ref.name}",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        resp = self._call(
            "GET",
            ref.collection_path(),
            query,
            verb="watch",
            ref=ref,
            stream=True,
            read_timeout=seconds + 10,
        )
        try:
            for line in iter_resp_lines(resp):
                if line.strip():
                    yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError):
            return  # a broken stream is re-established by the caller
        finally:
            resp.close()  # the stream may be unfinished: never reuse its connection
            resp.release_conn()

    def patch(
        self,
        ref: WorkloadRef,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        content_type: str = STRATEGIC_MERGE,
    ) -> dict[str, Any]:
        query = {"dryRun": "All"} if dry_run else {}
        query["fieldManager"] = "convoy"
        return self._json(
            "PATCH", ref.path(), query, verb="patch", ref=ref, body=body, content_type=content_type
        )

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        body = self._json(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            {"labelSelector": label_selector},
            verb="list",
            ref=None,
            resource=("pods", ""),
            namespace=namespace,
        )
        return list(body.get("items") or [])

    # --------------------------------------------------------------- plumbing

    def _json(self, method: str, path: str, query: dict[str, str], **kw: Any) -> dict[str, Any]:
        resp = self._call(method, path, query, **kw)
        try:
            data: dict[str, Any] = json.loads(resp.data)
        finally:
            resp.release_conn()
        return data

    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        *,
        verb: str,
        ref: WorkloadRef | None,
        body: Any = None,
        content_type: str = "application/json",
        stream: bool = False,
        read_timeout: float = 30.0,
        resource: tuple[str, str] | None = None,
        namespace: str = "",
    ) -> Any:
        res, group = resource or ((ref.resource, "apps") if ref else ("", ""))
        ns = ref.namespace if ref else namespace
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.api_client.call_api(
                    path,
                    method,
                    query_params=list(query.items()),
                    header_params={"Accept": "application/json", "Content-Type": content_type},
                    body=body,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _return_http_data_only=True,
                    _request_timeout=(10.0, read_timeout),
                )
            except ApiException as exc:
                status = int(exc.status or 0)
                message = _status_message(exc)
                if status == 403:
                    raise Forbidden.from_message(
                        message, verb=verb, resource=res, group=group, namespace=ns
                    ) from None
                if status == 404:
                    raise NotFound(message) from None
                if status == 409:
                    raise Conflict(message) from None
                if status not in RETRYABLE_STATUS and status != 0:
                    raise ApiUnavailable(
                        f"{method} {path} failed: HTTP {status}: {message}",
                        status=status,
                        path=path,
                    ) from None
                failure = f"HTTP {status}: {message}"
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if attempt >= self.retry.attempts:
                raise ApiUnavailable(
                    f"{method} {path} failed {attempt} times; last error: {failure}",
                    path=path,
                    attempts=attempt,
                )
            self._sleep(self.retry.delay(attempt))


def _status_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if body else {}
    except (TypeError, ValueError):
        return str(body or exc.reason or "")
    if isinstance(parsed, dict) and parsed.get("message"):
        return str(parsed["message"])
    return str(body or exc.reason or "")
