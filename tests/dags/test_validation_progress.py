"""The validate task of a MongoDB datastore pushes XCom ``progress`` while it scans (mongomock)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mongomock
import pytest
from dag_policies import policy_dict
from fake_ti import FakeTI

from convoy.airflow import config, datastores
from convoy.validation import mongo as mongo_validation

DOCS = 1_000
_CLIENT: dict[str, Any] = {}


def mongomock_client(conn_id: str) -> Any:
    """``CONVOY_MONGO_CLIENT_FACTORY`` target: the client the test filled."""
    return _CLIENT["client"]


@pytest.fixture
def policy_path(
    write_policy: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    client: Any = mongomock.MongoClient()
    client["catalog"]["users"].insert_many([{"_id": i, "name": f"u{i}"} for i in range(DOCS)])
    _CLIENT["client"] = client
    monkeypatch.setenv(config.MONGO_CLIENT_FACTORY_ENV, f"{__name__}:mongomock_client")
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "0")
    # small batches, so that a thousand documents take several
    monkeypatch.setattr(mongo_validation, "DEFAULT_BATCH_SIZE", 200)
    catalog = {
        "name": "catalog",
        "type": "mongo",
        "connId": "catalog_mongo",
        "database": "catalog",
        "after": ["redis"],
        "backup": "none",
        "validation": [
            {
                "collection": "users",
                "expectations": [{"expect_column_values_to_not_be_null": {"column": "name"}}],
            }
        ],
    }
    return str(write_policy("shop.yaml", policy_dict("shop", datastores=[catalog])))


def test_mongo_validation_pushes_progress_before_its_result(policy_path: str) -> None:
    ti = FakeTI(
        "datastore_catalog.validate",
        selection={"services": [], "datastores": ["catalog"], "dry_run": False},
    )
    ti.freeze(policy_path)
    data = datastores.validate(datastore="catalog", ti=ti, run_id="r1")
    assert all(o["success"] for o in data["outcomes"])
    progress = ti.progress()
    assert [v["done"] for v in progress] == [200, 400, 600, 800, 1000, 1000]
    assert {v["total"] for v in progress} == {DOCS}
    assert {v["unit"] for v in progress} == {"documents"}
    assert {v["label"] for v in progress} == {"catalog/validation"}
    assert progress[-1]["eta_seconds"] == 0.0
    keys = ti.keys()
    assert keys[-1] == config.RESULT_KEY
