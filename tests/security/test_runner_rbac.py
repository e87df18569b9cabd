"""Every API call the rollout runner makes is allowed by its rendered Role, and vice versa.

The runner (``RolloutRunner`` with the emulator's ``api_client()``) rolls every
workload kind forward (dry run, then for real), reverts it (from explicit images
and from the ``convoy.dev/previous-images`` annotation), reads its status, and
fails one rollout (crashloop) so that it lists pods to explain the failure. Each
request in the emulator's log is turned into the attributes the real API server
authorizes (``RequestInfo``: verb, API group, resource, namespace, name) and
checked against the Role from :func:`convoy.rollout.rbac.render_rbac`, with the
RBAC authorizer's matching rules (verbs, apiGroups, resources, resourceNames).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from convoy.emulator.cluster import RequestRecord
from convoy.policy import load_policy
from convoy.rollout.rbac import render_rbac

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: The verbs that read; the runner's only write is ``patch`` of its workloads.
READ_VERBS = {"get", "list", "watch"}


@dataclass(frozen=True)
class Attributes:
    """What the API server's authorizer sees for one request."""

    verb: str
    api_group: str
    resource: str
    namespace: str
    name: str

    def __str__(self) -> str:
        group = self.api_group or "core"
        where = f"ns={self.namespace or '<cluster>'}"
        return f"{self.verb} {group}/{self.resource} {where} name={self.name or '<none>'}"


