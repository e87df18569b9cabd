"""Every Kubernetes manifest under deploy/ is schema-valid and hardened.

- Schema: each object validates against the newest Kubernetes schemas that
  kubernetes-validate ships, in strict mode (unknown fields are errors).
- Hardening: pods run as uid 50000, non-root, read-only root filesystem,
  no capabilities, seccomp RuntimeDefault, no privilege escalation, with
  requests and limits (design.md, "Least privilege").
- RBAC: namespaced only, no wildcards, no escalation verbs, no Secrets.
- Helm values: KubernetesExecutor, no literal secrets, StatsD mappings equal
  to deploy/statsd-mapping.yaml, worker hardening equal to the pod template.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NAMESPACE = "convoy"
AIRFLOW_UID = 50000

# Files under deploy/ that are YAML but not Kubernetes objects.
NOT_MANIFESTS = {DEPLOY / "helm" / "values.yaml", DEPLOY / "statsd-mapping.yaml"}
NOT_MANIFEST_DIRS = {DEPLOY / "dashboards"}
# Objects applied with `kubectl apply -n <policy namespace>`: no namespace of their own.
PER_POLICY_NAMESPACE = DEPLOY / "policy-namespace"

CLUSTER_SCOPED_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PodSecurityPolicy",
}
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# Egress destinations a convoy pod may reach (networkpolicy.yaml header; 9090: Prometheus,
# for the runner pods that measure analyses only).
ALLOWED_EGRESS_PORTS = {53, 443, 6443, 5432, 27017, 8080, 9125, 5000, 9090}

SECRETISH_KEY = re.compile(r"pass(word|wd)?$|secret|token|fernet|api_?key|private_?key", re.I)


def _manifest_files() -> list[Path]:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
    return [
        p
        for p in files
        if p not in NOT_MANIFESTS and not any(d in p.parents for d in NOT_MANIFEST_DIRS)
    ]


def _objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in _manifest_files():
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                rel = path.relative_to(REPO)
                found.append((f"{rel}#{index}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


OBJECTS = _objects()
IDS = [name for name, _ in OBJECTS]
LATEST = kubernetes_validate.latest_version()


def _of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [obj for _, obj in OBJECTS if obj["kind"] in kinds]


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, obj in OBJECTS:
        if obj["kind"] == "Pod":
            yield name, obj["spec"]
        elif obj["kind"] in WORKLOAD_KINDS:
            yield name, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


POD_SPECS = list(_pod_specs())
POD_IDS = [name for name, _ in POD_SPECS]


def _load(relative: str) -> Any:
    return yaml.safe_load((REPO / relative).read_text())


# --- schema -----------------------------------------------------------------------


def test_latest_schema_version_is_used() -> None:
    assert LATEST.startswith("1.37"), LATEST


def test_deploy_has_the_expected_objects() -> None:
    kinds = sorted(obj["kind"] for _, obj in OBJECTS)
    for kind in ("NetworkPolicy", "Pod", "Role", "RoleBinding", "ServiceAccount"):
        assert kind in kinds, kinds


@pytest.mark.parametrize(("name", "obj"), OBJECTS, ids=IDS)
def test_manifest_validates_strictly(name: str, obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, LATEST, strict=True)


def test_strict_validation_rejects_unknown_fields() -> None:
    pod = copy.deepcopy(_of_kind("Pod")[0])
    pod["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, LATEST, strict=True)


@pytest.mark.parametrize(("name", "obj"), OBJECTS, ids=IDS)
def test_objects_are_namespaced_to_convoy(name: str, obj: dict[str, Any]) -> None:
    assert obj["kind"] not in CLUSTER_SCOPED_KINDS, f"{name}: cluster-scoped kind"
    if name.startswith(str(PER_POLICY_NAMESPACE.relative_to(REPO))):
        assert "namespace" not in obj["metadata"], f"{name}: applied with -n, must not pin one"
    else:
        assert obj["metadata"].get("namespace") == NAMESPACE, f"{name}: must be in {NAMESPACE}"


# --- pod hardening ------------------------------------------------------------------


def test_there_are_pod_specs_to_check() -> None:
    assert POD_SPECS


@pytest.mark.parametrize(("name", "spec"), POD_SPECS, ids=POD_IDS)
def test_pod_security_context(name: str, spec: dict[str, Any]) -> None:
    ctx = spec["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == AIRFLOW_UID
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host_namespace), f"{name}: {host_namespace}"


@pytest.mark.parametrize(("name", "spec"), POD_SPECS, ids=POD_IDS)
def test_container_hardening(name: str, spec: dict[str, Any]) -> None:
    for container in spec["containers"] + spec.get("initContainers", []):
        ctx = container["securityContext"]
        label = f"{name}/{container['name']}"
        assert ctx["readOnlyRootFilesystem"] is True, label
        assert ctx["allowPrivilegeEscalation"] is False, label
        assert ctx.get("privileged", False) is False, label
        assert ctx["capabilities"]["drop"] == ["ALL"], label
        assert not ctx["capabilities"].get("add"), label
        assert ctx.get("runAsUser", AIRFLOW_UID) == AIRFLOW_UID, label
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{label}: {kind}"


@pytest.mark.parametrize(("name", "spec"), POD_SPECS, ids=POD_IDS)
def test_writable_paths_are_emptydirs(name: str, spec: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in spec["containers"]:
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        for path in ("/tmp", "/opt/airflow/logs"):
            assert path in mounts, f"{name}: {path} must be a volume (read-only root fs)"
            assert "emptyDir" in volumes[mounts[path]], f"{name}: {path} must be an emptyDir"


# --- RBAC ---------------------------------------------------------------------------


def test_no_cluster_scoped_rbac_anywhere_in_deploy() -> None:
    for path in _manifest_files():
        text = path.read_text()
        assert not re.search(r"^kind:\s*Cluster", text, flags=re.MULTILINE), path


@pytest.mark.parametrize("role", _of_kind("Role"), ids=lambda r: r["metadata"]["name"])
def test_role_rules_have_no_wildcards_or_escalation(role: dict[str, Any]) -> None:
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"
        assert not DANGEROUS_VERBS & set(rule["verbs"]), rule
        assert "secrets" not in rule["resources"], "workers never read Secrets via the API"
        assert "nonResourceURLs" not in rule


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_worker_roles_are_exactly_what_kubernetes_pod_operator_needs() -> None:
    roles = [r for r in _of_kind("Role") if r["metadata"]["name"].startswith("convoy-airflow")]
    assert len(roles) == 2, "one for namespace convoy, one for each policy namespace"
    assert _grants(roles[0]) == _grants(roles[1])
    assert _grants(roles[0]) == {
        ("", "pods"): {"create", "get", "list", "watch", "delete", "patch"},
        ("", "pods/log"): {"get"},
        ("", "pods/exec"): {"create", "get"},
        ("", "events"): {"get", "list"},
    }


def test_role_bindings_bind_namespaced_roles_to_convoy_service_accounts() -> None:
    accounts = {sa["metadata"]["name"] for sa in _of_kind("ServiceAccount")}
    roles = {r["metadata"]["name"] for r in _of_kind("Role")}
    for binding in _of_kind("RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] in roles
        for subject in binding["subjects"]:  # always the worker SA in namespace convoy
            assert subject["kind"] == "ServiceAccount"
            assert subject["namespace"] == NAMESPACE
            assert subject["name"] in accounts


def test_service_accounts_do_not_automount_tokens() -> None:
    for sa in _of_kind("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]


# --- network policy -------------------------------------------------------------------


@pytest.mark.parametrize("policy", _of_kind("NetworkPolicy"), ids=lambda p: p["metadata"]["name"])
def test_network_policy_restricts_ingress_and_egress(policy: dict[str, Any]) -> None:
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert spec["podSelector"]["matchLabels"], "must select specific pods"
    for rule in spec["egress"]:
        assert rule.get("ports"), f"egress without port restriction: {rule}"
        for port in rule["ports"]:
            assert port["port"] in ALLOWED_EGRESS_PORTS, port
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                assert peer["ipBlock"]["cidr"] != "0.0.0.0/0"


def _runner_policies() -> dict[str, dict[str, Any]]:
    return {
        p["metadata"]["name"]: p
        for p in _of_kind("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/managed-by") == "convoy"
    }


def test_runner_pods_get_no_ingress_and_only_api_server_and_dns_egress() -> None:
    runner = _runner_policies()["convoy-runner"]
    assert runner["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "convoy"
    }
    assert runner["spec"]["ingress"] == []
    ports = {p["port"] for rule in runner["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 443, 6443}


def test_only_analysing_runner_pods_reach_the_metrics_provider() -> None:
    """The label convoy sets on verify/analyze pods (convoy.airflow.pods.LABEL_ANALYSIS)."""
    from convoy.airflow.pods import LABEL_ANALYSIS

    policies = _runner_policies()
    assert set(policies) == {"convoy-runner", "convoy-runner-analysis"}
    analysis = policies["convoy-runner-analysis"]["spec"]
    assert analysis["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "convoy",
        LABEL_ANALYSIS: "true",
    }
    assert analysis["ingress"] == []
    (rule,) = analysis["egress"]
    assert [p["port"] for p in rule["ports"]] == [9090]
    (peer,) = rule["to"]
    assert "ipBlock" not in peer  # a selected Prometheus, not an address range
    assert peer["podSelector"]["matchLabels"]


def test_dns_egress_goes_to_kube_dns_only() -> None:
    for policy in _of_kind("NetworkPolicy"):
        for rule in policy["spec"]["egress"]:
            if any(p["port"] == 53 for p in rule["ports"]):
                (peer,) = rule["to"]
                assert peer["namespaceSelector"]["matchLabels"] == {
                    "kubernetes.io/metadata.name": "kube-system"
                }
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_worker_network_policy_selects_the_pod_template_labels() -> None:
    pod = _load("deploy/pod_template.yaml")
    labels = pod["metadata"]["labels"]
    selectors = [p["spec"]["podSelector"]["matchLabels"] for p in _of_kind("NetworkPolicy")]
    assert any(sel.items() <= labels.items() for sel in selectors)


# --- Helm values ------------------------------------------------------------------------

VALUES = _load("deploy/helm/values.yaml")


def _scalars(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _scalars(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _scalars(value, f"{path}[{index}]")
    else:
        yield path, node


def test_values_use_the_kubernetes_executor() -> None:
    assert VALUES["executor"] == "KubernetesExecutor"


def test_values_have_no_literal_secrets() -> None:
    for path, value in _scalars(VALUES):
        key = re.split(r"[.\[]", path)[-1]
        if SECRETISH_KEY.search(key) and not key.lower().endswith(("name", "secretname")):
            assert value in (None, "", False, True), f"{path} looks like an inline secret"
    text = (REPO / "deploy/helm/values.yaml").read_text()
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "credentials in a URI"
    assert not re.search(r"(?im)^\s*[\w.]*pass(word)?\s*:\s*['\"]?\w", text)


def test_values_take_connections_from_a_secret_ref() -> None:
    env_from = yaml.safe_load(VALUES["extraEnvFrom"])
    assert env_from == [{"secretRef": {"name": "convoy-airflow-connections"}}]
    assert VALUES["data"]["metadataSecretName"]
    assert VALUES["postgresql"]["enabled"] is False


def test_values_bake_dags_and_keep_git_sync_as_disabled_alternative() -> None:
    assert VALUES["dags"]["gitSync"]["enabled"] is False
    assert VALUES["dags"]["persistence"]["enabled"] is False
    assert VALUES["images"]["airflow"]["repository"] == VALUES["defaultAirflowRepository"]


def test_values_image_uid_and_pod_template_agree() -> None:
    assert VALUES["uid"] == AIRFLOW_UID
    pod = _load("deploy/pod_template.yaml")
    image = pod["spec"]["containers"][0]["image"]
    repo = VALUES["images"]["airflow"]["repository"]
    assert image == f"{repo}:{VALUES['images']['airflow']['tag']}"


def test_worker_values_match_the_pod_template() -> None:
    pod = _load("deploy/pod_template.yaml")
    container = pod["spec"]["containers"][0]
    workers = VALUES["workers"]
    assert workers["securityContexts"]["pod"] == pod["spec"]["securityContext"]
    assert workers["securityContexts"]["container"] == container["securityContext"]
    assert workers["resources"] == container["resources"]
    assert workers["serviceAccount"]["name"] == pod["spec"]["serviceAccountName"]


@pytest.mark.parametrize("component", ["scheduler", "apiServer", "dagProcessor", "triggerer"])
def test_component_security_contexts_are_hardened(component: str) -> None:
    ctx = VALUES[component]["securityContexts"]
    assert ctx["pod"]["runAsNonRoot"] is True
    assert ctx["pod"]["runAsUser"] == AIRFLOW_UID
    assert ctx["pod"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["container"]["allowPrivilegeEscalation"] is False
    assert ctx["container"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(VALUES[component]["resources"]["limits"])


def test_statsd_exporter_uses_the_convoy_mapping() -> None:
    assert VALUES["statsd"]["enabled"] is True
    mapping = _load("deploy/statsd-mapping.yaml")["mappings"]
    assert VALUES["statsd"]["extraMappings"] == mapping


def test_statsd_mapping_covers_convoy_metrics_with_labels() -> None:
    mappings = _load("deploy/statsd-mapping.yaml")["mappings"]
    names = {m["name"] for m in mappings}
    assert names >= {
        "convoy_services_rolled_out_total",
        "convoy_rollout_duration_seconds",
        "convoy_rows_transformed_total",
        "convoy_migrations_applied_total",
        "convoy_rollbacks_total",
        "convoy_runs_total",
    }
    for m in mappings:
        assert m["match"].startswith("airflow.convoy."), m
        assert "policy" in m["labels"], m
        wildcards = m["match"].count("*")
        captured = {v for v in m["labels"].values() if str(v).startswith("$")}
        assert captured == {f"${i}" for i in range(1, wildcards + 1)}, m
