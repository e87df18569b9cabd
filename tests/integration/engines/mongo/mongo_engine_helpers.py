"""Helpers of the mongo engine tests: contexts, migration files, a state snapshot."""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convoy.engines.base import RunContext
from convoy.engines.mongo import MongoConfig, MongoEngine
from convoy.engines.mongo.documents import collection_digest
from convoy.plan.specs import datastore_spec
from convoy.policy.models import MongoDatastore

FAST = MongoConfig(lock_ttl_s=30.0, lock_wait_s=0.2, lock_poll_s=0.05, progress_interval_s=0.0)


@dataclass
class MongoSetup:
    """One test's database: the client, its name and a directory for migrations."""

    client: Any
    name: str
    base_dir: Path
    logs: list[str] = field(default_factory=list)

    @property
    def db(self) -> Any:
        return self.client[self.name]

    def engine(self, config: MongoConfig = FAST, **kwargs: Any) -> MongoEngine:
        return MongoEngine(self.client, self.name, config, **kwargs)

    def migration(self, filename: str, source: str) -> Path:
        d = self.base_dir / "migrations"
        d.mkdir(exist_ok=True)
        path = d / filename
        path.write_text(textwrap.dedent(source))
        return path

    def datastore(self, **kwargs: Any) -> MongoDatastore:
        data: dict[str, Any] = {
            "name": "catalog",
            "type": "mongo",
            "connId": "catalog_mongo",
            "database": self.name,
            "migrations": "migrations" if (self.base_dir / "migrations").is_dir() else None,
        }
        data.update(kwargs)
        return MongoDatastore.model_validate(data)

    def ctx(
        self,
        run_id: str = "run-1",
        *,
        interval: tuple[dt.datetime, dt.datetime] | None = None,
        **datastore: Any,
    ) -> RunContext:
        return RunContext(
            policy_name="shop",
            run_id=run_id,
            datastore=datastore_spec(self.datastore(**datastore)),
            base_dir=self.base_dir,
            data_interval_start=interval[0] if interval else None,
            data_interval_end=interval[1] if interval else None,
            log=self.logs.append,
        )

    def state(self, *, include_own: bool = True) -> dict[str, Any]:
        """Digest of every collection (documents + indexes), convoy's own included."""
        names = sorted(self.db.list_collection_names())
        if not include_own:
            names = [n for n in names if not n.startswith("convoy_")]
        return {n: collection_digest(self.db, n) for n in names}


def users(n: int) -> list[dict[str, Any]]:
    return [{"_id": i, "fullName": f"First{i} Last{i}", "n": i, "tags": ["a"]} for i in range(n)]
