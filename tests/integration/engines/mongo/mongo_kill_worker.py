"""Run one engine stage against MONGO_URI and SIGKILL itself at a chosen point.

Usage: python mongo_kill_worker.py <database> <base_dir> transform <batch>
       python mongo_kill_worker.py <database> <base_dir> migrate
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import pymongo
from mongo_engine_helpers import MongoSetup
from test_mongo_transforms import INC

from convoy.engines.mongo import MongoConfig


def main() -> None:
    database, base_dir, stage = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    client: Any = pymongo.MongoClient(os.environ["MONGO_URI"])
    setup = MongoSetup(client, database, base_dir)
    config = MongoConfig(lock_ttl_s=1.0, lock_wait_s=0, progress_interval_s=0)
    if stage == "transform":
        kill_batch = int(sys.argv[4])

        def hook(point: str, details: Any) -> None:
            if point == "transform.after_write" and details["batch"] == kill_batch:
                os.kill(os.getpid(), signal.SIGKILL)

        setup.engine(config, fault_hook=hook).transform(setup.ctx(transforms=[INC]), "bump")
    else:
        setup.engine(config).migrate(setup.ctx())


if __name__ == "__main__":
    main()