def request_attributes(record: RequestRecord) -> Attributes:
    """Map a request like the API server's RequestInfoResolver (resource requests only)."""
    parts = [p for p in record.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        raise AssertionError(f"non-resource request {record.method} {record.path}")
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
        if not rest:  # GET /api/v1/namespaces/<ns> is the namespace object itself
            rest = ["namespaces", namespace]
            namespace = ""
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    watch = record.watch or record.query.get("watch") in ("true", "1")
    method = record.method
    if method == "GET":
        verb = "get" if name else ("watch" if watch else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
    if verb in ("list", "watch") and not name:
        # The API server takes the name from a metadata.name field selector.
        for term in record.query.get("fieldSelector", "").split(","):
            key, sep, value = term.partition("=")
            if sep and key.strip() == "metadata.name" and not value.startswith("="):
                name = value.strip()
    return Attributes(verb, group, resource, namespace, name)


def rule_allows(rule: Mapping[str, Any], a: Attributes) -> bool:
    """The RBAC authorizer's ``RuleAllows`` for a resource request."""

    def has(values: Iterable[str], wanted: str) -> bool:
        values = list(values)
        return "*" in values or wanted in values

    if not has(rule.get("verbs", []), a.verb):
        return False
    if not has(rule.get("apiGroups", []), a.api_group):
        return False
    if not has(rule.get("resources", []), a.resource):
        return False
    names = rule.get("resourceNames") or []
    return not names or a.name in names


def role_allows(role: Mapping[str, Any], a: Attributes) -> bool:
    if a.namespace != role["metadata"]["namespace"]:
        return False  # a Role (bound by a RoleBinding) grants in its own namespace only
    return any(rule_allows(rule, a) for rule in role["rules"])


def role_grants(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """Every (verb, apiGroup, resource) the Role grants."""
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


# --------------------------------------------------------------------------- the run


def _policy(tmp_path: Path) -> Any:
    data = yaml.safe_load((REPO / "dags" / "policies" / "demo.yaml").read_text())
    data.pop("datastores", None)  # only the Kubernetes side is under test here
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_policy(path).policy


@pytest.fixture(scope="module")
def run() -> Any:
    """The policy, its Role and the request log of a full rollout + revert + failure."""
    import tempfile

    from convoy.emulator import EmulatedCluster
    from convoy.rollout import CrashLooping, RolloutRunner, Target

    policy = _policy(Path(tempfile.mkdtemp(prefix="convoy-rbac-")))
    kinds = {s.workload.kind for s in policy.services}
    assert kinds == {"Deployment", "StatefulSet", "DaemonSet"}
    role = next(o for o in render_rbac(policy) if o["kind"] == "Role")
    ns = policy.kubernetes.namespace
    with EmulatedCluster(tick_seconds=0.02) as cluster:
        seeded = cluster.seed_from_policy(policy, previous_tag="2.3.0", replicas=2)
        runner = RolloutRunner(cluster.api_client(), log=lambda _: None, stall_seconds=1.0)
        failed = []
        for svc in policy.services:
            target = Target(ns, svc.workload.kind, svc.workload.name, dict(svc.containers))
            dry = runner.apply(target, deadline_seconds=30, dry_run=True)
            assert dry.status == "dry-run"
            try:
                runner.apply(target, deadline_seconds=30, run_id="rbac-test")
            except CrashLooping:
                failed.append(svc.name)
            runner.status(target)
            if svc.name == "redis":  # revert from the annotation the runner wrote
                bare = Target(ns, svc.workload.kind, svc.workload.name)
                runner.revert(bare, deadline_seconds=30, dry_run=True)
                # as in a manual rollback: only if that run changed it last
                manual = {"run_id": "rbac-undo", "only_if_run_id": "rbac-test"}
                assert runner.revert(bare, deadline_seconds=30, **manual).changed
                skipped = runner.revert(bare, deadline_seconds=30, only_if_run_id="other")
                assert skipped.status == "skipped"
            else:
                back = Target(ns, svc.workload.kind, svc.workload.name, seeded[svc.name])
                runner.revert(back, deadline_seconds=30)
        requests = list(cluster.requests)
    assert failed == ["checkout"]  # the crashloop path, which lists pods, ran
    return policy, role, requests


def test_the_run_covers_every_kind_and_call_type(run: Any) -> None:
    _, _, requests = run
    attrs = {request_attributes(r) for r in requests}
    assert {a.resource for a in attrs} == {"deployments", "statefulsets", "daemonsets", "pods"}
    assert {a.verb for a in attrs} == {"get", "list", "watch", "patch"}
    assert any(r.method == "PATCH" and r.query.get("dryRun") == "All" for r in requests)


def test_every_call_is_allowed_by_the_role(run: Any) -> None:
    _, role, requests = run
    denied = sorted({str(a) for a in map(request_attributes, requests) if not role_allows(role, a)})
    assert denied == []


def test_calls_are_namespaced_and_name_scoped(run: Any) -> None:
    policy, _, requests = run
    workloads = {s.workload.name for s in policy.services}
    for a in map(request_attributes, requests):
        assert a.namespace == policy.kubernetes.namespace, a
        if a.resource != "pods":
            assert a.name in workloads, a  # list/watch of workloads always by name
        assert a.verb in READ_VERBS | {"patch"}, a
        if a.verb == "patch":
            assert a.api_group == "apps"
            assert a.resource in {
                "deployments",
                "statefulsets",
                "daemonsets",
            }


def test_the_role_denies_what_the_runner_must_not_do(run: Any) -> None:
    policy, role, _ = run
    ns = policy.kubernetes.namespace
    for a in (
        Attributes("list", "apps", "deployments", ns, ""),  # no name field selector
        Attributes("patch", "apps", "deployments", ns, "not-in-the-policy"),
        Attributes("get", "apps", "deployments", "kube-system", "currencyservice"),
        Attributes("delete", "apps", "deployments", ns, "currencyservice"),
        Attributes("update", "apps", "deployments", ns, "currencyservice"),
        Attributes("create", "", "pods", ns, ""),
        Attributes("create", "", "pods/exec", ns, "x"),
        Attributes("get", "", "secrets", ns, "x"),
        Attributes("list", "", "configmaps", ns, ""),
        Attributes("get", "", "pods", "", ""),  # cluster-wide
    ):
        assert not role_allows(role, a), a


def test_role_is_namespace_scoped_only(run: Any) -> None:
    policy, _, _ = run
    kinds = [o["kind"] for o in render_rbac(policy)]
    assert sorted(kinds) == ["Role", "RoleBinding", "ServiceAccount"]
    for obj in render_rbac(policy):
        assert obj["metadata"]["namespace"] == policy.kubernetes.namespace


def _unused(run: Any) -> set[tuple[str, str, str]]:
    _, role, requests = run
    used = {(a.verb, a.api_group, a.resource) for a in map(request_attributes, requests)}
    return role_grants(role) - used


def test_role_grants_nothing_the_runner_does_not_use(run: Any) -> None:
    assert _unused(run) == set()


@pytest.mark.parametrize(
    ("method", "path", "query", "watch", "expected"),
    [
        ("GET", "/apis/apps/v1/namespaces/shop/deployments/cart", {}, False,
         Attributes("get", "apps", "deployments", "shop", "cart")),
        ("GET", "/apis/apps/v1/namespaces/shop/deployments",
         {"fieldSelector": "metadata.name=cart"}, False,
         Attributes("list", "apps", "deployments", "shop", "cart")),
        ("GET", "/apis/apps/v1/namespaces/shop/statefulsets",
         {"watch": "true", "fieldSelector": "metadata.name=redis"}, True,
         Attributes("watch", "apps", "statefulsets", "shop", "redis")),
        ("PATCH", "/apis/apps/v1/namespaces/shop/daemonsets/agent", {"dryRun": "All"}, False,
         Attributes("patch", "apps", "daemonsets", "shop", "agent")),
        ("GET", "/api/v1/namespaces/shop/pods", {"labelSelector": "app=cart"}, False,
         Attributes("list", "", "pods", "shop", "")),
        ("GET", "/api/v1/namespaces/shop/pods/p1/log", {}, False,
         Attributes("get", "", "pods/log", "shop", "p1")),
        ("GET", "/api/v1/pods", {}, False, Attributes("list", "", "pods", "", "")),
    ],
)  # fmt: skip
def test_request_attributes_like_the_api_server(
    method: str, path: str, query: dict[str, str], watch: bool, expected: Attributes
) -> None:
    assert request_attributes(RequestRecord(method, path, query, 200, watch)) == expected


class _Fixed:
    """A metrics provider answering one number (the canary's analysis step)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def measure(self, query: str) -> float | None:
        return self.value


def test_canary_steps_need_nothing_beyond_the_role(tmp_path: Path) -> None:
    """Pause, partition, their revert and the new-pod count: every call allowed by the Role."""
    from convoy.emulator import EmulatedCluster
    from convoy.rollout import RolloutRunner, Target
    from convoy.rollout.analysis import AnalysisFailed, AnalysisSpec, Analyzer
    from convoy.rollout.canary import VerifiedRollout

    policy = _policy(tmp_path)
    role = next(o for o in render_rbac(policy) if o["kind"] == "Role")
    ns = policy.kubernetes.namespace
    spec = AnalysisSpec(name="errors", provider="fixed", conn_id="c", query="up", min=None,
                        max=0.05, interval_s=0.0, count=1)  # fmt: skip
    steps = [{"pods": 1}, {"analysis": "errors"}, {"pods": 2}]
    with EmulatedCluster(tick_seconds=0.1) as cluster:
        cluster.seed_from_policy(policy, previous_tag="2.3.0", replicas=3)
        runner = RolloutRunner(cluster.api_client(), log=lambda _: None, stall_seconds=1.0)
        for value, name in ((0.0, "cart"), (0.5, "redis")):  # passes / fails at step 2
            svc = next(s for s in policy.services if s.name == name)
            target = Target(ns, svc.workload.kind, svc.workload.name, dict(svc.containers))
            analyzer = Analyzer({("fixed", "c"): _Fixed(value)}, log=lambda _: None)
            verified = VerifiedRollout(runner, analyzer)
            try:
                verified.apply(target, service=name, canary=steps, analyses=[spec],
                               templates={"errors": spec}, deadline_seconds=30)  # fmt: skip
            except AnalysisFailed:
                assert name == "redis"
            bare = Target(ns, svc.workload.kind, svc.workload.name)
            runner.revert(bare, deadline_seconds=30)
        requests = list(cluster.requests)
    patches = [r for r in requests if r.method == "PATCH"]
    assert len(patches) >= 5  # images + pause/partition + resume, and the reverts
    denied = sorted({str(a) for a in map(request_attributes, requests) if not role_allows(role, a)})
    assert denied == []
