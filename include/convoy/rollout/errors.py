"""One exception class per way a rollout can fail; all carry JSON-able details."""

from __future__ import annotations

import re
from typing import Any, ClassVar


class RolloutError(Exception):
    """Base of every rollout failure; ``to_dict()`` is what the CLI prints.

    Two class attributes say what the Airflow task does with it
    (:func:`convoy.airflow.retries.is_retriable`, also for a rollout pod whose
    JSON result names the class):

    - ``retriable``: an *apply* step that fails with it is left to Airflow's
      retries. Only for trouble that goes away by itself (the API server);
      the default ``False`` fails the task at once (crash loop, deadline,
      forbidden...), so the rollback starts without waiting for retries that
      would fail the same way.
    - ``retriable_in_revert``: a *revert* step retries by default (RBAC, the API
      server, conflicts can be fixed meanwhile, and the rollback should get
      through); ``False`` for what no retry can change (the workload or container
      is gone, nothing to revert).
    """

    retriable: ClassVar[bool] = False
    retriable_in_revert: ClassVar[bool] = True

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, **self.details}


class WorkloadNotFound(RolloutError):
    """The Deployment/StatefulSet/DaemonSet does not exist in the namespace."""

    retriable_in_revert = False

    def __init__(self, namespace: str, kind: str, name: str) -> None:
        super().__init__(
            f'{kind} "{name}" not found in namespace "{namespace}"',
            namespace=namespace,
            kind=kind,
            name=name,
        )


class ContainerNotFound(RolloutError):
    """The target names a container the workload's pod template does not have."""

    retriable_in_revert = False

    def __init__(self, kind: str, name: str, missing: list[str], existing: list[str]) -> None:
        super().__init__(
            f"{kind} {name!r} has no container(s) {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(map(repr, existing))}",
            kind=kind,
            name=name,
            missing=missing,
            existing=existing,
        )


_FORBIDDEN_RE = re.compile(
    r'cannot (?P<verb>[\w-]+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"'
    r'(?: in the namespace "(?P<namespace>[^"]+)")?'
)
_USER_RE = re.compile(r'User "(?P<user>[^"]+)"')


class Forbidden(RolloutError):
    """The service account lacks an RBAC permission (verb on resource in namespace)."""

    def __init__(
        self, verb: str, resource: str, group: str, namespace: str, user: str, server_message: str
    ) -> None:
        qualified = f"{resource}.{group}" if group else resource
        super().__init__(
            f"forbidden: {user or 'the client'} may not {verb} {qualified} in namespace "
            f'"{namespace}"; grant verb "{verb}" on resource "{resource}" (API group '
            f'"{group}") in a Role there (see `convoy render rbac`)',
            verb=verb,
            resource=resource,
            group=group,
            namespace=namespace,
            user=user,
            serverMessage=server_message,
        )

    @classmethod
    def from_message(
        cls, message: str, *, verb: str, resource: str, group: str, namespace: str
    ) -> Forbidden:
        """Build from a 403 ``Status`` message, falling back to what the caller tried."""
        m = _FORBIDDEN_RE.search(message)
        u = _USER_RE.search(message)
        if m:
            verb, resource, group = m["verb"], m["resource"], m["group"]
            namespace = m["namespace"] or namespace
        return cls(verb, resource, group, namespace, u["user"] if u else "", message)


class PodFailure(RolloutError):
    """Base of failures explained by a pod's container state."""

    def __init__(
        self, summary: str, pod: str, container: str, reason: str, message: str, **extra: Any
    ) -> None:
        super().__init__(
            f"{summary}: pod {pod!r} container {container!r}: {reason}"
            + (f": {message}" if message else ""),
            pod=pod,
            container=container,
            reason=reason,
            podMessage=message,
            **extra,
        )


class ImagePullFailed(PodFailure):
    """A new pod cannot pull its image (ErrImagePull / ImagePullBackOff / InvalidImageName)."""


class CrashLooping(PodFailure):
    """A new pod's container keeps crashing (CrashLoopBackOff)."""


class PodUnschedulable(PodFailure):
    """A new pod cannot be scheduled on any node."""


class DeadlineExceeded(RolloutError):
    """The rollout did not complete before the deadline (or its progress deadline)."""


class ConflictRetriesExhausted(RolloutError):
    """Every PATCH attempt hit a 409 Conflict: something else keeps changing the workload."""


class ApiUnavailable(RolloutError):
    """The API server kept failing (5xx, 429 or connection errors) after the retries."""

    retriable = True


class UnsupportedUpdateStrategy(RolloutError):
    """The workload's update strategy (e.g. OnDelete) never rolls pods by itself."""


class NothingToRevert(RolloutError):
    """Revert was asked without images and the workload has no previous-images annotation."""

    retriable_in_revert = False


class ProviderSecretMissing(RolloutError):
    """A rollout pod found no address for an analysis provider in its Secret."""

    def __init__(self, provider: str, conn_id: str, secret: str, env: str) -> None:
        where = f"Secret {secret!r}" if secret else "no Secret (provider secretRef)"
        super().__init__(
            f"{provider} analyses ({conn_id}): {where} gives no address (key address, env "
            f"{env} of the rollout pod); create the Secret in the policy namespace",
            provider=provider,
            connId=conn_id,
            secret=secret,
        )


class ChangedWhileWaiting(RolloutError):
    """The workload no longer runs the canary's images when the rollout resumes."""

    def __init__(self, workload: str, expected: dict[str, str], found: dict[str, str]) -> None:
        super().__init__(
            f"{workload}: changed while the canary waited for the approval: expected "
            + ", ".join(f"{c}={i}" for c, i in sorted(expected.items()))
            + ", found "
            + ", ".join(f"{c}={found.get(c)}" for c in sorted(expected)),
            workload=workload,
            expected=expected,
            found={c: found.get(c) for c in expected},
        )


__all__ = [
    "ApiUnavailable",
    "ChangedWhileWaiting",
    "ConflictRetriesExhausted",
    "ContainerNotFound",
    "CrashLooping",
    "DeadlineExceeded",
    "Forbidden",
    "ImagePullFailed",
    "NothingToRevert",
    "PodFailure",
    "PodUnschedulable",
    "ProviderSecretMissing",
    "RolloutError",
    "UnsupportedUpdateStrategy",
    "WorkloadNotFound",
]
