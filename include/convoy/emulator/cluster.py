"""`EmulatedCluster`: the public face of the emulator (see the package docstring)."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import yaml

from convoy.emulator.controller import (
    clock,
    ensure_revision,
    make_pod,
    set_pod_status,
    tick_workload,
    workload_pods,
)
from convoy.emulator.patching import PatchError
from convoy.emulator.server import PATCH_TYPES, ApiError, Server, group_of, qualified
from convoy.emulator.store import (
    BEHAVIOURS,
    KIND_OF,
    RESOURCES,
    TRAFFIC_BEHAVIOURS,
    WORKLOAD_RESOURCES,
    SimState,
    Store,
    new_meta,
    template_hash,
    template_images,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from convoy.policy.models import Policy

#: A longer controller period only makes a rollout look hung; time.sleep overflows far beyond it.
MAX_TICK_SECONDS = 3600.0
TOKEN = "convoy-emulator-token"  # noqa: S105 - a fixed token for a local fake server


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator served."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    watch: bool
    started: float = field(default=0.0, compare=False)

    @property
    def verb(self) -> str:
        """``GET`` / ``LIST`` / ``WATCH`` / ``PATCH`` (a GET of a collection is a LIST)."""
        if self.method != "GET":
            return self.method
        if self.watch:
            return "WATCH"
        parts = [p for p in self.path.split("/") if p]
        collection = (len(parts) >= 2 and parts[-2] == "namespaces") or (
            len(parts) >= 3 and parts[-3] == "namespaces"
        )
        return "LIST" if collection else "GET"


def previous_image(image: str, previous_tag: str | None = None) -> str:
    """A plausible previous version of ``image``: ``cart:2.4.0`` -> ``cart:2.3.0``."""
    base, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        base, tag = image, ""
    if previous_tag is not None:
        return f"{base}:{previous_tag}"
    m = re.match(r"^(\D*)(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)$", tag)
    if not m:
        return f"{base}:previous"
    prefix, major, minor, patch, rest = m.groups()
    nums = [int(major)] + [int(x) for x in (minor, patch) if x is not None]
    for i in (1, 2, 0):  # minor, then patch, then major
        if i < len(nums) and nums[i] > 0:
            nums[i] -= 1
            break
    else:
        return f"{base}:{tag}-previous"
    # The running version is healthy: a behaviour suffix belongs to the new image only.
    for suffix in BEHAVIOURS:
        rest = rest.removesuffix("-" + suffix)
    for marker in TRAFFIC_BEHAVIOURS:
        rest = rest.replace("-" + marker, "")
    return f"{base}:{prefix}{'.'.join(str(n) for n in nums)}{rest}"


class EmulatedCluster:
    """A fake Kubernetes API server over real HTTP with a simulated controller.

    Use as a context manager (or :meth:`start`/:meth:`stop`). ``tick_seconds`` is
    the controller period; every tick each workload moves one pod one step.
    """

    def __init__(
        self,
        tick_seconds: float = 0.05,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        user: str = "system:serviceaccount:default:convoy-rollout",
    ) -> None:
        if not 0 < tick_seconds <= MAX_TICK_SECONDS:  # False for NaN too
            raise ValueError(
                f"tick_seconds must be in (0, {MAX_TICK_SECONDS:g}], not {tick_seconds}"
            )
        self.tick_seconds = tick_seconds
        self.user = user
        self.store = Store()
        self.requests: list[RequestRecord] = []
        self.stopping = False
        self._host, self._port = host, port
        self._server: Server | None = None
        self._threads: list[threading.Thread] = []
        self._faults = threading.Lock()
        self._conflicts = 0
        self._errors: list[int] = []
        #: (verb, resource, name or None for every object) -> requests still let through.
        self._forbidden: dict[tuple[str, str, str | None], int] = {}
        #: Why the controller stopped, when it stopped on an error: workloads no longer move.
        self.controller_error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self._server = Server((self._host, self._port), self)
        self.stopping = False
        serve = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="emulator-http", daemon=True
        )
        ctrl = threading.Thread(
            target=self._controller_loop, name="emulator-controller", daemon=True
        )
        self._threads = [serve, ctrl]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping = True
        with self.store.cond:
            self.store.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulated cluster is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig (context ``emulator``) pointing at this server."""
        out = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "convoy", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "convoy", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
        out.write_text(yaml.safe_dump(config, sort_keys=False))
        return out

    def api_client(self) -> ApiClient:
        """An official-client ``ApiClient`` configured for this server."""
        from kubernetes.client import ApiClient, Configuration

        cfg = Configuration()
        cfg.host = self.url
        cfg.api_key = {"authorization": TOKEN}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return ApiClient(cfg)

    # ------------------------------------------------------- faults & authz

    def inject_conflicts(self, n: int = 1) -> None:
        """The next ``n`` PATCH requests answer 409 Conflict."""
        with self._faults:
            self._conflicts += n

    def inject_errors(self, status: int = 503, n: int = 1) -> None:
        """The next ``n`` resource requests (any verb) answer ``status``."""
        with self._faults:
            self._errors.extend([status] * n)

    def forbid(self, verb: str, resource: str, name: str | None = None, *, after: int = 0) -> None:
        """Deny ``verb`` (get/list/watch/patch) on ``resource`` (plural) to the client.

        ``name`` limits the denial to one object (requests for it by name, like
        a ``resourceNames`` rule); ``after`` lets that many matching requests
        through first, like a permission revoked part-way through a run.
        """
        with self._faults:
            self._forbidden[(verb, resource, name)] = after

    def allow(self, verb: str, resource: str, name: str | None = None) -> None:
        """Undo :meth:`forbid` (with the same ``name``)."""
        with self._faults:
            self._forbidden.pop((verb, resource, name), None)

    def _denied(self, verb: str, resource: str, name: str | None) -> bool:
        """Whether a forbid rule denies this request; counts down ``after``."""
        keys = [(verb, resource, None)] + ([(verb, resource, name)] if name else [])
        for key in keys:
            if key not in self._forbidden:
                continue
            if self._forbidden[key] > 0:
                self._forbidden[key] -= 1
                continue
            return True
        return False

    def record(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        status: int,
        watch: bool,
        started: float,
    ) -> None:
        with self._faults:
            self.requests.append(RequestRecord(method, path, query, status, watch, started))

    def check_faults(self, verb: str, resource: str, namespace: str, name: str | None) -> None:
        with self._faults:
            if self._errors:
                code = self._errors.pop(0)
                raise ApiError(
                    code,
                    "ServiceUnavailable" if code == 503 else "InternalError",
                    "the server is currently unable to handle the request (injected)",
                )
            if self._denied(verb, resource, name):
                target = f'{qualified(resource)} "{name}"' if name else qualified(resource)
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{target} is forbidden: User "{self.user}" cannot {verb} resource '
                    f'"{resource}" in API group "{group_of(resource)}" in the namespace '
                    f'"{namespace}"',
                    {"name": name or "", "group": group_of(resource), "kind": resource},
                )
            if verb == "patch" and self._conflicts > 0:
                self._conflicts -= 1
                raise _conflict(resource, name or "")

    # ------------------------------------------------------------ API verbs

    def read(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with self.store.cond:
            obj = self.store.objects.get((resource, namespace, name))
            if obj is None:
                raise _not_found(resource, name)
            return copy.deepcopy(obj)

    def list_objects(self, resource: str, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        with self.store.cond:
            try:
                items = self.store.list(
                    resource, namespace, query.get("labelSelector"), query.get("fieldSelector")
                )
            except ValueError as err:
                raise ApiError(400, "BadRequest", str(err)) from err
            return {
                "kind": RESOURCES[resource][1] + "List",
                "apiVersion": RESOURCES[resource][0],
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }

    def patch(
        self,
        resource: str,
        namespace: str,
        name: str,
        ctype: str,
        raw: bytes,
        query: dict[str, str],
    ) -> dict[str, Any]:
        apply = PATCH_TYPES.get(ctype)
        if apply is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(PATCH_TYPES)}",
            )
        dry_run = query.get("dryRun")
        if dry_run not in (None, "All"):
            raise ApiError(400, "BadRequest", f"unsupported dry run option {dry_run!r}")
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as err:
            raise ApiError(400, "BadRequest", f"the request body is not JSON: {err}") from err
        with self.store.cond:
            current = self.store.objects.get((resource, namespace, name))
            if current is None:
                raise _not_found(resource, name)
            try:
                result = apply(current, body)
            except PatchError as err:
                raise ApiError(422, "Invalid", str(err)) from err
            if not isinstance(result, dict):
                raise ApiError(422, "Invalid", "the patched object is not an object")
            wanted_rv = (result.get("metadata") or {}).get("resourceVersion")
            if (
                wanted_rv not in (None, "")
                and str(wanted_rv) != current["metadata"]["resourceVersion"]
            ):
                raise _conflict(resource, name)
            result["status"] = copy.deepcopy(current.get("status", {}))
            result["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            _validate(resource, current, result)
            if result == current:
                return copy.deepcopy(current)
            if result.get("spec") != current.get("spec"):
                result["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            if dry_run == "All":
                return result
            return copy.deepcopy(self.store.put(resource, result, "MODIFIED"))

    # ------------------------------------------------------- test helpers

    def add_workload(
        self,
        kind: str,
        namespace: str,
        name: str,
        containers: dict[str, str],
        replicas: int = 3,
        progress_deadline_seconds: int = 600,
    ) -> dict[str, Any]:
        """Create a fully rolled-out workload (its pods ready) and return it."""
        resource = WORKLOAD_RESOURCES[kind]
        labels = {"app": name}
        template = {
            "metadata": {"labels": dict(labels)},
            "spec": {"containers": [{"name": c, "image": i} for c, i in containers.items()]},
        }
        spec: dict[str, Any] = {"selector": {"matchLabels": dict(labels)}, "template": template}
        if kind == "Deployment":
            spec.update(
                replicas=replicas,
                progressDeadlineSeconds=progress_deadline_seconds,
                strategy={
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
        elif kind == "StatefulSet":
            spec.update(
                replicas=replicas,
                serviceName=name,
                updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            )
        else:
            spec["updateStrategy"] = {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1},
            }
        meta = new_meta(namespace, name, labels)
        meta["generation"] = 1
        meta["annotations"] = {}
        obj = {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec, "status": {}}
        key = (resource, namespace, name)
        with self.store.cond:
            if key in self.store.objects:
                raise ValueError(f"{kind} {namespace}/{name} already exists")
            sim = SimState(revision=template_hash(template), desired=replicas)
            self.store.sim[key] = sim
            self.store.put(resource, obj, "ADDED")
            ensure_revision(self.store, resource, obj, sim)
            for i in range(replicas):
                pod = make_pod(self.store, resource, obj, sim, i if kind == "StatefulSet" else None)
                set_pod_status(pod, ready=True, restarts=0)
                self.store.put("pods", pod, "ADDED")
            tick_workload(self.store, key, clock())
            return copy.deepcopy(self.store.objects[key])

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.read(WORKLOAD_RESOURCES[kind], namespace, name)

    def images(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        """Container name -> image of the workload's pod template."""
        return template_images(self.get_workload(kind, namespace, name)["spec"]["template"])

    def pods(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        with self.store.cond:
            return copy.deepcopy(
                workload_pods(self.store, WORKLOAD_RESOURCES[kind], namespace, name)
            )

    def seed_from_policy(
        self, policy: Policy, previous_tag: str | None = None, replicas: int = 3
    ) -> dict[str, dict[str, str]]:
        """Create every service's workload at the previous version of its images.

        Returns service name -> the images it was created with.
        """
        ns = policy.kubernetes.namespace
        seeded = {}
        for svc in policy.services:
            images = {c: previous_image(i, previous_tag) for c, i in svc.containers.items()}
            self.add_workload(
                svc.workload.kind,
                ns,
                svc.workload.name,
                images,
                replicas=replicas,
                progress_deadline_seconds=policy.rollout.progress_deadline_seconds,
            )
            seeded[svc.name] = images
        return seeded

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until the controller has observed every workload's latest spec (tests)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.store.cond:
                busy = any(
                    o.get("status", {}).get("observedGeneration") != o["metadata"].get("generation")
                    for (r, _, _), o in self.store.objects.items()
                    if r in KIND_OF
                )
            if not busy:
                return
            time.sleep(self.tick_seconds)

    # ------------------------------------------------------------ controller

    @property
    def controller_alive(self) -> bool:
        """Whether the simulated controller still moves workloads."""
        return self.controller_error is None and any(
            t.name == "emulator-controller" and t.is_alive() for t in self._threads
        )

    def _controller_loop(self) -> None:
        try:
            while not self.stopping:
                with self.store.cond:
                    now = clock()
                    for key in list(self.store.sim):
                        tick_workload(self.store, key, now)
                time.sleep(self.tick_seconds)
        except BaseException as exc:
            self.controller_error = exc
            raise


def _not_found(resource: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource)} "{name}" not found',
        {"name": name, "group": group_of(resource), "kind": resource},
    )


def _conflict(resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": group_of(resource), "kind": resource},
    )


def _validate(resource: str, current: dict[str, Any], result: dict[str, Any]) -> None:
    kind = KIND_OF[resource]
    name = current["metadata"]["name"]
    causes: list[str] = []
    meta = result.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != name:
        causes.append("metadata.name: Invalid value: field is immutable")
    spec = result.get("spec")
    if not isinstance(spec, dict):
        causes.append("spec: Required value")
    else:
        if spec.get("selector") != current["spec"].get("selector"):
            causes.append("spec.selector: Invalid value: field is immutable")
        replicas = spec.get("replicas", 1)
        if kind != "DaemonSet" and (not isinstance(replicas, int) or replicas < 0):
            causes.append("spec.replicas: Invalid value: must be greater than or equal to 0")
        containers = (spec.get("template") or {}).get("spec", {}).get("containers")
        if not isinstance(containers, list) or not containers:
            causes.append("spec.template.spec.containers: Required value")
        else:
            for i, c in enumerate(containers):
                if not isinstance(c, dict) or not c.get("name"):
                    causes.append(f"spec.template.spec.containers[{i}].name: Required value")
                elif not isinstance(c.get("image"), str) or not c["image"]:
                    causes.append(f"spec.template.spec.containers[{i}].image: Required value")
    if causes:
        raise ApiError(
            422,
            "Invalid",
            f'{kind}.apps "{name}" is invalid: ' + ", ".join(causes),
            {"name": name, "group": "apps", "kind": kind},
        )
