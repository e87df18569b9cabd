"""The rollout runner: apply new images to a workload, wait like ``kubectl
rollout status``, explain failures from pods, and revert.

Waiting costs one LIST (``fieldSelector=metadata.name=<name>``) and one WATCH
from the list's resourceVersion. The watch is re-established from the last seen
resourceVersion when the server closes it (and re-listed only on 410 Gone); it
is opened with ``timeoutSeconds`` no longer than the stall window, so that a
rollout that stops moving is explained from its pods (one pod LIST) without
waiting for the whole deadline.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes.client import ApiClient

from convoy.observe.progress import Progress, ProgressSink
from convoy.redaction import get_logger
from convoy.rollout.api import Conflict, KubernetesIO, NotFound, RetryPolicy, WorkloadRef
from convoy.rollout.errors import (
    ApiUnavailable,
    ConflictRetriesExhausted,
    ContainerNotFound,
    DeadlineExceeded,
    NothingToRevert,
    WorkloadNotFound,
)
from convoy.rollout.status import RolloutState, container_images, diagnose, judge, not_ready_reason

PREVIOUS_IMAGES = "convoy.dev/previous-images"
REVERTED_FROM = "convoy.dev/reverted-from"
RUN_ID = "convoy.dev/run-id"
#: The images convoy last set on the workload's containers (by apply or revert): what
#: ``convoy status`` compares the live images with to tell a hand change (drift).
IMAGES = "convoy.dev/images"

Action = Literal["apply", "revert", "status"]
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """What a workload's containers should run."""

    namespace: str
    kind: str
    name: str
    containers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> WorkloadRef:
        return WorkloadRef(self.namespace, self.kind, self.name)


@dataclass(frozen=True)
class RolloutResult:
    """The outcome of apply / revert / status; ``to_dict()`` is the CLI's JSON."""

    action: Action
    namespace: str
    kind: str
    name: str
    changed: bool
    dry_run: bool
    previous_images: Mapping[str, str]
    images: Mapping[str, str]
    status: str  # complete | noop | dry-run | skipped | progressing | failed
    ready_seconds: float
    replicas: Mapping[str, int]
    run_id: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
            "changed": self.changed,
            "dryRun": self.dry_run,
            "previousImages": dict(self.previous_images),
            "images": dict(self.images),
            "status": self.status,
            "readySeconds": round(self.ready_seconds, 3),
            "replicas": dict(self.replicas),
            "runId": self.run_id,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutResult:
        """The result as :meth:`to_dict` wrote it."""
        return cls(
            action=data["action"],
            namespace=str(data["namespace"]),
            kind=str(data["kind"]),
            name=str(data["name"]),
            changed=bool(data["changed"]),
            dry_run=bool(data.get("dryRun")),
            previous_images={str(k): str(v) for k, v in dict(data["previousImages"]).items()},
            images={str(k): str(v) for k, v in dict(data["images"]).items()},
            status=str(data["status"]),
            ready_seconds=float(data.get("readySeconds") or 0.0),
            replicas={str(k): int(v) for k, v in dict(data.get("replicas") or {}).items()},
            run_id=data.get("runId"),
            message=str(data.get("message") or ""),
        )


