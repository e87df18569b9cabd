"""A real process killed with SIGKILL, then resumed (needs a real server: MONGO_URI).

mongomock lives in the memory of one process, so its data dies with the
killed process; the in-process crash simulations in ``test_mongo_transforms``
cover the same points with mongomock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mongo_engine_helpers import MongoSetup, users
from test_mongo_transforms import INC

from convoy.engines.errors import FailedMigrationPresent
from convoy.engines.mongo import MongoConfig

WORKER = Path(__file__).with_name("mongo_kill_worker.py")
RESUME = MongoConfig(lock_ttl_s=30, lock_wait_s=10, lock_poll_s=0.1, progress_interval_s=0)

pytestmark = pytest.mark.mongo_server


def _run_worker(mongo: MongoSetup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), mongo.name, str(mongo.base_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )


def test_transform_killed_between_write_and_checkpoint_resumes_once(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(50))
    proc = _run_worker(mongo, "transform", "3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cp = mongo.db.convoy_checkpoints.find_one()
    assert cp["batches"] == 2  # batch 3 was written, its checkpoint never
    assert mongo.db.convoy_locks.count_documents({}) == 1  # left behind by the dead process
    result = mongo.engine(RESUME).transform(mongo.ctx(transforms=[INC]), "bump")
    assert result.done
    assert result.rows_done == 50
    assert sorted(d["n"] for d in mongo.db.users.find()) == [1000 + i for i in range(50)]
    assert any("took over" in line for line in mongo.logs)


def test_migration_killed_midway_is_reported_not_retried(mongo: MongoSetup) -> None:
    mongo.migration(
        "V1__dies.py",
        """
        import os, signal

        def up(db):
            db.events.insert_one({"_id": "half"})
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    proc = _run_worker(mongo, "migrate")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert mongo.db.convoy_changelog.find_one()["state"] == "running"
    with pytest.raises(FailedMigrationPresent, match="repair"):
        mongo.engine(RESUME).migrate(mongo.ctx("run-2"))
