"""``convoy db ...`` and ``convoy status`` on MongoDB: mongomock, and the server of ``MONGO_URI``.

Each test runs on mongomock and, marked ``mongo_server`` (skipped without
``MONGO_URI``), on a real server: the README's real-Mongo lane,
``MONGO_URI=mongodb://localhost:27017 .venv/bin/pytest -m mongo_server tests/integration/operate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from operate_helpers import MONGO, cli, ctx, write_policy

from convoy.engines.errors import MigrationFailed
from convoy.engines.mongo import MongoConfig, MongoEngine
from convoy.policy import LoadedPolicy

pytestmark = pytest.mark.integration

FAST = MongoConfig(lock_wait_s=1.0, lock_poll_s=0.05, progress_interval_s=0.0)


def engine(client: Any) -> MongoEngine:
    return MongoEngine(client, MONGO["database"], FAST)


def migrated(client: Any, root: Path, run_id: str = "run-1") -> LoadedPolicy:
    loaded = write_policy(root, postgres=False, mongo=True)
    c = ctx(loaded, "catalog", run_id)
    engine(client).backup(c)
    engine(client).migrate(c)
    return loaded


def digest(client: Any) -> dict[str, Any]:
    from convoy.engines.mongo.documents import collection_digest

    db = client[MONGO["database"]]
    return {n: collection_digest(db, n) for n in sorted(db.list_collection_names())}


def db_info(loaded: LoadedPolicy) -> list[tuple[str, str]]:
    code, out, err = cli("db", "info", str(loaded.path), "catalog", "--json")
    assert code == 0, err
    return [(v["version"], v["state"]) for v in json.loads(out)["datastores"][0]["versions"]]


def test_info_and_validate(catalog_mongo: Any, tmp_path: Path) -> None:
    loaded = migrated(catalog_mongo, tmp_path)
    code, out, err = cli("db", "info", str(loaded.path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "catalog (mongo): in sync"
    assert lines[2].split()[:3] == ["1", "users", "applied"]
    assert lines[3].split()[:3] == ["2", "index", "applied"]
    assert lines[2].split()[4] == "run-1"
    assert cli("db", "validate", str(loaded.path))[:2] == (
        0,
        "catalog: ok (2 applied, 0 problems)\n",
    )

    path = tmp_path / "migrations" / "catalog" / "V2__index.py"
    path.write_text(path.read_text() + "# reviewed\n")
    code, out, err = cli("db", "validate", str(loaded.path), "catalog")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("catalog: version 2: edited after it was applied (applied ")
    assert db_info(loaded) == [("1", "applied"), ("2", "edited")]
    code, out, err = cli(
        "db", "repair", str(loaded.path), "--version", "2", "--accept-checksum", "--yes"
    )
    assert code == 0, err
    assert out.startswith("catalog: accepted checksum ")
    assert cli("db", "validate", str(loaded.path))[0] == 0


def test_failed_migration_is_degraded_until_repaired(catalog_mongo: Any, tmp_path: Path) -> None:
    loaded = migrated(catalog_mongo, tmp_path)
    (tmp_path / "migrations" / "catalog" / "V3__boom.py").write_text(
        "def up(db):\n    db.users.insert_one({'_id': 2})\n    raise RuntimeError('boom')\n"
    )
    loaded = write_policy(tmp_path, postgres=False, mongo=True)
    with pytest.raises(MigrationFailed):
        engine(catalog_mongo).migrate(ctx(loaded, "catalog", "run-2"))
    code, out, _ = cli("db", "info", str(loaded.path))
    assert out.startswith("catalog (mongo): degraded")
    assert db_info(loaded)[-1] == ("3", "failed")

    code, out, err = cli("db", "repair", str(loaded.path), "catalog", "--version", "3", "--yes")
    assert code == 0, err
    assert out.strip() == "catalog: cleared failed attempt of 3 (run run-2)"
    assert db_info(loaded)[-1] == ("3", "pending")


def test_repair_of_a_version_that_did_not_fail_is_refused(
    catalog_mongo: Any, tmp_path: Path
) -> None:
    loaded = migrated(catalog_mongo, tmp_path)
    code, out, err = cli("db", "repair", str(loaded.path), "--version", "1", "--yes")
    assert (code, out, err) == (1, "", "convoy db repair: version 1: nothing to repair\n")


def test_baseline_then_refused_on_a_managed_store(catalog_mongo: Any, tmp_path: Path) -> None:
    loaded = write_policy(tmp_path, postgres=False, mongo=True)
    catalog_mongo[MONGO["database"]].users.insert_one({"_id": 1, "name": "a"})
    code, out, err = cli("db", "baseline", str(loaded.path), "--version", "1", "--yes")
    assert code == 0, err
    assert out.strip() == "catalog: baseline at version 1 (1 versions recorded as applied)"
    assert db_info(loaded) == [("1", "baseline"), ("1", "below baseline"), ("2", "pending")]
    result = engine(catalog_mongo).migrate(ctx(loaded, "catalog", "run-1"))
    assert [r.version for r in result.applied] == ["2"]
    assert db_info(loaded) == [("1", "baseline"), ("1", "below baseline"), ("2", "applied")]

    code, out, err = cli("db", "baseline", str(loaded.path), "--version", "2", "--yes")
    assert (code, out) == (1, "")
    assert (
        err == "convoy db baseline: cannot baseline 'catalog': history already has versions 1, 2\n"
    )


def test_unknown_datastore(catalog_mongo: Any, tmp_path: Path) -> None:
    loaded = write_policy(tmp_path, postgres=False, mongo=True)
    code, out, err = cli("db", "repair", str(loaded.path), "orders", "--version", "1", "--yes")
    assert (code, out) == (2, "")
    assert err == "convoy db repair: unknown datastore 'orders' (policy has: catalog)\n"


def test_backups_and_prune(airflow_db: None, catalog_mongo: Any, tmp_path: Path) -> None:
    loaded = migrated(catalog_mongo, tmp_path)
    (tmp_path / "migrations" / "catalog" / "V3__more.py").write_text(
        "def up(db):\n    db.users.insert_one({'_id': 3})\n\n\n"
        "def down(db):\n    db.users.delete_one({'_id': 3})\n"
    )
    loaded = write_policy(tmp_path, postgres=False, mongo=True)
    c = ctx(loaded, "catalog", "run-2")
    engine(catalog_mongo).backup(c)
    engine(catalog_mongo).migrate(c)
    db = catalog_mongo[MONGO["database"]]
    copies = sorted(n for n in db.list_collection_names() if n.startswith("convoy_backup__"))
    assert len(copies) == 1  # run-1's backup recorded users as absent (V1 creates it)

    code, out, err = cli("db", "backups", str(loaded.path))
    assert code == 0, err
    assert out.splitlines()[0].startswith("catalog: 2 runs")
    assert "snapshot: convoy_backup__" in out
    assert "<- users" in out

    code, out, err = cli("db", "backups", str(loaded.path), "--prune", "--keep", "1", "--yes")
    assert code == 0, err
    assert "catalog: pruned run run-1" in out
    assert "kept: newest run of the datastore" in out
    left = sorted(n for n in db.list_collection_names() if n.startswith("convoy_backup__"))
    assert left == copies
    assert db.convoy_backups.count_documents({"run_id": "run-1"}) == 0
    code, out, _ = cli("db", "backups", str(loaded.path), "--json")
    assert [r["run_id"] for r in json.loads(out)["datastores"][0]["runs"]] == ["run-2"]
    # the newest run still reverts from what was kept
    engine(catalog_mongo).revert(c)
    assert db_info(loaded)[-1] == ("3", "reverted")


def test_status_of_a_mongo_datastore(kube: Any, catalog_mongo: Any, tmp_path: Path) -> None:
    from operate_helpers import rollout

    loaded = migrated(catalog_mongo, tmp_path)
    kube.seed_from_policy(loaded.policy)
    rollout(kube, loaded, "run-1")
    before = digest(catalog_mongo)
    code, out, err = cli("status", str(loaded.path))
    assert code == 0, out + err
    assert "catalog (mongo): in sync" in out
    assert "versions: applied 1,2, pending -, failed -, reverted -" in out
    (tmp_path / "migrations" / "catalog" / "V3__more.py").write_text("def up(db):\n    pass\n")
    code, out, _ = cli("status", str(loaded.path), "--json")
    catalog = json.loads(out)["datastores"][0]
    assert (code, catalog["verdict"], catalog["pending"]) == (3, "pending", ["3"])
    assert digest(catalog_mongo) == before  # read only: every collection, convoy's own too
