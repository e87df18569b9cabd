"""Verified rollouts end to end: ``dag.test()`` with the emulated cluster, a real
Prometheus scraping the emulator's ``/metrics`` and the embedded PostgreSQL.

One policy, four services in three waves and the orders database migrated and
back-filled after the first wave. Every service is analysed after its rollout
(``rollout.analysis``) and again after its whole wave rolled out
(``rollout.waveAnalysis``); cart rolls out as a canary (one pod, then an
analysis, then the rest).

- cart's new image ends in ``-errors`` (the emulator answers 20 % of its
  requests with code 500): the canary rolls one pod, the analysis fails on the
  real query, checkout never starts, the rollback restores the datastore
  (hash-equal) and every image.
- The same policy with a healthy cart finishes with every analysis passed.

Both reports show every measurement.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from e2e_helpers import images, load_dag, pg_state, states

pytestmark = pytest.mark.e2e

PREVIOUS = "2.3.0"
NS = "shop"
REPLICAS = 3
ERROR_RATE = (
    '(sum(rate(http_requests_total{namespace="{{ namespace }}", workload="{{ workload }}",'
    ' image=~"{{ images }}", code=~"5.."}[5s])) or vector(0))\n'
    '/ sum(rate(http_requests_total{namespace="{{ namespace }}", workload="{{ workload }}",'
    ' image=~"{{ images }}"}[5s]))\n'
)
V1 = "ALTER TABLE public.orders ADD COLUMN status text;\n"
U1 = "ALTER TABLE public.orders DROP COLUMN status;\n"


def _policy(name: str, cart_image: str) -> dict[str, Any]:
    registry = "registry.example.com"
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": name, "owner": "platform"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {"namespace": NS, "runnerImage": f"{registry}/convoy:0.1.0"},
        "analysisTemplates": [
            {
                "name": "error-rate",
                "provider": {"prometheus": {"connId": "prometheus_default"}},
                "query": ERROR_RATE,
                "thresholdRange": {"max": 0.05},
                "interval": "1s",
                "count": 2,
                "initialDelay": "4s",
                "failureLimit": 0,
                "inconclusiveLimit": 0,
            }
        ],
        "rollout": {
            "maxParallel": 2,
            "progressDeadlineSeconds": 30,
            "analysis": ["error-rate"],
            "waveAnalysis": ["error-rate"],
        },
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": {"redis": f"{registry}/redis:2.4.0"}},
            {"name": "currency", "workload": {"kind": "Deployment", "name": "currencyservice"},
             "containers": {"server": f"{registry}/currency:2.4.0"}},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": {"server": f"{registry}/{cart_image}"}, "dependsOn": ["redis"],
             "canary": {"steps": [{"pods": 1}, {"analysis": "error-rate"}]}},
            {"name": "checkout", "workload": {"kind": "Deployment", "name": "checkoutservice"},
             "containers": {"server": f"{registry}/checkout:2.4.0"}, "dependsOn": ["cart"]},
        ],
        "datastores": [
            {"name": "orders", "type": "postgres", "connId": "orders_db", "after": ["redis"],
             "backup": "snapshot", "migrations": "migrations/orders",
             "transforms": [
                 {"name": "fill-status", "table": "public.orders", "key": "id",
                  "batchSize": 200, "where": "status IS NULL",
                  "set": {"status": "CASE WHEN id % 2 = 0 THEN 'open' ELSE 'shipped' END"}},
             ]},
        ],
        "rollback": {"automatic": True},
    }  # fmt: skip


@pytest.fixture
def emulated_cluster() -> Iterator[Any]:
    """The emulated cluster with a controller replacing one pod every 0.1 s.

    A Deployment canary pauses the rollout once its first new pod exists; the
    runner needs two requests for that, and a real controller takes seconds
    per pod, so this controller is slowed down to leave it that time.
    """
    from convoy.emulator import EmulatedCluster

    with EmulatedCluster(tick_seconds=0.1) as cluster:
        yield cluster


@pytest.fixture
def prometheus(
    cluster: Any, start_prometheus: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """A real Prometheus scraping the emulator's ``/metrics``, as ``prometheus_default``."""
    target = urllib.parse.urlsplit(cluster.url).netloc
    url = start_prometheus([target], scrape_interval="1s")
    parts = urllib.parse.urlsplit(url)
    conn = {"conn_type": "http", "host": parts.hostname, "port": parts.port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps(conn))
    return url


