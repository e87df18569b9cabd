"""Verified rollouts: canary steps on Kubernetes' own primitives, analyses in between.

- **StatefulSet**: ``spec.updateStrategy.rollingUpdate.partition``. A step
  ``pods: N`` sets the partition to ``replicas - N`` (the controller updates
  the highest ordinals first) and waits like ``kubectl rollout status`` does
  for a partitioned update; the end sets the partition back to what it was.
- **Deployment**: ``spec.paused``. A step ``pods: N`` lets the controller run
  until ``N`` pods of the new ReplicaSet exist, pauses the Deployment and waits
  until they are ready; the next step (or the end) resumes it. With the
  default ``maxSurge``/``maxUnavailable`` the controller adds one new pod at a
  time, so the pause lands on N; a larger surge can overshoot, and the step
  record says how many pods were really updated.
- DaemonSets have neither; they get analyses after their rollout only (the
  policy loader refuses a DaemonSet canary).

Traffic-weighted steps (``setWeight: 20``) are not offered: splitting requests
by percentage needs a service mesh or an ingress controller in front of the
pods; with plain Services, traffic follows the number of ready pods, which is
what ``pods: N`` controls.

A failed analysis raises :class:`~convoy.rollout.analysis.AnalysisFailed` at
once and leaves the workload as it is (paused / partitioned): the rollback's
revert restores the images and, from the ``convoy.dev/canary-previous``
annotation, ``paused`` and ``partition`` (:func:`revert_spec`).

An inconclusive analysis raises
:class:`~convoy.rollout.analysis.AnalysisInconclusive` the same way, and
:meth:`VerifiedRollout.checkpoint` then says where the rollout stopped. When a
human accepts the analysis (the policy's approval gate), ``apply(...,
resume=checkpoint)`` goes on from there: the canary state is in the cluster
(the paused Deployment or the partition), so the steps already done are not
done again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from convoy.observe.progress import ProgressSink
from convoy.policy.analysis import query_values, seconds
from convoy.rollout.analysis import AnalysisRun, AnalysisSpec, Analyzer, require
from convoy.rollout.api import Conflict, WorkloadRef
from convoy.rollout.errors import (
    ChangedWhileWaiting,
    ConflictRetriesExhausted,
    DeadlineExceeded,
)
from convoy.rollout.runner import RolloutResult, RolloutRunner, Target
from convoy.rollout.status import container_images, diagnose, judge, not_ready_reason

#: JSON ``{"paused": bool}`` / ``{"partition": int}`` as the workload had it before a canary.
CANARY_PREVIOUS = "convoy.dev/canary-previous"
POLL_SECONDS = 0.5


def revert_spec(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Spec fields a revert sets besides the images: undo a canary's pause or partition."""
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(CANARY_PREVIOUS)
    spec = obj.get("spec", {})
    if kind == "Deployment" and (raw or spec.get("paused")):
        previous = _loads(raw)
        return {"paused": bool(previous.get("paused", False))}
    if kind == "StatefulSet" and raw:
        previous = _loads(raw)
        return {
            "updateStrategy": {"rollingUpdate": {"partition": int(previous.get("partition") or 0)}}
        }
    return {}


