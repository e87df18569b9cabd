"""Server-side printing: ``meta.k8s.io/v1`` ``Table`` responses, as ``kubectl get`` asks for.

``kubectl get`` sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``;
the server answers a Table whose columns and cells are those of the real API
server's printers (pkg/printers/internalversion): deployments NAME, READY,
UP-TO-DATE, AVAILABLE, AGE (+ CONTAINERS, IMAGES, SELECTOR with ``-o wide``),
statefulsets NAME, READY, AGE, daemonsets NAME, DESIRED, CURRENT, READY,
UP-TO-DATE, AVAILABLE, NODE SELECTOR, AGE, replicasets NAME, DESIRED, CURRENT,
READY, AGE, controllerrevisions NAME, CONTROLLER, REVISION, AGE and pods NAME,
READY, STATUS, RESTARTS (``3 (12s ago)`` once a container has restarted), AGE
(+ IP, NODE, NOMINATED NODE, READINESS GATES).
Columns of priority 1 are sent always; kubectl shows them with ``-o wide``.
Each row carries the object's metadata (``includeObject=Metadata``, the
default), the whole object (``Object``) or nothing (``None``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

Column = tuple[str, str, int]  # name, type, priority
Row = Callable[[dict[str, Any], dt.datetime], list[Any]]


def wants_table(accept: str) -> bool:
    """Whether an ``Accept`` header asks for a meta.k8s.io Table (v1 or v1beta1)."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return True
    return False


