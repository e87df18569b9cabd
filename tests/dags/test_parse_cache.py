"""The DAG file's parse cache: the DAGs built from it are the DAGs built without it."""

from __future__ import annotations

import gc
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict

from convoy.airflow import registry
from convoy.policy import loader

REPO = Path(__file__).resolve().parents[2]


def _serialized(bag: Any) -> dict[str, Any]:
    from airflow.serialization.serialized_objects import DagSerialization

    return {dag_id: DagSerialization.to_dict(dag) for dag_id, dag in sorted(bag.dags.items())}


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """The repository's policies (with their migrations) and the good corpus, in one folder."""
    folder = tmp_path / "policies"
    shutil.copytree(REPO / "dags" / "policies", folder)
    for path in sorted((REPO / "tests" / "policies" / "good").iterdir()):
        target = folder / path.name
        if not target.exists():
            (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
    return folder


def test_dags_from_the_cache_are_the_dags_without_it(
    policies: Path,
    tmp_path: Path,
    load_dagbag: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    without = load_dagbag(policies, CONVOY_PARSE_CACHE_DIR="off")
    assert not without.import_errors
    names = set(without.dag_ids)
    assert len(names) > 5
    assert not [d for d in without.dags.values() if "convoy-invalid" in d.tags]

    cache = tmp_path / "cache"
    cold = load_dagbag(policies, CONVOY_PARSE_CACHE_DIR=str(cache))
    entries = list(cache.glob("*/*.json"))
    assert len(entries) == len(list(policies.glob("*.yaml")))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached policy was parsed again")

    # A parse that needed the YAML again would turn that policy into a placeholder DAG.
    monkeypatch.setattr(loader, "parse_yaml", refuse)
    caplog.set_level(logging.INFO, logger="convoy.airflow.registry")
    warm = load_dagbag(policies, CONVOY_PARSE_CACHE_DIR=str(cache))
    assert f"{len(entries)} policy files unchanged, 0 parsed" in caplog.text
    assert set(warm.dag_ids) == names
    assert _serialized(warm) == _serialized(without) == _serialized(cold)


def test_an_edited_policy_is_rebuilt_and_a_deleted_one_pruned(
    write_policy: Callable[..., Path], tmp_path: Path, load_dagbag: Callable[..., Any]
) -> None:
    cache = tmp_path / "cache"
    keep = write_policy("keep.yaml", policy_dict("keep"))
    gone = write_policy("gone.yaml", policy_dict("gone"))
    load_dagbag(keep.parent, CONVOY_PARSE_CACHE_DIR=str(cache))
    assert len(list(cache.glob("*/*.json"))) == 2

    edited = policy_dict("keep")
    edited["services"][0]["containers"] = {"redis": "reg/redis:9.9"}
    write_policy("keep.yaml", edited)
    gone.unlink()
    bag = load_dagbag(keep.parent, CONVOY_PARSE_CACHE_DIR=str(cache))
    assert bag.dag_ids == ["keep"]
    assert "reg/redis:9.9" in str(bag.dags["keep"].get_task("wave_0.rollout_redis").op_kwargs)
    assert len(list(cache.glob("*/*.json"))) == 1


def test_an_invalid_policy_is_reported_on_every_parse(
    write_policy: Callable[..., Path], tmp_path: Path, load_dagbag: Callable[..., Any]
) -> None:
    bad = policy_dict("bad")
    bad["rollout"] = {"maxParallel": 0}
    path = write_policy("bad.yaml", bad)
    for _ in range(2):
        bag = load_dagbag(path.parent, CONVOY_PARSE_CACHE_DIR=str(tmp_path / "cache"))
        assert "convoy-invalid" in bag.dags["bad"].tags
    assert not list((tmp_path / "cache").glob("*/*.json"))


def test_an_unusable_cache_directory_only_costs_time(
    write_policy: Callable[..., Path],
    tmp_path: Path,
    load_dagbag: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    path = write_policy("a.yaml", policy_dict("alpha"))
    bag = load_dagbag(path.parent, CONVOY_PARSE_CACHE_DIR=str(shared))
    assert bag.dag_ids == ["alpha"]
    assert not list(shared.iterdir())
    assert "other users can write" in caplog.text


def test_the_collector_runs_again_after_the_parse(
    write_policy: Callable[..., Path], load_dagbag: Callable[..., Any]
) -> None:
    path = write_policy("a.yaml", policy_dict("alpha"))
    assert gc.isenabled()
    load_dagbag(path.parent)
    assert gc.isenabled()


@pytest.fixture
def frozen_before() -> Iterator[int]:
    """Objects in the permanent generation before the test; its parses' go back afterwards."""
    before = gc.get_freeze_count()
    yield before
    if before == 0:
        gc.unfreeze()


def test_a_big_build_is_kept_out_of_later_collections(
    write_policy: Callable[..., Path],
    load_dagbag: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    frozen_before: int,
) -> None:
    path = write_policy("a.yaml", policy_dict("alpha"))
    write_policy("b.yaml", policy_dict("beta"))
    tasks = sum(len(d.task_dict) for d in load_dagbag(path.parent).dags.values())
    assert gc.get_freeze_count() == frozen_before  # a small folder: the collector sees all
    monkeypatch.setattr(registry, "FREEZE_MIN_TASKS", tasks)
    load_dagbag(path.parent)
    assert gc.get_freeze_count() > frozen_before
    assert gc.isenabled()