class ProgressLog:
    """Progress lines ``cart: 2/3 updated, 1/3 ready (66%) 0.8 replicas/s ETA 2s``, rate-limited.

    Rate and ETA come from a :class:`~convoy.observe.progress.Progress` over the
    replicas that are both updated and ready, which also hands its record to
    ``sink`` (bounded by ``sink_interval_s``, and at :meth:`finish`).
    """

    def __init__(
        self,
        label: str,
        log: LogFn,
        interval: float,
        clock: Callable[[], float],
        *,
        sink: ProgressSink | None = None,
        sink_interval_s: float | None = None,
    ):
        self.label, self.log, self.interval, self.clock = label, log, interval, clock
        self.sink, self.sink_interval_s = sink, sink_interval_s
        self.counter: Progress | None = None
        self.last_line = ""
        self.last_time = float("-inf")

    @staticmethod
    def done(state: RolloutState, pods: int | None = None) -> int:
        """Replicas both updated and ready, from a status that counts each separately.

        The ready count includes the old revision's pods, so with the number of
        ``pods`` of every revision the overlap is bounded from below too: an
        updated pod that is not ready yet is not counted while old ones serve.
        """
        done = min(state.updated, state.ready, max(state.desired, 0))
        if pods:
            done = min(done, state.updated + state.ready - pods)
        return max(0, done)

    def track(self, state: RolloutState, pods: int | None = None) -> None:
        desired = max(state.desired, 0)
        if self.counter is None:
            if not state.observed:
                # counts before the controller observed the new spec are the old revision's
                return
            # The rate counts from here, so replicas already updated before the
            # wait (a retried apply) do not inflate it.
            self.counter = Progress(
                desired,
                self.label,
                lambda _line: None,  # the lines are this class's own
                unit="replicas",
                min_interval_s=math.inf,
                done=self.done(state, pods),
                clock=self.clock,
                sink=self.sink,
                sink_interval_s=self.sink_interval_s,
            )
        self.counter.set_total(desired)
        self.counter.update(self.done(state, pods))

    def line(self, state: RolloutState) -> str:
        desired = max(state.desired, 0)
        pct = int(100 * state.updated / desired) if desired else 100
        text = (
            f"{self.label}: {state.updated}/{desired} updated, {state.ready}/{desired} ready "
            f"({pct}%)"
        )
        rate = self.counter.rate() if self.counter is not None else 0.0
        eta = self.counter.eta_s() if self.counter is not None else None
        if rate > 0 and eta is not None:
            text += f" {rate:.1f} replicas/s ETA {round(eta)}s"
        return text

    def report(self, state: RolloutState, *, force: bool = False, pods: int | None = None) -> None:
        self.track(state, pods)
        text = self.line(state)
        now = self.clock()
        if force or (text != self.last_line and now - self.last_time >= self.interval):
            self.log(text)
            self.last_line, self.last_time = text, now

    def finish(self, state: RolloutState, pods: int | None = None) -> None:
        """Hand the final record to the sink (the last line is logged by :meth:`report`)."""
        self.track(state, pods)
        if self.counter is not None:
            self.counter.finish()


def pod_count(obj: Mapping[str, Any]) -> int | None:
    """Pods of every revision a workload's status counts (``None``: not reported)."""
    status = obj.get("status") or {}
    value = status.get("replicas", status.get("currentNumberScheduled"))
    return None if value is None else int(value)


def _as_log(log: LogFn | logging.Logger | None) -> LogFn:
    if log is None:
        return get_logger("convoy.rollout").info
    if isinstance(log, logging.Logger):
        return log.info
    return log


