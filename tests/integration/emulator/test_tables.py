"""Server-side Tables over HTTP (what ``kubectl get`` and ``kubectl get -w`` ask for)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.emulator.tables import human_duration, table_version, wants_table

pytestmark = pytest.mark.integration

NS = "shop"
TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def get(cluster: EmulatedCluster, path: str, accept: str = TABLE) -> Any:
    request = urllib.request.Request(f"{cluster.url}{path}", headers={"Accept": accept})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - local emulator
        return json.loads(resp.read())


def test_list_and_get_as_table(emulated_cluster: EmulatedCluster) -> None:
    emulated_cluster.add_workload(
        "Deployment", NS, "cart", {"server": "cart:1", "proxy": "envoy:1"}
    )
    table = get(emulated_cluster, f"/apis/apps/v1/namespaces/{NS}/deployments")
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"
    ]  # fmt: skip
    assert [c["priority"] for c in table["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1, 1]
    [row] = table["rows"]
    assert row["cells"][:4] == ["cart", "3/3", 3, 3]
    assert row["cells"][5:] == ["server,proxy", "cart:1,envoy:1", "app=cart"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "cart"
    assert table["metadata"]["resourceVersion"]
    one = get(
        emulated_cluster, f"/apis/apps/v1/namespaces/{NS}/deployments/cart?includeObject=Object"
    )
    assert one["rows"][0]["object"]["kind"] == "Deployment"
    none = get(
        emulated_cluster, f"/apis/apps/v1/namespaces/{NS}/deployments/cart?includeObject=None"
    )
    assert "object" not in none["rows"][0]
    # Without the Table media type: the objects themselves.
    plain = get(emulated_cluster, f"/apis/apps/v1/namespaces/{NS}/deployments", "application/json")
    assert plain["kind"] == "DeploymentList"


def test_watch_as_table(emulated_cluster: EmulatedCluster) -> None:
    emulated_cluster.add_workload("StatefulSet", NS, "db", {"db": "db:1"}, replicas=2)
    path = f"/api/v1/namespaces/{NS}/pods?watch=true&timeoutSeconds=1"
    url = f"{emulated_cluster.url}{path}"
    request = urllib.request.Request(url, headers={"Accept": TABLE})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - local emulator
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    assert all(e["object"]["kind"] == "Table" for e in events)
    assert [c["name"] for c in events[0]["object"]["columnDefinitions"]][:5] == [
        "Name", "Ready", "Status", "Restarts", "Age"
    ]  # fmt: skip
    assert events[1]["object"]["columnDefinitions"] == []  # only with the first event
    assert [e["object"]["rows"][0]["cells"][:4] for e in events] == [
        ["db-0", "1/1", "Running", "0"], ["db-1", "1/1", "Running", "0"]
    ]  # fmt: skip


def test_discovery_short_names(emulated_cluster: EmulatedCluster) -> None:
    apps = {
        r["name"]: r
        for r in get(emulated_cluster, "/apis/apps/v1", "application/json")["resources"]
    }
    assert apps["deployments"]["shortNames"] == ["deploy"]
    assert apps["statefulsets"]["shortNames"] == ["sts"]
    assert apps["daemonsets"]["categories"] == ["all"]
    core = {r["name"]: r for r in get(emulated_cluster, "/api/v1", "application/json")["resources"]}
    assert core["pods"]["shortNames"] == ["po"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (150, "2m30s"),
     (600, "10m"), (3 * 3600, "3h"), (3 * 3600 + 300, "3h5m"), (47 * 3600, "47h"),
     (50 * 3600, "2d2h"), (30 * 86400, "30d"), (3 * 365 * 86400 + 86400, "3y1d"),
     (9 * 365 * 86400, "9y")],
)  # fmt: skip
def test_human_duration_as_kubectl_shows_ages(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_table_media_type() -> None:
    assert wants_table(TABLE)
    assert table_version(TABLE) == "meta.k8s.io/v1"
    assert (
        table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "meta.k8s.io/v1beta1"
    )
    assert not wants_table("application/json, */*")
    assert not wants_table("application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io")
