"""Backup, migrate and revert tasks push XCom ``progress`` while they run (mongomock)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mongomock
import pytest
from dag_policies import policy_dict
from fake_ti import FakeTI

from convoy.airflow import config, datastores

_CLIENT: dict[str, Any] = {}
MIGRATIONS = {
    "V1__events.py": "def up(db):\n    db['events'].insert_one({'_id': 'v1'})\n",
    "V2__users.py": "def up(db):\n    db.users.update_many({}, {'$set': {'seen': True}})\n",
}


def mongomock_client(conn_id: str) -> Any:
    """``CONVOY_MONGO_CLIENT_FACTORY`` target: the client the test filled."""
    return _CLIENT["client"]


def _ti(task_id: str, *, rollback: bool = False) -> FakeTI:
    """A task of the ``catalog`` datastore; ``rollback``: the gate opened for a failed rollout."""
    xcoms = {}
    if rollback:
        xcoms[(f"{config.ROLLBACK_GROUP}.{config.ROLLBACK_GATE}", "return_value")] = [
            "wave_1.rollout_cart"
        ]
    return FakeTI(
        task_id,
        selection={"services": [], "datastores": ["catalog"], "dry_run": False},
        states={"datastore_catalog.backup": "success"},
        xcoms=xcoms,
    )


@pytest.fixture
def policy_path(
    write_policy: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    client: Any = mongomock.MongoClient()
    client["catalog"]["users"].insert_many([{"_id": i} for i in range(20)])
    _CLIENT["client"] = client
    monkeypatch.setenv(config.MONGO_CLIENT_FACTORY_ENV, f"{__name__}:mongomock_client")
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "0")
    catalog = {
        "name": "catalog",
        "type": "mongo",
        "connId": "catalog_mongo",
        "database": "catalog",
        "after": ["redis"],
        "backup": "snapshot",
        "migrations": "migrations/catalog",
    }
    path = write_policy("shop.yaml", policy_dict("shop", datastores=[catalog]))
    migrations = path.parent / "migrations" / "catalog"
    migrations.mkdir(parents=True)
    for name, text in MIGRATIONS.items():
        (migrations / name).write_text(text)
    return str(path)


def _stage(fn: Callable[..., Any], ti: FakeTI, policy_path: str, **kw: Any) -> Any:
    ti.freeze(policy_path)
    return fn(datastore="catalog", ti=ti, run_id="r1", **kw)


def test_backup_migrate_and_revert_push_progress_before_their_result(policy_path: str) -> None:
    backup = _ti("datastore_catalog.backup")
    assert _stage(datastores.backup, backup, policy_path)["tables"] == ["events", "users"]
    assert [(v["done"], v["total"]) for v in backup.progress()] == [(0, 2), (1, 2), (2, 2), (2, 2)]
    labels = {(v["label"], v["unit"]) for v in backup.progress()}
    assert labels == {("catalog/backup", "collections")}

    migrate = _ti("datastore_catalog.migrate")
    data = _stage(datastores.migrate, migrate, policy_path)
    assert [m["version"] for m in data["applied"]] == ["1", "2"]
    progress = migrate.progress()
    assert [(v["done"], v["total"]) for v in progress] == [(0, 2), (1, 2), (2, 2), (2, 2)]
    assert {(v["label"], v["unit"]) for v in progress} == {("catalog/migrate", "migrations")}
    assert progress[-1]["eta_seconds"] == 0.0
    # the result comes after the last progress record
    assert migrate.keys()[-1] == config.RESULT_KEY

    revert = _ti("rollback.revert_data_catalog", rollback=True)
    data = _stage(
        datastores.revert,
        revert,
        policy_path,
        stage_task_ids=["datastore_catalog.backup", "datastore_catalog.migrate"],
        mapped_task_ids=[],
    )
    assert data["reverted"] is True
    last = revert.progress()[-1]
    assert (last["label"], last["unit"], last["done"], last["total"]) == (
        "catalog/revert",
        "steps",
        2,
        2,
    )
