"""HTTP front of the emulator: routes, authorization, fault injection, watches.

Speaks enough of the Kubernetes REST API for ``convoy.rollout`` and the
official Python client: discovery, GET/LIST/WATCH of workloads, pods,
replicasets and controllerrevisions, and PATCH of workloads (strategic merge,
merge and JSON patch, ``dryRun=All``, ``resourceVersion`` preconditions).
Errors are ``Status`` objects shaped like the real server's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from convoy.emulator import metrics, tables
from convoy.emulator.patching import PatchError, json_patch, merge_patch, strategic_merge
from convoy.emulator.store import (
    KIND_OF,
    RESOURCES,
    WORKLOAD_RESOURCES,
    field_selector_matches,
    label_selector_matches,
)

if TYPE_CHECKING:
    from convoy.emulator.cluster import EmulatedCluster

DEFAULT_WATCH_TIMEOUT = 300.0
RECORDED = -1  # _handle's return value when the request was already logged
#: kubectl's short names (``kubectl get deploy``), as the real discovery lists them.
SHORT_NAMES = {
    "deployments": ("deploy",),
    "statefulsets": ("sts",),
    "daemonsets": ("ds",),
    "replicasets": ("rs",),
    "pods": ("po",),
}
PATCH_TYPES = {
    "application/strategic-merge-patch+json": strategic_merge,
    "application/merge-patch+json": merge_patch,
    "application/json-patch+json": json_patch,
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def qualified(resource: str) -> str:
    """``deployments.apps`` / ``pods`` as the server writes them in messages."""
    api_version = RESOURCES[resource][0]
    return f"{resource}.{api_version.split('/')[0]}" if "/" in api_version else resource


def group_of(resource: str) -> str:
    api_version = RESOURCES[resource][0]
    return api_version.split("/")[0] if "/" in api_version else ""


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cluster: EmulatedCluster) -> None:
        super().__init__(address, Handler)
        self.cluster = cluster


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes on a kept-alive connection:
    # with Nagle on, the body waited for the client's delayed ACK (~40 ms/request)
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # the cluster keeps its own request log

    # ---------------------------------------------------------------- plumbing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        if method == "GET" and parts.path == "/metrics":
            self._metrics()  # application traffic, not an API request: not in the request log
            return
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        watch = query.get("watch", "").lower() in ("true", "1")
        cluster = self.server.cluster
        started = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            code, body = self._handle(method, parts.path, query, raw, watch, started)
        except ApiError as err:
            code, body = err.code, err.status()
        if code == RECORDED:
            return
        # Logged before the response is sent, so a client never sees its answer
        # before the request is in the log.
        cluster.record(method, parts.path, query, code, watch, started)
        try:
            self._send_json(code, body)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _metrics(self) -> None:
        store = self.server.cluster.store
        with store.cond:
            data = metrics.render(store).encode()
        self.send_response(200)
        self.send_header("Content-Type", metrics.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def _send_json(self, code: int, body: Any) -> None:
        # Compact with sorted keys, as Go marshals maps: kubectl compares a
        # ControllerRevision's raw ``data`` byte for byte with its own encoding.
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # ------------------------------------------------------------------ routes

    def _handle(
        self, method: str, path: str, query: dict[str, str], raw: bytes, watch: bool, started: float
    ) -> tuple[int, Any]:
        cluster = self.server.cluster
        if path in ("/version", "/version/"):
            return 200, {
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0-convoy-emulator",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            return 200, _api_groups()
        if path in ("/apis/apps/v1", "/api/v1"):
            return 200, _resource_list(path)
        route = _route(path)
        if route is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource, namespace, name, subresource = route
        if subresource:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = {"GET": "watch" if watch else ("get" if name else "list"), "PATCH": "patch"}.get(
            method
        )
        if verb is None or (verb == "patch" and resource not in KIND_OF):
            raise ApiError(
                405, "MethodNotAllowed", f"the server does not allow this method on {resource}"
            )
        cluster.check_faults(verb, resource, namespace, name)
        accept = self.headers.get("Accept") or ""
        if verb == "get":
            obj = cluster.read(resource, namespace, name or "")
            if tables.wants_table(accept):
                rv = str(obj["metadata"].get("resourceVersion", ""))
                return 200, self._table(resource, [obj], rv, query, accept)
            return 200, obj
        if verb == "list":
            listed = cluster.list_objects(resource, namespace, query)
            if tables.wants_table(accept):
                rv = str(listed["metadata"]["resourceVersion"])
                return 200, self._table(resource, listed["items"], rv, query, accept)
            return 200, listed
        if verb == "watch":
            # A watch is logged when it starts (it may stay open for minutes).
            cluster.record(method, path, query, 200, True, started)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._watch(resource, namespace, query)  # until timeout or the client leaves
            return RECORDED, None
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        return 200, cluster.patch(resource, namespace, name or "", ctype, raw, query)

    @staticmethod
    def _table(
        resource: str, objects: list[dict[str, Any]], rv: str, query: dict[str, str], accept: str
    ) -> dict[str, Any]:
        include = query.get("includeObject") or "Metadata"
        if include not in ("None", "Metadata", "Object"):
            raise ApiError(400, "BadRequest", f"invalid includeObject {include!r}")
        return tables.to_table(
            resource,
            objects,
            rv,
            include_object=include,
            api_version=tables.table_version(accept),
        )

    def _watch(self, resource: str, namespace: str, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        store = cluster.store
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        end = time.monotonic() + timeout
        since_raw = query.get("resourceVersion", "")
        accept = self.headers.get("Accept") or ""
        as_table, columns_sent = tables.wants_table(accept), False
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def matches(obj: dict[str, Any]) -> bool:
            return label_selector_matches(
                labels, obj["metadata"].get("labels") or {}
            ) and field_selector_matches(fields, obj)

        pending: list[dict[str, Any]] = []
        with store.cond:
            if since_raw in ("", "0"):
                since = store.rv
                pending = [
                    {"type": "ADDED", "object": o}
                    for o in store.list(resource, namespace, labels, fields)
                ]
            else:
                since = int(since_raw)
                if since < store.oldest_rv():
                    pending = [_expired(since)]
                    since = -1
        while True:
            for event in pending:
                if as_table and event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    obj = event["object"]
                    rv = str(obj["metadata"].get("resourceVersion", ""))
                    event = {
                        "type": event["type"],
                        "object": self._table(resource, [obj], rv, query, accept),
                    }
                    # Like the real server: column definitions with the first event only.
                    if columns_sent:
                        event["object"]["columnDefinitions"] = []
                    columns_sent = True
                self._chunk(json.dumps(event).encode() + b"\n")
            if since < 0:
                break
            with store.cond:
                pending = []
                while not pending:
                    remaining = end - time.monotonic()
                    if remaining <= 0 or cluster.stopping:
                        break
                    pending = [
                        {"type": e.type, "object": copy.deepcopy(e.obj)}
                        for e in store.events
                        if e.rv > since
                        and e.resource == resource
                        and e.namespace == namespace
                        and matches(e.obj)
                    ]
                    since = store.rv
                    if not pending:
                        store.cond.wait(min(remaining, 0.5))
            if not pending:
                break
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _expired(since: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": ApiError(410, "Expired", f"too old resource version: {since}").status(),
    }


def _route(path: str) -> tuple[str, str, str | None, str | None] | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["apis", "apps"] and parts[2:3] == ["v1"]:
        rest = parts[3:]
        group_resources = {r for r, (av, _) in RESOURCES.items() if av == "apps/v1"}
    elif parts[:2] == ["api", "v1"]:
        rest = parts[2:]
        group_resources = {r for r, (av, _) in RESOURCES.items() if av == "v1"}
    else:
        return None
    if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in group_resources:
        return None
    name = rest[3] if len(rest) > 3 else None
    sub = rest[4] if len(rest) > 4 else None
    return rest[2], rest[1], name, sub


def _api_groups() -> dict[str, Any]:
    gv = {"groupVersion": "apps/v1", "version": "v1"}
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{"name": "apps", "versions": [gv], "preferredVersion": gv}],
    }


def _resource_list(path: str) -> dict[str, Any]:
    group_version = "apps/v1" if path.startswith("/apis") else "v1"
    resources = []
    for plural, (api_version, kind) in RESOURCES.items():
        if api_version != group_version:
            continue
        verbs = ["get", "list", "watch"] + (["patch"] if plural in KIND_OF else [])
        entry: dict[str, Any] = {
            "name": plural,
            "singularName": kind.lower(),
            "namespaced": True,
            "kind": kind,
            "verbs": verbs,
        }
        if plural in SHORT_NAMES:
            entry["shortNames"] = list(SHORT_NAMES[plural])
        if plural != "controllerrevisions":
            entry["categories"] = ["all"]
        resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


__all__ = [
    "PATCH_TYPES",
    "WORKLOAD_RESOURCES",
    "ApiError",
    "PatchError",
    "Server",
    "group_of",
    "qualified",
]