@pytest.fixture
def setup(
    cluster: Any,
    prometheus: str,
    pg_database: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str, str], tuple[Any, str, dict[str, dict[str, str]]]]:
    """``setup(name, cart_image)``: policy file, seeded workloads and database."""
    from convoy.policy import load_policy

    root = tmp_path / "policies"
    (root / "migrations" / "orders").mkdir(parents=True)
    (root / "migrations" / "orders" / "V1__status.sql").write_text(V1)
    (root / "migrations" / "orders" / "U1__status.sql").write_text(U1)
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    monkeypatch.setenv("CONVOY_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("CONVOY_RUNS_DIR", str(tmp_path / "runs"))

    def make(name: str, cart_image: str) -> tuple[Any, str, dict[str, dict[str, str]]]:
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_policy(name, cart_image), sort_keys=False))
        loaded = load_policy(path)
        seeded = cluster.seed_from_policy(loaded.policy, previous_tag=PREVIOUS)
        uri = pg_database("orders_db")
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, amount int)")
            conn.execute(
                "INSERT INTO public.orders SELECT g, g % 97 FROM generate_series(1, 600) g"
            )
        return loaded, uri, seeded

    return make


def _xcom(run: Any, task_id: str, key: str) -> Any:
    ti = next(t for t in run.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id, key=key)


def _report(tmp_path: Path, dag_id: str) -> tuple[str, str]:
    (md,) = (tmp_path / "reports" / dag_id).glob("*/report.md")
    (html,) = (tmp_path / "reports" / dag_id).glob("*/report.html")
    return md.read_text(), html.read_text()


def test_errors_image_fails_its_canary_analysis_and_everything_is_rolled_back(
    cluster: Any, setup: Callable[..., Any], tmp_path: Path
) -> None:
    loaded, uri, seeded = setup("verified-errors", "cart:2.4.0-errors")
    before = pg_state(uri)
    run = load_dag("verified-errors").test()
    got = states(run)
    assert run.state == "failed", got
    assert got["wave_0.rollout_redis"] == "success"
    assert got["wave_0.rollout_currency"] == "success"
    assert got["wave_0.analysis"] == "success"
    assert sorted(
        (r["service"], r["where"], r["phase"]) for r in _xcom(run, "wave_0.analysis", "analysis")
    ) == [("currency", "wave 0", "successful"), ("redis", "wave 0", "successful")]
    assert got["datastore_orders.migrate"] == "success"
    assert got["wave_1.rollout_cart"] == "failed"
    assert got["wave_1.analysis"] == "upstream_failed"
    # Nothing after the failed analysis starts.
    assert got["wave_2.rollout_checkout"] == "upstream_failed"
    assert cluster.images("Deployment", NS, "checkoutservice") == seeded["checkout"]

    # The canary rolled one pod, and the analysis measured it on the real query.
    [step1, step2] = _xcom(run, "wave_1.rollout_cart", "canary")
    assert step1["pods"] == 1
    assert step1["updated"] == 1
    new = [p for p, image in step1["images"].items() if image.endswith("-errors")]
    assert len(new) == 1, step1
    assert len(step1["images"]) == REPLICAS, step1
    assert step2["analysis"] == "error-rate"
    assert step2["phase"] == "failed"
    [canary_run] = _xcom(run, "wave_1.rollout_cart", "analysis")
    assert canary_run["where"].startswith("canary step 2 (1/3 pods updated)")
    assert canary_run["phase"] == "failed"
    [measurement] = canary_run["measurements"]  # failureLimit 0: the first failure ends it
    assert measurement["verdict"] == "fail"
    assert 0.1 < measurement["value"] < 0.3  # 20 % of the canary pod's requests fail
    assert "http_requests_total" in canary_run["query"]

    # The rollback restored the datastore and every image (the canary's pod too).
    assert got["rollback.revert_data_orders"] == "success"
    assert got["rollback.revert_cart"] == "success"
    assert pg_state(uri) == before
    assert images(cluster, loaded.policy) == seeded
    for name in ("cartservice", "currencyservice"):
        pods = cluster.pods("Deployment", NS, name)
        assert all(not p["spec"]["containers"][0]["image"].endswith("2.4.0-errors") for p in pods)
    assert cluster.get_workload("Deployment", NS, "cartservice")["spec"].get("paused") in (
        None,
        False,
    )

    md, html = _report(tmp_path, "verified-errors")
    assert "## Analyses" in md
    assert "`cart`: error-rate canary step 2" in md
    assert "**failed**" in md
    assert f"{measurement['value']:.6g}" in md
    assert "| fail |" in md
    assert "`redis`: error-rate after rollout: **successful**" in md
    assert "`redis`: error-rate wave 0: **successful**" in md
    assert "Analyses" in html
    assert f"{measurement['value']:.6g}" in html


