"""Which pool each task takes: rollouts and image reverts share one cap, set by env."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from dag_policies import policy_dict

from convoy.airflow import build_dag, config
from convoy.policy import load_policy

REPO = Path(__file__).resolve().parents[2]


def _dag(write_policy: Callable[..., Path], data: dict[str, Any] | None = None) -> Any:
    return build_dag(load_policy(write_policy("shop.yaml", data or policy_dict("shop"))))


def _image_tasks(dag: Any) -> list[Any]:
    return [
        t
        for t in dag.tasks
        if t.task_id.split(".")[-1].startswith(("rollout_", "revert_"))
        and not t.task_id.split(".")[-1].startswith("revert_data_")
    ]


def test_unset_rollouts_use_the_default_pool(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(config.ROLLOUT_POOL_ENV, raising=False)
    dag = _dag(write_policy)
    tasks = _image_tasks(dag)
    assert tasks
    assert {t.pool for t in tasks} == {"default_pool"}


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
def test_rollouts_and_image_reverts_take_the_configured_pool(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv(config.ROLLOUT_POOL_ENV, "convoy_rollout")
    monkeypatch.setenv(config.EXECUTION_ENV, mode)
    dag = _dag(write_policy)
    tasks = _image_tasks(dag)
    assert {t.task_id.split(".")[-1] for t in tasks} >= {"rollout_cart", "revert_cart"}
    assert {t.pool for t in tasks} == {"convoy_rollout"}
    # Everything else (preflight, datastore steps, data reverts, report) stays out of it.
    others = [t for t in dag.tasks if t not in tasks]
    assert others
    assert {t.pool for t in others} == {"default_pool"}


def test_reverts_go_first_when_a_slot_frees(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.ROLLOUT_POOL_ENV, "convoy_rollout")
    dag = _dag(write_policy)
    revert = dag.task_dict["rollback.revert_cart"]
    rollout = dag.task_dict["wave_1.rollout_cart"]
    assert revert.priority_weight == config.REVERT_PRIORITY_WEIGHT
    assert str(revert.weight_rule) in ("absolute", "WeightRule.ABSOLUTE")
    assert revert.priority_weight > rollout.priority_weight


@pytest.mark.parametrize("bad", ["two words", "x" * 300])
def test_bad_pool_name_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(config.ROLLOUT_POOL_ENV, bad)
    with pytest.raises(ValueError, match=config.ROLLOUT_POOL_ENV):
        config.rollout_pool()


def test_every_deployment_names_the_same_pool() -> None:
    """The settings file, the Helm values, the migrate job and the worker pods agree."""
    settings = yaml.safe_load((REPO / "airflow_settings.yaml").read_text())
    pools = {p["pool_name"]: p["pool_slot"] for p in settings["airflow"]["pools"]}
    values = yaml.safe_load((REPO / "deploy/helm/values.yaml").read_text())
    env = {e["name"]: e["value"] for e in values["env"]}
    name = env[config.ROLLOUT_POOL_ENV]
    assert name in pools
    migrate = " ".join(values["migrateDatabaseJob"]["args"])
    assert "airflow db migrate" in migrate
    assert f"airflow pools set {name} {pools[name]} " in migrate
    pod = yaml.safe_load((REPO / "deploy/pod_template.yaml").read_text())
    worker_env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert worker_env[config.ROLLOUT_POOL_ENV] == name
    demo = (REPO / "include/convoy/demo.py").read_text()
    assert f'env["{config.ROLLOUT_POOL_ENV}"] = "{name}"' in demo