class RolloutRunner:
    """Apply, revert and inspect image rollouts of one workload at a time."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        log: LogFn | logging.Logger | None = None,
        retry: RetryPolicy | None = None,
        stall_seconds: float = 30.0,
        progress_interval: float = 2.0,
        progress_sink_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.io = KubernetesIO(api_client, retry, sleep)
        self.log = _as_log(log)
        self.retry = self.io.retry
        self.stall_seconds = stall_seconds
        self.progress_interval = progress_interval
        #: ``None``: ``$CONVOY_PROGRESS_PUSH_INTERVAL_S`` (5 s), read per wait.
        self.progress_sink_interval = progress_sink_interval
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ public

    def apply(
        self,
        target: Target,
        *,
        deadline_seconds: float,
        dry_run: bool = False,
        run_id: str | None = None,
        progress: ProgressSink | None = None,
    ) -> RolloutResult:
        """Set ``target.containers`` images and wait until the rollout completes.

        ``progress`` receives :func:`~convoy.observe.progress.progress_value`
        records (replicas updated and ready of the desired ones) while it waits.
        """
        return self._set_images(
            "apply", target, deadline_seconds=deadline_seconds, dry_run=dry_run, run_id=run_id,
            progress=progress,
        )  # fmt: skip

    def revert(
        self,
        target: Target,
        *,
        deadline_seconds: float,
        dry_run: bool = False,
        run_id: str | None = None,
        only_if_run_id: str | None = None,
        progress: ProgressSink | None = None,
    ) -> RolloutResult:
        """Put back ``target.containers`` (or the ``convoy.dev/previous-images`` annotation).

        With ``only_if_run_id``, a workload whose ``convoy.dev/run-id`` annotation
        names another run is left alone (status ``skipped``, the reason in
        ``message``): a later run's rollout must not be flipped back. ``run_id``
        counts as a match too, because an earlier try of this same revert may
        already have patched the workload back and the retry still has to wait
        for that rollout. ``progress`` is as for :meth:`apply`.
        """
        if only_if_run_id is not None or not target.containers:
            obj = self._get(target.ref)
            if only_if_run_id is not None:
                skipped = self._skip_unless_changed_by(target, obj, only_if_run_id, run_id, dry_run)
                if skipped is not None:
                    return skipped
        if not target.containers:
            raw = (obj["metadata"].get("annotations") or {}).get(PREVIOUS_IMAGES)
            if not raw:
                raise NothingToRevert(
                    f"{target.ref} has no {PREVIOUS_IMAGES} annotation and no images were given",
                    namespace=target.namespace,
                    kind=target.kind,
                    name=target.name,
                )
            target = Target(target.namespace, target.kind, target.name, json.loads(raw))
        return self._set_images(
            "revert", target, deadline_seconds=deadline_seconds, dry_run=dry_run, run_id=run_id,
            progress=progress,
        )  # fmt: skip

    def status(self, ref: WorkloadRef | Target) -> RolloutResult:
        """Where the workload's rollout stands now (one GET)."""
        ref = ref.ref if isinstance(ref, Target) else ref
        obj = self._get(ref)
        state = judge(ref.kind, obj)
        annotations = obj["metadata"].get("annotations") or {}
        return RolloutResult(
            action="status",
            namespace=ref.namespace,
            kind=ref.kind,
            name=ref.name,
            changed=False,
            dry_run=False,
            previous_images=json.loads(annotations.get(PREVIOUS_IMAGES) or "{}"),
            images=container_images(obj),
            status="complete" if state.done else ("failed" if state.failed else "progressing"),
            ready_seconds=0.0,
            replicas=state.replicas(),
            run_id=annotations.get(RUN_ID),
            message=state.message,
        )

    # ----------------------------------------------------------------- helpers

    def _skip_unless_changed_by(
        self,
        target: Target,
        obj: Mapping[str, Any],
        wanted: str,
        own: str | None,
        dry_run: bool,
    ) -> RolloutResult | None:
        """The ``skipped`` result when ``obj`` was last changed by neither run, else ``None``."""
        found = (obj["metadata"].get("annotations") or {}).get(RUN_ID)
        if found == wanted:
            return None
        if own and found == own:
            self.log(f"{target.name}: already patched back by this run; finishing the revert")
            return None
        reason = (
            f"not changed by {wanted}: {target.kind}/{target.name} was last changed by run "
            f"{found or '(none)'}"
        )
        self.log(f"{target.name}: {reason}; not reverting it")
        state = judge(target.kind, obj)
        return RolloutResult(
            action="revert",
            namespace=target.namespace,
            kind=target.kind,
            name=target.name,
            changed=False,
            dry_run=dry_run,
            previous_images={},
            images=container_images(obj),
            status="skipped",
            ready_seconds=0.0,
            replicas=state.replicas(),
            run_id=own,
            message=reason,
        )

    def _get(self, ref: WorkloadRef) -> dict[str, Any]:
        try:
            return self.io.get(ref)
        except NotFound:
            raise WorkloadNotFound(ref.namespace, ref.kind, ref.name) from None

    def _set_images(
        self,
        action: Action,
        target: Target,
        *,
        deadline_seconds: float,
        dry_run: bool,
        run_id: str | None,
        progress: ProgressSink | None = None,
    ) -> RolloutResult:
        ref = target.ref
        started = self._clock()
        deadline_at = started + deadline_seconds
        conflicts = 0
        while True:
            obj = self._get(ref)
            current = container_images(obj)
            missing = [c for c in target.containers if c not in current]
            if missing:
                raise ContainerNotFound(ref.kind, ref.name, missing, sorted(current))
            previous = {c: current[c] for c in target.containers}
            changes = {c: i for c, i in target.containers.items() if current[c] != i}
            if not changes:
                state = judge(ref.kind, obj)
                if state.done or dry_run:
                    self.log(f"{ref.name}: images already set ({state.message})")
                    return self._result(
                        action, target, obj, state, False, dry_run, previous,
                        "dry-run" if dry_run else "noop", started, run_id,
                    )  # fmt: skip
                self.log(f"{ref.name}: images already set, waiting for the rollout to finish")
                break
            body = self._patch_body(action, obj, previous, changes, run_id)
            self.log(
                f"{ref.name}: {'dry-run ' if dry_run else ''}{action} "
                + ", ".join(f"{c}: {current[c]} -> {i}" for c, i in changes.items())
            )
            try:
                patched = self.io.patch(ref, body, dry_run=dry_run)
            except NotFound:
                raise WorkloadNotFound(ref.namespace, ref.kind, ref.name) from None
            except Conflict as exc:
                conflicts += 1
                if conflicts >= self.retry.conflict_attempts:
                    raise ConflictRetriesExhausted(
                        f"{ref}: {conflicts} PATCH attempts hit 409 Conflict: {exc}",
                        namespace=ref.namespace, kind=ref.kind, name=ref.name, attempts=conflicts,
                    ) from None  # fmt: skip
                delay = self.retry.delay(conflicts) * random.uniform(0.5, 1.0)
                self.log(f"{ref.name}: conflict (attempt {conflicts}), re-reading in {delay:.2f}s")
                self._sleep(delay)
                continue
            if dry_run:
                state = judge(ref.kind, patched)
                return self._result(
                    action, target, patched, state, False, True, previous, "dry-run",
                    started, run_id,
                )  # fmt: skip
            changed = True
            break
        else:  # pragma: no cover - loop only exits by break/return
            raise AssertionError
        if not changes:
            changed = False
        state, final = self._wait(target, deadline_at, progress)
        return self._result(
            action, target, final, state, changed, False, previous, "complete", started, run_id
        )

    def _patch_body(
        self,
        action: Action,
        obj: Mapping[str, Any],
        previous: Mapping[str, str],
        changes: Mapping[str, str],
        run_id: str | None,
    ) -> dict[str, Any]:
        annotations: dict[str, str] = {}
        if action == "apply":
            annotations[PREVIOUS_IMAGES] = json.dumps(dict(previous), sort_keys=True)
        else:
            annotations[REVERTED_FROM] = json.dumps(dict(previous), sort_keys=True)
        annotations[IMAGES] = json.dumps({**previous, **changes}, sort_keys=True)
        if run_id:
            annotations[RUN_ID] = run_id
        spec: dict[str, Any] = {
            "template": {
                "spec": {"containers": [{"name": c, "image": i} for c, i in changes.items()]}
            }
        }
        if action == "revert":
            # a canary left the workload paused or partitioned: the revert undoes that too
            from convoy.rollout.canary import revert_spec

            spec.update(revert_spec(str(obj.get("kind") or ""), obj))
        return {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": annotations,
            },
            "spec": spec,
        }

    def _result(
        self,
        action: Action,
        target: Target,
        obj: Mapping[str, Any],
        state: RolloutState,
        changed: bool,
        dry_run: bool,
        previous: Mapping[str, str],
        status: str,
        started: float,
        run_id: str | None,
    ) -> RolloutResult:
        images = container_images(obj)
        return RolloutResult(
            action=action,
            namespace=target.namespace,
            kind=target.kind,
            name=target.name,
            changed=changed,
            dry_run=dry_run,
            previous_images=dict(previous),
            images={c: images[c] for c in target.containers if c in images},
            status=status,
            ready_seconds=self._clock() - started,
            replicas=state.replicas(),
            run_id=run_id,
            message=state.message,
        )

    # -------------------------------------------------------------------- wait

    def _wait(
        self, target: Target, deadline_at: float, sink: ProgressSink | None = None
    ) -> tuple[RolloutState, dict[str, Any]]:
        ref = target.ref
        progress = ProgressLog(
            ref.name, self.log, self.progress_interval, self._clock,
            sink=sink, sink_interval_s=self.progress_sink_interval,
        )  # fmt: skip
        obj, rv = self._list(ref)
        state = judge(ref.kind, obj)
        progress.report(state, force=True, pods=pod_count(obj))
        last_key, last_move = state.progress_key(), self._clock()
        diagnosed, quick_closes = False, 0
        while not state.done:
            if state.failed:
                self._explain(target, obj, state, state.failed)
            now = self._clock()
            if now >= deadline_at:
                self._explain(target, obj, state, "deadline exceeded")
            if not diagnosed and now - last_move >= self.stall_seconds:
                diagnosed = True
                self._explain(target, obj, state, None)
            horizon = deadline_at - now
            if not diagnosed:
                horizon = min(horizon, last_move + self.stall_seconds - now)
            expired, events, opened = False, 0, self._clock()
            for event in self.io.watch(ref, rv, max(horizon, 0.0)):
                events += 1
                etype, eobj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if eobj.get("code") == 410:
                        expired = True
                        break
                    raise ApiUnavailable(
                        f"watch of {ref} failed: {eobj.get('message', eobj)}", path=ref.path()
                    )
                rv = str(eobj.get("metadata", {}).get("resourceVersion", rv))
                if etype == "BOOKMARK":
                    continue
                if etype == "DELETED":
                    raise WorkloadNotFound(ref.namespace, ref.kind, ref.name)
                obj, state = eobj, judge(ref.kind, eobj)
                progress.report(state, force=state.done, pods=pod_count(obj))
                if state.progress_key() != last_key:
                    last_key, last_move, diagnosed = state.progress_key(), self._clock(), False
                if state.done or state.failed:
                    break
            if expired:
                obj, rv = self._list(ref)
                state = judge(ref.kind, obj)
            elif not events and self._clock() - opened < 0.5 and horizon >= 1:
                # closed at once with nothing in it: do not spin re-opening watches
                quick_closes += 1
                self._sleep(self.retry.delay(min(quick_closes, self.retry.attempts)))
            else:
                quick_closes = 0
        progress.finish(state, pod_count(obj))
        return state, obj

    def _list(self, ref: WorkloadRef) -> tuple[dict[str, Any], str]:
        obj, rv = self.io.list_one(ref)
        if obj is None:
            raise WorkloadNotFound(ref.namespace, ref.kind, ref.name)
        return obj, rv

    def _explain(
        self, target: Target, obj: Mapping[str, Any], state: RolloutState, fatal: str | None
    ) -> None:
        """List the workload's pods once; raise the specific failure if one shows.

        With ``fatal`` set (deadline passed / progress deadline exceeded) a
        :class:`DeadlineExceeded` is raised when the pods explain nothing more.
        """
        labels = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self.io.list_pods(target.namespace, selector) if selector else []
        failure = diagnose(pods, target.containers)
        if failure is not None:
            self.log(f"{target.name}: {failure.message}")
            raise failure
        if fatal is None:
            self.log(f"{target.name}: no progress for {self.stall_seconds:g}s; {state.message}")
            return
        reason = not_ready_reason(pods) or state.message
        raise DeadlineExceeded(
            f"{target.ref}: {fatal}: {reason}",
            namespace=target.namespace,
            kind=target.kind,
            name=target.name,
            reason=reason,
            replicas=state.replicas(),
        )