def test_healthy_images_pass_every_analysis(
    cluster: Any, setup: Callable[..., Any], tmp_path: Path
) -> None:
    loaded, uri, _seeded = setup("verified-healthy", "cart:2.4.0")
    run = load_dag("verified-healthy").test()
    got = states(run)
    assert run.state == "success", got
    assert images(cluster, loaded.policy) == {
        s.name: dict(s.containers) for s in loaded.policy.services
    }
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE status IS NULL").fetchone() == (0,)
    phases: dict[str, list[tuple[str, str]]] = {}
    for service in ("redis", "currency", "cart", "checkout"):
        runs = _xcom(run, f"wave_{_wave(service)}.rollout_{service}", "analysis")
        phases[service] = [(r["where"].split(" (")[0], r["phase"]) for r in runs]
        for r in runs:
            assert len(r["measurements"]) == 2, r
            assert all(m["verdict"] == "pass" and m["value"] == 0 for m in r["measurements"]), r
    assert phases == {
        "redis": [("after rollout", "successful")],
        "currency": [("after rollout", "successful")],
        "cart": [("canary step 2", "successful"), ("after rollout", "successful")],
        "checkout": [("after rollout", "successful")],
    }
    for wave, services in enumerate([["redis", "currency"], ["cart"], ["checkout"]]):
        assert got[f"wave_{wave}.analysis"] == "success"
        runs = _xcom(run, f"wave_{wave}.analysis", "analysis")
        assert sorted((r["service"], r["where"], r["phase"]) for r in runs) == [
            (s, f"wave {wave}", "successful") for s in sorted(services)
        ]
    steps = _xcom(run, "wave_1.rollout_cart", "canary")
    assert steps[0]["updated"] == 1
    assert cluster.get_workload("Deployment", NS, "cartservice")["spec"].get("paused") in (
        None,
        False,
    )
    md, html = _report(tmp_path, "verified-healthy")
    assert md.count("after rollout: **successful**") == 4
    assert md.count(": error-rate wave ") == 4
    assert "`checkout`: error-rate wave 2: **successful**" in md
    assert "`cart`: error-rate canary step 2 (1/3 pods updated): **successful**" in md
    assert "| pass |" in md
    assert "fail" not in md.split("## Analyses")[1]
    assert "Analyses" in html


def _wave(service: str) -> int:
    return {"redis": 0, "currency": 0, "cart": 1, "checkout": 2}[service]
