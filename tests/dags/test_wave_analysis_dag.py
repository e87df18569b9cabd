"""rollout.waveAnalysis in the DAG: one task per wave that later waves wait for, in local mode
and in rollout pods (execution: kubernetes)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict

from convoy.airflow import build_dag
from convoy.airflow.analysis import FROM_RUN_RECORD, ProviderSecretRequired
from convoy.airflow.pods import RolloutPodOperator, WaveAnalysisPodOperator
from convoy.policy import load_policy

TEMPLATE = {
    "name": "errors",
    "provider": {"prometheus": {"connId": "prom"}},
    "query": 'sum(rate(http_requests_total{workload="{{ workload }}", code=~"5.."}[1m]))',
    "thresholdRange": {"max": 0.01},
}


def _verified(**rollout: Any) -> dict[str, Any]:
    data = policy_dict("shop", analysisTemplates=[copy.deepcopy(TEMPLATE)])
    data["rollout"].update(rollout)
    return data


def test_each_wave_is_analysed_before_the_next_starts(write_policy: Callable[..., Path]) -> None:
    dag = build_dag(load_policy(write_policy("s.yaml", _verified(waveAnalysis=["errors"]))))
    t = dag.task_dict
    assert t["wave_0.analysis"].upstream_task_ids == {
        "wave_0.rollout_redis",
        "wave_0.rollout_currency",
    }
    assert t["wave_1.rollout_cart"].upstream_task_ids == {"wave_0.analysis"}
    assert t["wave_1.analysis"].upstream_task_ids == {"wave_1.rollout_cart"}
    assert t["wave_2.rollout_checkout"].upstream_task_ids == {"wave_1.analysis"}
    assert t["wave_2.analysis"].upstream_task_ids == {"wave_2.rollout_checkout"}
    assert t["wave_1.analysis"].trigger_rule == "none_failed"
    assert t["wave_1.analysis"].retries == 0
    assert t["wave_1.analysis"].op_kwargs["wave"] == 1
    # A failed wave analysis opens the rollback gate; the report lists it as a step.
    assert {"wave_0.analysis", "wave_2.analysis"} <= t["rollback.gate"].upstream_task_ids
    assert "wave_1.analysis" in t["report"].op_kwargs["steps"]


def test_without_wave_analysis_waves_are_no_barriers(write_policy: Callable[..., Path]) -> None:
    dag = build_dag(load_policy(write_policy("s.yaml", _verified(analysis=["errors"]))))
    assert not [t for t in dag.task_dict if t.endswith(".analysis")]
    assert dag.task_dict["wave_2.rollout_checkout"].upstream_task_ids == {
        "wave_1.rollout_cart",
        "wave_0.rollout_currency",
    }
    # The rollout task only learns that it is verified: queries stay out of its arguments.
    kwargs = dag.task_dict["wave_1.rollout_cart"].op_kwargs
    assert kwargs["verify"] == FROM_RUN_RECORD
    assert "{{ workload }}" not in repr(kwargs)


def test_verified_policy_builds_with_rollout_pods(write_policy: Callable[..., Path]) -> None:
    data = _verified(analysis=["errors"], waveAnalysis=["errors"])
    data["execution"] = "kubernetes"
    prometheus = data["analysisTemplates"][0]["provider"]["prometheus"]
    prometheus["secretRef"] = {"name": "prom-creds"}
    dag = build_dag(load_policy(write_policy("s.yaml", data)))
    t = dag.task_dict
    assert isinstance(t["wave_1.rollout_cart"], RolloutPodOperator)
    wave = t["wave_1.analysis"]
    assert isinstance(wave, WaveAnalysisPodOperator)
    assert wave.wave == 1
    assert wave.retries == 0
    assert wave.trigger_rule == "none_failed"
    # The same barriers as in local mode.
    assert wave.upstream_task_ids == {"wave_1.rollout_cart"}
    assert t["wave_2.rollout_checkout"].upstream_task_ids == {"wave_1.analysis"}
    assert "wave_1.analysis" in t["rollback.gate"].upstream_task_ids
    # Queries are given to the pod at run time, never as templated arguments.
    assert "{{ workload }}" not in repr(t["wave_1.rollout_cart"].arguments)


@pytest.mark.parametrize("rollout", [{"analysis": ["errors"]}, {"waveAnalysis": ["errors"]}])
def test_rollout_pods_need_the_providers_secret(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, rollout: dict[str, Any]
) -> None:
    """A local policy run in pods through CONVOY_EXECUTION_MODE has no secretRef to read."""
    loaded = load_policy(write_policy("s.yaml", _verified(**rollout)))
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    with pytest.raises(ProviderSecretRequired, match="errors: rollout pods"):
        build_dag(loaded)