def _loads(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Checkpoint:
    """Where a verified rollout stopped on an inconclusive analysis (JSON round trip).

    ``stage`` ``canary``: the analysis of canary step ``index`` (1-based);
    ``analysis``: ``analyses[index]`` after the rollout, whose ``result`` it
    carries (the revert needs its ``previousImages``). ``steps`` and ``runs``
    are the canary step records and the analyses so far.
    """

    stage: str
    index: int
    previous: Mapping[str, str] = field(default_factory=dict)
    result: Mapping[str, Any] | None = None
    steps: Sequence[Mapping[str, Any]] = ()
    runs: Sequence[Mapping[str, Any]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "index": self.index,
            "previous": dict(self.previous),
            "result": None if self.result is None else dict(self.result),
            "steps": [dict(s) for s in self.steps],
            "runs": [dict(r) for r in self.runs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        result = data.get("result")
        return cls(
            stage=str(data["stage"]),
            index=int(data["index"]),
            previous={str(k): str(v) for k, v in dict(data.get("previous") or {}).items()},
            result=dict(result) if isinstance(result, Mapping) else None,
            steps=[dict(s) for s in data.get("steps") or ()],
            runs=[dict(r) for r in data.get("runs") or ()],
        )


@dataclass
class VerifiedResult:
    """The rollout result plus every analysis and (for a canary) every step."""

    rollout: RolloutResult
    analyses: list[AnalysisRun] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = self.rollout.to_dict()
        data["analysis"] = [a.to_dict() for a in self.analyses]
        if self.steps:
            data["canary"] = list(self.steps)
        return data


class VerifiedRollout:
    """Apply a target through canary steps and analyses (one workload)."""

    def __init__(
        self,
        runner: RolloutRunner,
        analyzer: Analyzer,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.runner = runner
        self.analyzer = analyzer
        self.poll_seconds = poll_seconds
        self.log = runner.log
        self.steps: list[dict[str, Any]] = []
        # Where the analysis being run sits, and what a resume needs besides the cluster.
        self._at: tuple[str, int] | None = None
        self._previous: dict[str, str] = {}
        self._rolled_out: RolloutResult | None = None

    def checkpoint(self) -> Checkpoint | None:
        """Where :meth:`apply` stopped on the analysis it raised for (``None``: not in one)."""
        if self._at is None:
            return None
        stage, index = self._at
        return Checkpoint(
            stage=stage,
            index=index,
            previous=dict(self._previous),
            result=None if self._rolled_out is None else self._rolled_out.to_dict(),
            steps=[dict(s) for s in self.steps],
            runs=[r.to_dict() for r in self.analyzer.runs],
        )

    # ------------------------------------------------------------------ public

    def apply(
        self,
        target: Target,
        *,
        service: str,
        canary: Sequence[Mapping[str, Any]],
        analyses: Sequence[AnalysisSpec],
        templates: Mapping[str, AnalysisSpec],
        deadline_seconds: float,
        dry_run: bool = False,
        run_id: str | None = None,
        progress: ProgressSink | None = None,
        resume: Checkpoint | None = None,
    ) -> VerifiedResult:
        """Roll ``target`` out (through ``canary`` steps), then run ``analyses``.

        Raises :class:`AnalysisFailed` / :class:`AnalysisInconclusive` (after
        recording the runs in ``self.analyzer.runs``) or any rollout error.
        ``resume``: the :meth:`checkpoint` of an earlier call whose analysis
        was accepted; the rollout goes on after it (the next canary step, or
        the next analysis), with its steps and runs.
        """
        deadline_at = self.runner._clock() + deadline_seconds
        if resume is not None and not dry_run:
            return self._resume(target, service, canary, analyses, templates, deadline_at,
                                run_id, progress, resume)  # fmt: skip
        if dry_run:
            result = self.runner.apply(target, deadline_seconds=deadline_seconds, dry_run=True,
                                       run_id=run_id)  # fmt: skip
            names = [str(s["analysis"]) for s in canary if "analysis" in s]
            specs = [templates[n] for n in names if n in templates] + list(analyses)
            values = self._values(service, target, self.runner._get(target.ref))
            seen: set[str] = set()
            for spec in specs:
                if spec.name not in seen:
                    seen.add(spec.name)
                    self.analyzer.run(spec, values, service=service, where="dry run", dry_run=True)
            return VerifiedResult(result, list(self.analyzer.runs))
        if canary and target.kind in ("Deployment", "StatefulSet"):
            result = self._canary(target, service, canary, templates, deadline_at, run_id, progress)
        else:
            result = self.runner.apply(target, deadline_seconds=deadline_seconds, run_id=run_id,
                                       progress=progress)  # fmt: skip
        return self._after(target, service, analyses, result, 0)

    def _after(
        self,
        target: Target,
        service: str,
        analyses: Sequence[AnalysisSpec],
        result: RolloutResult,
        start: int,
    ) -> VerifiedResult:
        """The analyses after the rollout, from ``analyses[start]`` on."""
        self._rolled_out = result
        if analyses[start:]:
            obj = self.runner._get(target.ref)
            values = self._values(service, target, obj)
            for index, spec in enumerate(analyses):
                if index < start:
                    continue
                self._at = ("analysis", index)
                run = self.analyzer.run(spec, values, service=service, where="after rollout")
                require(run, self.analyzer.runs)
        self._at = None
        return VerifiedResult(result, list(self.analyzer.runs), list(self.steps))

    def _resume(
        self,
        target: Target,
        service: str,
        canary: Sequence[Mapping[str, Any]],
        analyses: Sequence[AnalysisSpec],
        templates: Mapping[str, AnalysisSpec],
        deadline_at: float,
        run_id: str | None,
        progress: ProgressSink | None,
        resume: Checkpoint,
    ) -> VerifiedResult:
        self.steps = [dict(s) for s in resume.steps]
        self.analyzer.runs = [AnalysisRun.from_dict(r) for r in resume.runs]
        self._previous = dict(resume.previous)
        if resume.stage == "analysis":
            if resume.result is None:
                raise ValueError("a checkpoint after the rollout carries its result")
            self.log(f"{target.name}: analysis accepted; going on after rollout analysis "
                     f"{resume.index + 1}")  # fmt: skip
            result = RolloutResult.from_dict(resume.result)
            return self._after(target, service, analyses, result, resume.index + 1)
        self.log(f"{target.name}: analysis accepted; going on at canary step {resume.index + 1}")
        result = self._canary(target, service, canary, templates, deadline_at, run_id, progress,
                              after=resume.index)  # fmt: skip
        return self._after(target, service, analyses, result, 0)

    # ----------------------------------------------------------------- canary

    def _canary(
        self,
        target: Target,
        service: str,
        canary: Sequence[Mapping[str, Any]],
        templates: Mapping[str, AnalysisSpec],
        deadline_at: float,
        run_id: str | None,
        progress: ProgressSink | None,
        *,
        after: int = 0,
    ) -> RolloutResult:
        """The canary steps after step ``after`` (0: all), then the rest of the rollout."""
        ref = target.ref
        started = self.runner._clock()
        obj = self.runner._get(ref)
        current = container_images(obj)
        kind = ref.kind
        desired = int(obj.get("spec", {}).get("replicas", 1))
        # A resumed canary has patched the images already when a pods step came before.
        patched_images = any("pods" in s for s in canary[:after])
        if patched_images:
            if not all(current.get(c) == i for c, i in target.containers.items()):
                raise ChangedWhileWaiting(str(ref), dict(target.containers), dict(current))
            previous = dict(self._previous)
            annotations = obj.get("metadata", {}).get("annotations") or {}
            before = _loads(annotations.get(CANARY_PREVIOUS)) or self._before(kind, obj)
        else:
            previous = {c: current.get(c, "") for c in target.containers}
            if all(current.get(c) == i for c, i in target.containers.items()):
                # Already set (a retried task, or nothing to change): no canary, finish the rollout.
                self.log(
                    f"{ref.name}: images already set; finishing the rollout without canary steps"
                )
                state, final = self._finish(target, obj, deadline_at, progress)
                return self._result(target, final, state, False, previous, started, run_id)
            before = self._before(kind, obj)
        self._previous = dict(previous)
        for index, step in enumerate(canary, start=1):
            if index <= after:
                continue
            if "pods" in step:
                pods = min(int(step["pods"]), desired)
                if not patched_images:
                    obj = self._patch(ref, self._first(target, previous, before, pods, run_id),
                                      optimistic=True)  # fmt: skip
                    patched_images = True
                elif kind == "StatefulSet":
                    obj = self._patch(ref, _partition(desired - pods))
                else:
                    obj = self._patch(ref, {"spec": {"paused": False}})
                obj = self._hold(target, pods, deadline_at)
                self._record(index, step, target, obj, pods)
            elif "pause" in step:
                wait = seconds(str(step["pause"]))
                self.log(f"{ref.name}: canary step {index}: pause {step['pause']}")
                self.runner._sleep(wait)
                self._record(index, step, target, None, None)
            elif "analysis" in step:
                spec = templates[str(step["analysis"])]
                obj = self.runner._get(ref)
                updated = judge(kind, obj).updated
                where = f"canary step {index} ({updated}/{desired} pods updated)"
                self._at = ("canary", index)
                run = self.analyzer.run(spec, self._values(service, target, obj), service=service,
                                        where=where)  # fmt: skip
                self._record(index, step, target, None, None, analysis=run.phase)
                require(run, self.analyzer.runs)
                self._at = None
        if not patched_images:  # only pauses and analyses: roll everything at the end
            obj = self._patch(ref, self._first(target, previous, before, None, run_id),
                              optimistic=True)  # fmt: skip
        state, final = self._finish(target, obj, deadline_at, progress)
        self.log(f"{ref.name}: canary complete ({state.message})")
        return self._result(target, final, state, True, previous, started, run_id)

    @staticmethod
    def _before(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        spec = obj.get("spec", {})
        if kind == "Deployment":
            return {"paused": bool(spec.get("paused", False))}
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        return {"partition": int(rolling.get("partition") or 0)}

    def _first(
        self,
        target: Target,
        previous: Mapping[str, str],
        before: Mapping[str, Any],
        pods: int | None,
        run_id: str | None,
    ) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """The first PATCH (images, annotations, pause/partition), built from a fresh GET."""

        def make(obj: Mapping[str, Any]) -> dict[str, Any]:
            return self._first_patch(target.kind, obj, previous, target, before, pods, run_id)

        return make

    def _first_patch(
        self,
        kind: str,
        obj: Mapping[str, Any],
        previous: Mapping[str, str],
        target: Target,
        before: Mapping[str, Any],
        pods: int | None,
        run_id: str | None,
    ) -> dict[str, Any]:
        current = container_images(obj)
        changes = {c: i for c, i in target.containers.items() if current.get(c) != i}
        body = self.runner._patch_body("apply", obj, previous, changes, run_id)
        body["metadata"]["annotations"][CANARY_PREVIOUS] = json.dumps(dict(before), sort_keys=True)
        desired = int(obj.get("spec", {}).get("replicas", 1))
        if kind == "StatefulSet":
            partition = int(before.get("partition") or 0) if pods is None else desired - pods
            body["spec"].update(_partition(partition)["spec"])
        else:
            body["spec"]["paused"] = False
        changed = ", ".join(f"{c}: {current.get(c)} -> {i}" for c, i in changes.items())
        self.log(
            f"{target.name}: canary apply {changed}"
            + (f" ({pods} of {desired} pods first)" if pods is not None else "")
        )
        return body

    def _patch(self, ref: WorkloadRef, make: Any, *, optimistic: bool = False) -> dict[str, Any]:
        """PATCH ``make(obj)``; ``optimistic``: with the GET's resourceVersion, re-read on 409.

        Pause, resume and partition patches set one field whatever the rest of
        the object holds, so they need no resourceVersion (status updates would
        make them conflict all the time).
        """
        for attempt in range(1, self.runner.retry.conflict_attempts + 1):
            if callable(make) or optimistic:
                obj = self.runner._get(ref)
                body = make(obj) if callable(make) else json.loads(json.dumps(make))
            else:
                # One field whatever the rest holds: no GET first, so a pause lands sooner.
                obj, body = {}, json.loads(json.dumps(make))
            if optimistic:
                body.setdefault("metadata", {})["resourceVersion"] = obj["metadata"][
                    "resourceVersion"
                ]
            else:
                body.get("metadata", {}).pop("resourceVersion", None)
            try:
                return self.runner.io.patch(ref, body)
            except Conflict:
                # Someone changed the object since the GET: read it again and rebuild the body.
                self.runner._sleep(self.runner.retry.delay(attempt) * random.uniform(0.5, 1.0))
        raise ConflictRetriesExhausted(
            f"{ref}: {self.runner.retry.conflict_attempts} PATCH attempts hit 409 Conflict",
            namespace=ref.namespace, kind=ref.kind, name=ref.name,
            attempts=self.runner.retry.conflict_attempts,
        )  # fmt: skip

    def _hold(self, target: Target, pods: int, deadline_at: float) -> dict[str, Any]:
        """Wait until ``pods`` pods run the new images and are ready, holding the rest back."""
        ref = target.ref
        if ref.kind == "StatefulSet":
            # judge() completes a partitioned update once the ordinals above it are updated.
            _state, obj = self.runner._wait(target, deadline_at)
            return obj
        paused = False
        obj, rv = self.runner._list(ref)
        while True:
            state = judge(ref.kind, obj)
            if not paused and state.observed and state.updated >= pods:
                obj = self._patch(ref, {"spec": {"paused": True}})
                paused = True
                self.log(f"{ref.name}: paused with {state.updated} new pod(s)")
            if paused:
                break
            if state.failed:
                self.runner._explain(target, obj, state, state.failed)
            if self.runner._clock() >= deadline_at:
                self.runner._explain(target, obj, state, "deadline exceeded")
            for event in self.runner.io.watch(
                ref, rv, min(5.0, max(deadline_at - self.runner._clock(), 0.0))
            ):
                if event.get("type") in ("ADDED", "MODIFIED"):
                    obj = event.get("object") or obj
                    rv = str(obj.get("metadata", {}).get("resourceVersion", rv))
                    if judge(ref.kind, obj).updated >= pods:
                        break
            else:
                obj, rv = self.runner._list(ref)
        return self._ready_new_pods(target, obj, pods, deadline_at)

    def _ready_new_pods(
        self, target: Target, obj: dict[str, Any], pods: int, deadline_at: float
    ) -> dict[str, Any]:
        ref = target.ref
        while True:
            listed = self._pods(target, obj)
            new = [p for p in listed if _runs(p, target.containers)]
            ready = [p for p in new if _ready(p)]
            if len(ready) >= pods:
                self.log(f"{ref.name}: {len(ready)}/{len(listed)} pod(s) ready on the new images")
                return self.runner._get(ref)
            failure = diagnose(listed, target.containers)
            if failure is not None:
                raise failure
            if self.runner._clock() >= deadline_at:
                reason = not_ready_reason(listed) or f"{len(ready)} of {pods} new pods ready"
                raise DeadlineExceeded(
                    f"{ref}: deadline exceeded in a canary step: {reason}",
                    namespace=ref.namespace, kind=ref.kind, name=ref.name, reason=reason,
                    replicas=judge(ref.kind, obj).replicas(),
                )  # fmt: skip
            self.runner._sleep(self.poll_seconds)

    def _finish(
        self,
        target: Target,
        obj: Mapping[str, Any],
        deadline_at: float,
        progress: ProgressSink | None,
    ) -> tuple[Any, dict[str, Any]]:
        """Resume (Deployment) or lower the partition to where it was (StatefulSet); wait."""
        ref = target.ref
        previous = _loads((obj.get("metadata", {}).get("annotations") or {}).get(CANARY_PREVIOUS))
        if ref.kind == "Deployment" and obj.get("spec", {}).get("paused"):
            self._patch(ref, lambda _o: {"spec": {"paused": bool(previous.get("paused", False))}})
        elif ref.kind == "StatefulSet" and previous:
            wanted = int(previous.get("partition") or 0)
            rolling = (obj.get("spec", {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
            if int(rolling.get("partition") or 0) != wanted:
                self._patch(ref, _partition(wanted))
        return self.runner._wait(target, deadline_at, progress)

    # ---------------------------------------------------------------- helpers

    def _pods(self, target: Target, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
        labels = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return self.runner.io.list_pods(target.namespace, selector) if selector else []

    def _record(
        self,
        index: int,
        step: Mapping[str, Any],
        target: Target,
        obj: Mapping[str, Any] | None,
        pods: int | None,
        *,
        analysis: str | None = None,
    ) -> None:
        """What the step left running: pod -> images (for reports and step-by-step tests)."""
        record: dict[str, Any] = {"step": index, **{k: step[k] for k in step}}
        if obj is not None:
            listed = self._pods(target, obj)
            record["pods"] = pods
            record["updated"] = sum(1 for p in listed if _runs(p, target.containers))
            record["images"] = {
                p["metadata"]["name"]: ",".join(
                    c.get("image", "") for c in p.get("spec", {}).get("containers", [])
                )
                for p in sorted(listed, key=lambda p: p["metadata"]["name"])
            }
            self.log(
                f"{target.name}: canary step {index}: {record['updated']} of {len(listed)} pods "
                "on the new images"
            )
        if analysis is not None:
            record["phase"] = analysis
        self.steps.append(record)

    def query_values(self, service: str, target: Target, obj: Mapping[str, Any]) -> dict[str, str]:
        """The template variables of ``service`` (``obj``: its workload as read now)."""
        return self._values(service, target, obj)

    def _values(self, service: str, target: Target, obj: Mapping[str, Any]) -> dict[str, str]:
        return query_values(
            service=service,
            namespace=target.namespace,
            workload=target.name,
            kind=target.kind,
            images=dict(target.containers) or container_images(obj),
            revision=self._revision(target, obj),
        )

    def _revision(self, target: Target, obj: Mapping[str, Any]) -> str:
        if target.kind == "StatefulSet":
            return str((obj.get("status") or {}).get("updateRevision") or "")
        if target.kind != "Deployment":
            return ""
        try:
            listed = self._pods(target, obj)
        except Exception:
            return ""
        for pod in listed:
            if _runs(pod, target.containers):
                return str((pod["metadata"].get("labels") or {}).get("pod-template-hash", ""))
        return ""

    def _result(
        self,
        target: Target,
        obj: Mapping[str, Any],
        state: Any,
        changed: bool,
        previous: Mapping[str, str],
        started: float,
        run_id: str | None,
    ) -> RolloutResult:
        images = container_images(obj)
        return RolloutResult(
            action="apply",
            namespace=target.namespace,
            kind=target.kind,
            name=target.name,
            changed=changed,
            dry_run=False,
            previous_images=dict(previous),
            images={c: images[c] for c in target.containers if c in images},
            status="complete",
            ready_seconds=self.runner._clock() - started,
            replicas=state.replicas(),
            run_id=run_id,
            message=state.message,
        )


def _partition(value: int) -> dict[str, Any]:
    return {"spec": {"updateStrategy": {"rollingUpdate": {"partition": max(value, 0)}}}}


def _runs(pod: Mapping[str, Any], images: Mapping[str, str]) -> bool:
    have = {c["name"]: c.get("image") for c in pod.get("spec", {}).get("containers", [])}
    return all(have.get(c) == i for c, i in images.items())


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


__all__ = [
    "CANARY_PREVIOUS",
    "Checkpoint",
    "VerifiedResult",
    "VerifiedRollout",
    "revert_spec",
]
