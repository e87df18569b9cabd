"""Preflight freezes each service's canary steps and analyses (and waveAnalysis) in the record."""

from __future__ import annotations

from pathlib import Path

import yaml

from convoy.plan import build_plan
from convoy.plan.record import freeze, record_from_json
from convoy.policy import load_policy

QUERY = 'sum(rate(http_requests_total{workload="{{ workload }}", code=~"5.."}[1m]))'


def _policy(tmp_path: Path) -> Path:
    data = {
        "apiVersion": "convoy/v1", "kind": "UpgradePolicy",
        "metadata": {"name": "shop"}, "startDate": "2026-01-01",
        "kubernetes": {"namespace": "shop", "runnerImage": "r/convoy:1"},
        "analysisTemplates": [
            {"name": "errors", "query": QUERY,
             "provider": {"prometheus": {"connId": "prom", "secretRef": {"name": "prom-creds"}}},
             "thresholdRange": {"max": 0.01}, "interval": "1s", "count": 2},
            {"name": "health", "provider": {"http": {"connId": "gw", "path": "/h/{{ service }}",
                                                    "secretRef": {"name": "gw-creds"}}}},
        ],
        "rollout": {"analysis": ["errors"], "waveAnalysis": ["health"]},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis"},
             "containers": {"redis": "r/redis:2"}, "analysis": []},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cart"},
             "containers": {"server": "r/cart:2"}, "dependsOn": ["redis"],
             "canary": {"steps": [{"pods": 1}, {"analysis": "errors"}]}},
        ],
    }  # fmt: skip
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_record_holds_what_verifies_each_step(tmp_path: Path) -> None:
    loaded = load_policy(_policy(tmp_path))
    plan = build_plan(loaded)
    record = freeze(loaded, plan, dag_plan_digest=plan.digest, mode="upgrade", dry_run=False)
    assert set(record.verify) == {"cart"}  # redis: analysis [] and no canary
    cart = record.verify["cart"]
    assert cart["canary"] == [{"pods": 1}, {"analysis": "errors"}]
    assert cart["analyses"] == ["errors"]
    assert cart["templates"]["errors"]["query"] == QUERY  # unrendered: variables filled per run
    assert cart["templates"]["errors"]["max"] == 0.01
    # The rollout pod reads the provider from this Secret (execution: kubernetes).
    assert cart["templates"]["errors"]["secret"] == "prom-creds"
    assert record.wave_verify["analyses"] == ["health"]
    assert record.wave_verify["templates"]["health"]["provider"] == "http"
    # It round-trips through the stored JSON with its digest.
    again = record_from_json(record.to_dict(), expected_digest=record.digest)
    assert again.verify == record.verify
    # A manual rollback verifies nothing.
    rollback = freeze(loaded, plan, dag_plan_digest=plan.digest, mode="rollback", dry_run=False,
                      rollback_run_id="r1")  # fmt: skip
    assert rollback.verify == {}
    assert rollback.wave_verify == {}
