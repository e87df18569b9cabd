"""``convoy status`` and the drift check need exactly the Role of ``convoy render rbac --status``.

The emulated API server does not evaluate Roles, so the check is twofold:

- every request that ``convoy status`` and the drift check's task make (the
  emulator's request log, turned into what the real API server authorizes, as
  in ``test_runner_rbac.py``) is allowed by the read-only Role from
  :func:`convoy.rollout.rbac.render_status_rbac`, and the Role grants nothing
  they do not use;
- the emulator then denies (``forbid``) every verb on every resource the Role
  does not grant, and both still read every service: they work with those
  permissions and no others.

It also pins why the Role exists: the runner's Role (lists by name only) denies
the collection LISTs the status check makes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from convoy.emulator.cluster import RequestRecord
from convoy.emulator.store import RESOURCES
from convoy.policy import load_policy
from convoy.rollout.rbac import render_rbac, render_status_rbac

from .test_runner_rbac import REPO, Attributes, request_attributes, role_allows, role_grants

pytestmark = pytest.mark.integration

#: Every verb the API server authorizes on a resource.
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


class _TaskInstance:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, Path]]:
    """The demo policy (every workload kind, no datastores) on a seeded emulated cluster."""
    from convoy.emulator import EmulatedCluster

    data = yaml.safe_load((REPO / "dags" / "policies" / "demo.yaml").read_text())
    data.pop("datastores", None)  # only the Kubernetes side is under test here
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    policy = load_policy(path).policy
    assert {s.workload.kind for s in policy.services} == {"Deployment", "StatefulSet", "DaemonSet"}
    with EmulatedCluster(tick_seconds=0.02) as cluster:
        cluster.seed_from_policy(policy, previous_tag="2.3.0", replicas=2)
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        monkeypatch.setenv(f"AIRFLOW_CONN_{policy.kubernetes.conn_id.upper()}", json.dumps(conn))
        yield policy, cluster, path


def _status_and_drift_check(cluster: Any, path: Path) -> tuple[dict[str, Any], list[RequestRecord]]:
    """``convoy status --json`` and the drift check's task; their report and requests."""
    from convoy.airflow.drift import STATUS_KEY, check
    from convoy.cli import main

    start = len(cluster.requests)
    out, err = io.StringIO(), io.StringIO()
    code = main(["status", str(path), "--json"], out=out, err=err)
    report = json.loads(out.getvalue())
    assert code == 3, err.getvalue()  # pending: seeded with the earlier images, never run
    ti = _TaskInstance()
    assert check(policy_path=str(path), ti=ti) == {"verdict": "pending"}
    assert ti.xcom[STATUS_KEY]["verdict"] == "pending"
    return report, list(cluster.requests[start:])


def _status_role(policy: Any) -> dict[str, Any]:
    role = render_status_rbac(policy)[0]
    assert role["kind"] == "Role"
    return role


def test_every_call_is_allowed_by_the_status_role_and_nothing_more(setup: Any) -> None:
    policy, cluster, path = setup
    role = _status_role(policy)
    report, requests = _status_and_drift_check(cluster, path)
    assert {s["verdict"] for s in report["services"]} == {"pending"}
    attrs = [request_attributes(r) for r in requests]
    ns = policy.kubernetes.namespace
    # one LIST per kind, twice (status, then the drift check), of the whole collection
    assert sorted((a.verb, a.resource, a.namespace, a.name) for a in attrs) == sorted(
        2 * [("list", r, ns, "") for r in ("daemonsets", "deployments", "statefulsets")]
    )
    denied = sorted({str(a) for a in attrs if not role_allows(role, a)})
    assert denied == []
    used = {(a.verb, a.api_group, a.resource) for a in attrs}
    assert role_grants(role) == used


def test_status_works_with_only_the_status_role(setup: Any) -> None:
    """Everything the Role does not grant is forbidden; every service is still read."""
    policy, cluster, path = setup
    granted = {(verb, resource) for verb, _, resource in role_grants(_status_role(policy))}
    for resource in RESOURCES:
        for verb in ALL_VERBS:
            if (verb, resource) not in granted:
                cluster.forbid(verb, resource)
    report, requests = _status_and_drift_check(cluster, path)
    assert [r.status for r in requests] == [200] * len(requests)
    assert all(s["condition"] == "complete" for s in report["services"]), report
    # and the denial is real: without list of one kind, its services are unknown
    cluster.forbid("list", "daemonsets")
    out, err = io.StringIO(), io.StringIO()
    from convoy.cli import main

    assert main(["status", str(path), "--json"], out=out, err=err) == 6
    verdicts = {s["kind"]: s["verdict"] for s in json.loads(out.getvalue())["services"]}
    assert verdicts["DaemonSet"] == "unknown"


def test_the_runners_role_does_not_allow_the_status_check(setup: Any) -> None:
    policy, cluster, path = setup
    runner_role = next(o for o in render_rbac(policy) if o["kind"] == "Role")
    _, requests = _status_and_drift_check(cluster, path)
    attrs = {request_attributes(r) for r in requests}
    assert attrs
    assert not any(role_allows(runner_role, a) for a in attrs)


def test_the_status_role_is_read_only_and_namespaced(setup: Any) -> None:
    policy, _, _ = setup
    role, binding = render_status_rbac(policy)
    ns = policy.kubernetes.namespace
    assert [role["kind"], binding["kind"]] == ["Role", "RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == ns
    for a in (
        Attributes("get", "apps", "deployments", ns, "cartservice"),
        Attributes("watch", "apps", "deployments", ns, ""),
        Attributes("patch", "apps", "deployments", ns, "cartservice"),
        Attributes("list", "", "pods", ns, ""),
        Attributes("get", "", "pods/log", ns, "p1"),
        Attributes("list", "", "secrets", ns, ""),
        Attributes("list", "", "configmaps", ns, ""),
        Attributes("list", "apps", "replicasets", ns, ""),
        Attributes("list", "apps", "deployments", "kube-system", ""),
        Attributes("list", "apps", "deployments", "", ""),  # cluster-wide
    ):
        assert not role_allows(role, a), a
