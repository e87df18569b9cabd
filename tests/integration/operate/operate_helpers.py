"""Helpers of the operating-command tests: policies, a run of them, the CLI."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import yaml

from convoy.cli import main
from convoy.engines.base import RunContext
from convoy.plan.specs import datastore_spec
from convoy.policy import LoadedPolicy, load_policy
from convoy.rollout.runner import RolloutRunner, Target

NS = "shop"
MONGO: dict[str, Any] = {}

PG_MIGRATIONS = {
    "V1__orders.sql": "CREATE TABLE public.orders (id bigint PRIMARY KEY, status text);\n"
    "INSERT INTO public.orders SELECT g, NULL FROM generate_series(1, 50) g;\n",
    "U1__orders.sql": "DROP TABLE public.orders;\n",
    "V2__note.sql": "ALTER TABLE public.orders ADD COLUMN note text;\n",
    "U2__note.sql": "ALTER TABLE public.orders DROP COLUMN note;\n",
}
MONGO_MIGRATIONS = {
    "V1__users.py": "def up(db):\n    db.users.insert_one({'_id': 1, 'name': 'a'})\n\n\n"
    "def down(db):\n    db.users.delete_one({'_id': 1})\n",
    "V2__index.py": "def up(db):\n    db.users.create_index('name')\n\n\n"
    "def down(db):\n    db.users.drop_index('name_1')\n",
}


def open_mongo(backend: str = "mongomock") -> Any:
    """A client of ``backend``: ``mongomock``, or ``server`` (the one ``MONGO_URI`` names)."""
    if backend == "server":
        import pymongo

        return pymongo.MongoClient(os.environ["MONGO_URI"], serverSelectionTimeoutMS=5000)
    import mongomock

    return mongomock.MongoClient()


def mongo_client(conn_id: str) -> Any:
    """``CONVOY_MONGO_CLIENT_FACTORY`` target: the test's client."""
    return MONGO["client"]


def write_policy(
    root: Path,
    *,
    postgres: bool = True,
    mongo: bool = False,
    cart: str = "registry.example.com/cart:2.4.0",
    backup: str = "snapshot",
    transform: bool = False,
) -> LoadedPolicy:
    data: dict[str, Any] = {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": "shop"},
        "kubernetes": {"namespace": NS, "runnerImage": "registry.example.com/convoy:0.1.0"},
        "services": [
            {
                "name": "cart",
                "workload": {"kind": "Deployment", "name": "cartservice"},
                "containers": {"server": cart},
                "dependsOn": ["redis"],
            },
            {
                "name": "redis",
                "workload": {"kind": "StatefulSet", "name": "redis-cart"},
                "containers": {"redis": "registry.example.com/redis:7.4.0"},
            },
        ],
        "datastores": [],
    }
    if postgres:
        d = root / "migrations" / "orders"
        d.mkdir(parents=True, exist_ok=True)
        for name, text in PG_MIGRATIONS.items():
            if not (d / name).exists():
                (d / name).write_text(text)
        data["datastores"].append(
            {
                "name": "orders",
                "type": "postgres",
                "connId": "orders_db",
                "after": ["cart"],
                "backup": backup,
                "migrations": "migrations/orders",
            }
        )
        if transform:
            data["datastores"][-1]["transforms"] = [
                {
                    "name": "fill-status",
                    "table": "public.orders",
                    "key": "id",
                    "batchSize": 10,
                    "where": "status IS NULL",
                    "set": {"status": "'open'"},
                }
            ]
    if mongo:
        d = root / "migrations" / "catalog"
        d.mkdir(parents=True, exist_ok=True)
        for name, text in MONGO_MIGRATIONS.items():
            if not (d / name).exists():
                (d / name).write_text(text)
        data["datastores"].append(
            {
                "name": "catalog",
                "type": "mongo",
                "connId": "catalog_mongo",
                "database": MONGO["database"],
                "backup": "snapshot",
                "migrations": "migrations/catalog",
            }
        )
    path = root / "shop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_policy(path)


def ctx(loaded: LoadedPolicy, name: str, run_id: str) -> RunContext:
    ds = next(d for d in loaded.policy.datastores if d.name == name)
    return RunContext(
        policy_name=loaded.policy.metadata.name,
        run_id=run_id,
        datastore=datastore_spec(ds),
        base_dir=loaded.path.parent,
        log=lambda _m: None,
    )


def rollout(cluster: Any, loaded: LoadedPolicy, run_id: str) -> None:
    """The rollout half of a run: every service's images applied, as the DAG's tasks do."""
    runner = RolloutRunner(cluster.api_client(), log=lambda _m: None)
    for svc in loaded.policy.services:
        target = Target(NS, svc.workload.kind, svc.workload.name, dict(svc.containers))
        result = runner.apply(target, deadline_seconds=20, run_id=run_id)
        assert result.status in ("complete", "noop"), result


def revert_images(cluster: Any, loaded: LoadedPolicy, run_id: str) -> None:
    runner = RolloutRunner(cluster.api_client(), log=lambda _m: None)
    for svc in reversed(loaded.policy.services):
        target = Target(NS, svc.workload.kind, svc.workload.name)
        runner.revert(target, deadline_seconds=20, run_id=run_id, only_if_run_id=run_id)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()
