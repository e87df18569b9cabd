"""In-memory object store with resource versions, a bounded event history for
watches, label/field selectors, and the simulated workload controller.

Everything is guarded by one :class:`threading.Condition`; watches wait on it.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: resource plural -> (apiVersion, kind, namespaced list kind)
RESOURCES: dict[str, tuple[str, str]] = {
    "deployments": ("apps/v1", "Deployment"),
    "statefulsets": ("apps/v1", "StatefulSet"),
    "daemonsets": ("apps/v1", "DaemonSet"),
    "replicasets": ("apps/v1", "ReplicaSet"),
    "controllerrevisions": ("apps/v1", "ControllerRevision"),
    "pods": ("v1", "Pod"),
}
WORKLOAD_RESOURCES = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}
KIND_OF = {plural: kind for kind, plural in WORKLOAD_RESOURCES.items()}

EVENT_HISTORY = 5000


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_tag(image: str) -> str:
    """The tag of an image reference (``""`` when it has none)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[colon + 1 :] if colon > slash else ""


def behaviour(image: str) -> str:
    """How the emulator treats pods of ``image``, from its tag suffix."""
    tag = image_tag(image)
    for suffix in BEHAVIOURS:
        if tag.endswith("-" + suffix):
            return suffix
    return "ready"


#: Tag suffixes that make the emulated pods misbehave (see convoy.emulator).
BEHAVIOURS = ("crashloop", "imagepull", "never-ready", "unschedulable", "slow")
#: Tag markers that change only the simulated traffic (see convoy.emulator.metrics).
TRAFFIC_BEHAVIOURS = ("errors", "latency")


# --------------------------------------------------------------------- selectors

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Evaluate a Kubernetes label selector string (equality and set based)."""
    if not selector:
        return True
    for req in _split_selector(selector):
        m = _SET_RE.match(req)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (op == "in") != (labels.get(key) in values):
                return False
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    """Evaluate the field selectors the API server supports for every kind."""
    if not selector:
        return True
    meta = obj.get("metadata", {})
    values = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
    for req in _split_selector(selector):
        negate = "!=" in req
        key, value = (s.strip() for s in req.replace("!=", "=").replace("==", "=").split("=", 1))
        if key not in values:
            raise ValueError(f'field label not supported: "{key}"')
        if (values[key] == value) == negate:
            return False
    return True


# ------------------------------------------------------------------------- store


@dataclass
class Event:
    rv: int
    type: str
    resource: str
    namespace: str
    obj: dict[str, Any]


@dataclass
class SimState:
    """Controller bookkeeping of one workload (not visible through the API)."""

    revision: str
    desired: int
    ticks: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    revision_number: int = 1
    pod_seq: int = 0
    progressing_reason: str = "NewReplicaSetAvailable"
    #: A Deployment's ``spec.paused`` as the controller last saw it.
    paused: bool = False


class Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 1
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self.sim: dict[tuple[str, str, str], SimState] = {}

    # All methods below expect ``self.cond`` to be held by the caller.

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def oldest_rv(self) -> int:
        return self.events[0].rv - 1 if len(self.events) == self.events.maxlen else 0

    def put(self, resource: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._bump()
        key = (resource, meta["namespace"], meta["name"])
        self.objects[key] = obj
        self.events.append(Event(self.rv, event, resource, meta["namespace"], copy.deepcopy(obj)))
        self.cond.notify_all()
        return obj

    def delete(self, resource: str, namespace: str, name: str) -> None:
        obj = self.objects.pop((resource, namespace, name), None)
        if obj is not None:
            obj["metadata"]["resourceVersion"] = self._bump()
            self.events.append(Event(self.rv, "DELETED", resource, namespace, copy.deepcopy(obj)))
            self.cond.notify_all()

    def list(
        self, resource: str, namespace: str, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        out = [
            obj
            for (res, ns, _), obj in sorted(self.objects.items())
            if res == resource
            and ns == namespace
            and label_selector_matches(labels, obj["metadata"].get("labels") or {})
            and field_selector_matches(fields, obj)
        ]
        return copy.deepcopy(out)


def new_meta(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": now_iso(),
        "labels": dict(labels or {}),
    }


def _normal(value: Any) -> Any:
    """Drop nulls and empty maps/lists, as the API server's decoding does for a template
    (``kubectl rollout undo`` sends ``creationTimestamp: null`` and ``resources: {}``)."""
    if isinstance(value, dict):
        out = {k: _normal(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def template_hash(template: dict[str, Any]) -> str:
    """The revision hash of a pod template (equal templates, equal hashes)."""
    digest = hashlib.sha256(json.dumps(_normal(template), sort_keys=True).encode()).hexdigest()
    return digest[:10]


def template_images(template: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c.get("image", "") for c in template.get("spec", {}).get("containers", [])}