def table_version(accept: str) -> str:
    """``meta.k8s.io/v1`` unless the client asks only for v1beta1."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return "meta.k8s.io/v1beta1" if "v=v1beta1" in params else "meta.k8s.io/v1"
    return "meta.k8s.io/v1"


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _since(stamp: str, now: dt.datetime) -> str:
    then = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return human_duration((now - then).total_seconds())


def _age(obj: dict[str, Any], now: dt.datetime) -> str:
    raw = (obj.get("metadata") or {}).get("creationTimestamp")
    return _since(raw, now) if raw else "<unknown>"


def _containers(obj: dict[str, Any]) -> tuple[str, str]:
    containers = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or []
    return (
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
    )


def _selector(obj: dict[str, Any]) -> str:
    selector = (obj.get("spec") or {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(sorted(expr.get("values") or []))
        op = str(expr.get("operator", "")).lower()
        if op in ("in", "notin"):
            parts.append(f"{expr.get('key')} {op} ({values})")
        elif op == "exists":
            parts.append(str(expr.get("key")))
        elif op == "doesnotexist":
            parts.append(f"!{expr.get('key')}")
    return ",".join(parts) or "<none>"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _deployment(obj: dict[str, Any], now: dt.datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [
        obj["metadata"]["name"],
        f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas', 1))}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _age(obj, now),
        names,
        images,
        _selector(obj),
    ]


def _statefulset(obj: dict[str, Any], now: dt.datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    ready = f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas', 1))}"
    return [obj["metadata"]["name"], ready, _age(obj, now), names, images]


def _daemonset(obj: dict[str, Any], now: dt.datetime) -> list[Any]:
    status = obj.get("status") or {}
    names, images = _containers(obj)
    node_selector = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "nodeSelector"
    ) or {}
    return [
        obj["metadata"]["name"],
        _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")),
        _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")),
        _int(status.get("numberAvailable")),
        ",".join(f"{k}={v}" for k, v in sorted(node_selector.items())) or "<none>",
        _age(obj, now),
        names,
        images,
        _selector(obj),
    ]


def _replicaset(obj: dict[str, Any], now: dt.datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [
        obj["metadata"]["name"],
        _int(spec.get("replicas")),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age(obj, now),
        names,
        images,
        _selector(obj),
    ]


def _controllerrevision(obj: dict[str, Any], now: dt.datetime) -> list[Any]:
    owners = [o for o in obj["metadata"].get("ownerReferences") or [] if o.get("controller")]
    controller = "<none>"
    if owners:
        group = str(owners[0].get("apiVersion", "")).rpartition("/")[0]
        kind = str(owners[0].get("kind", "")).lower()
        controller = f"{kind}.{group}/{owners[0].get('name')}" if group else f"{kind}/"
    return [obj["metadata"]["name"], controller, _int(obj.get("revision")), _age(obj, now)]


def _pod(obj: dict[str, Any], now: dt.datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    reason = str(status.get("reason") or status.get("phase") or "")
    restarts, ready, last_restart = 0, 0, ""
    for cs in reversed(status.get("containerStatuses") or []):
        restarts += _int(cs.get("restartCount"))
        finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt") or ""
        last_restart = max(last_restart, str(finished))  # RFC 3339 in UTC sorts as text
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated:
            signal, code = terminated.get("signal"), terminated.get("exitCode", 0)
            reason = f"Signal:{signal}" if signal else f"ExitCode:{code}"
        elif cs.get("ready") and "running" in state:
            ready += 1
    if obj["metadata"].get("deletionTimestamp") and reason not in ("Succeeded", "Failed"):
        reason = "Terminating"
    ips = status.get("podIPs") or []
    restarts_cell = str(restarts)
    if restarts and last_restart:
        restarts_cell += f" ({_since(last_restart, now)} ago)"
    return [
        obj["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts_cell,
        _age(obj, now),
        (ips[0].get("ip") if ips else status.get("podIP")) or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        "<none>",
    ]


_S, _I = "string", "integer"
#: resource plural -> (columns, row function); column names as the real printers spell them.
PRINTERS: dict[str, tuple[list[Column], Row]] = {
    "deployments": (
        [("Name", _S, 0), ("Ready", _S, 0), ("Up-to-date", _I, 0), ("Available", _I, 0),
         ("Age", _S, 0), ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)],
        _deployment,
    ),
    "statefulsets": (
        [("Name", _S, 0), ("Ready", _S, 0), ("Age", _S, 0), ("Containers", _S, 1),
         ("Images", _S, 1)],
        _statefulset,
    ),
    "daemonsets": (
        [("Name", _S, 0), ("Desired", _I, 0), ("Current", _I, 0), ("Ready", _I, 0),
         ("Up-to-date", _I, 0), ("Available", _I, 0), ("Node Selector", _S, 0), ("Age", _S, 0),
         ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)],
        _daemonset,
    ),
    "replicasets": (
        [("Name", _S, 0), ("Desired", _I, 0), ("Current", _I, 0), ("Ready", _I, 0),
         ("Age", _S, 0), ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)],
        _replicaset,
    ),
    "controllerrevisions": (
        [("Name", _S, 0), ("Controller", _S, 0), ("Revision", _I, 0), ("Age", _S, 0)],
        _controllerrevision,
    ),
    "pods": (
        [("Name", _S, 0), ("Ready", _S, 0), ("Status", _S, 0), ("Restarts", _S, 0),
         ("Age", _S, 0), ("IP", _S, 1), ("Node", _S, 1), ("Nominated Node", _S, 1),
         ("Readiness Gates", _S, 1)],
        _pod,
    ),
}  # fmt: skip


def to_table(
    resource: str,
    objects: list[dict[str, Any]],
    resource_version: str,
    *,
    include_object: str = "Metadata",
    api_version: str = "meta.k8s.io/v1",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A Table of ``objects`` (all of kind ``resource``) as the API server prints it."""
    columns, row = PRINTERS[resource]
    now = now or dt.datetime.now(dt.UTC)
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {"cells": row(obj, now)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": api_version,
                "metadata": obj.get("metadata", {}),
            }
        rows.append(entry)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": ctype,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, ctype, priority in columns
        ],
        "rows": rows,
    }


__all__ = ["PRINTERS", "human_duration", "table_version", "to_table", "wants_table"]
