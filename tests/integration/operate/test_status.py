"""``convoy status`` on the emulated cluster and a real PostgreSQL (the issue's done-when).

A "run" here is what the DAG's tasks do, called directly: the runner applies
every service's images with the run id, and the engine backs up and migrates
the datastore (its rollback: the engine's revert, then the runner's revert).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from operate_helpers import NS, cli, ctx, revert_images, rollout, write_policy

from convoy.engines.postgres import PostgresEngine
from convoy.engines.postgres.digest import state_digest
from convoy.rollout.api import KubernetesIO, WorkloadRef

pytestmark = pytest.mark.integration


def successful_run(cluster: Any, conninfo: str, root: Path, run_id: str = "run-1") -> Any:
    loaded = write_policy(root)
    cluster.seed_from_policy(loaded.policy)
    rollout(cluster, loaded, run_id)
    engine = PostgresEngine(conninfo)
    c = ctx(loaded, "orders", run_id)
    engine.backup(c)
    engine.migrate(c)
    engine.complete(c)
    return loaded


def digest(conninfo: str) -> tuple[str, ...]:
    return tuple(state_digest(conninfo, schema) for schema in ("public", "convoy", "convoy_backup"))


def test_in_sync_after_a_successful_run_and_reads_only(
    kube: Any, orders_db: str, tmp_path: Path
) -> None:
    loaded = successful_run(kube, orders_db, tmp_path)
    before = digest(orders_db)
    start = len(kube.requests)

    code, out, err = cli("status", str(loaded.path))

    assert code == 0, out + err
    assert out.startswith("Status shop: in sync")
    assert "cart: in sync  (Deployment/cartservice, complete, 3/3 ready" in out
    assert "run run-1" in out
    assert "orders (postgres): in sync" in out
    assert "versions: applied 1,2, pending -, failed -, reverted -" in out
    assert "backups kept: 1 run" in out
    # reads only: one LIST per workload kind and namespace, nothing else; no database change
    requests = kube.requests[start:]
    assert sorted((r.method, r.verb, r.path) for r in requests) == [
        ("GET", "LIST", f"/apis/apps/v1/namespaces/{NS}/deployments"),
        ("GET", "LIST", f"/apis/apps/v1/namespaces/{NS}/statefulsets"),
    ]
    assert digest(orders_db) == before


def test_an_image_changed_by_hand_is_drift_for_that_service_only(
    kube: Any, orders_db: str, tmp_path: Path
) -> None:
    loaded = successful_run(kube, orders_db, tmp_path)
    io = KubernetesIO(kube.api_client())
    io.patch(
        WorkloadRef(NS, "Deployment", "cartservice"),
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "server", "image": "cart:hotfix"}]}}
            }
        },
    )
    kube.wait_idle()

    code, out, err = cli("status", str(loaded.path))
    assert code == 4, out + err
    assert "Status shop: drift" in out
    assert "cart: drift" in out
    assert "server: cart:hotfix != registry.example.com/cart:2.4.0" in out
    assert "convoy last set registry.example.com/cart:2.4.0" in out
    assert "redis: in sync" in out
    assert "orders (postgres): in sync" in out

    code, out, _ = cli("status", str(loaded.path), "--json")
    data = json.loads(out)
    assert code == 4
    assert data["verdict"] == "drift"
    assert data["exit_code"] == 4
    verdicts = {s["name"]: s["verdict"] for s in data["services"]}
    assert verdicts == {"cart": "drift", "redis": "in sync"}
    cart = next(s for s in data["services"] if s["name"] == "cart")
    assert cart["containers"] == [
        {
            "name": "server",
            "live": "cart:hotfix",
            "target": "registry.example.com/cart:2.4.0",
            "last_applied": "registry.example.com/cart:2.4.0",
        }
    ]
    assert cart["run_id"] == "run-1"


def test_a_new_migration_file_is_pending(kube: Any, orders_db: str, tmp_path: Path) -> None:
    loaded = successful_run(kube, orders_db, tmp_path)
    (tmp_path / "migrations" / "orders" / "V3__more.sql").write_text(
        "ALTER TABLE public.orders ADD COLUMN more int;\n"
    )
    code, out, err = cli("status", str(loaded.path))
    assert code == 3, out + err
    assert "Status shop: pending" in out
    assert "orders (postgres): pending" in out
    assert "versions: applied 1,2, pending 3," in out
    assert "cart: in sync" in out

    code, out, _ = cli("status", str(loaded.path), "--json")
    orders = json.loads(out)["datastores"][0]
    assert code == 3
    assert (orders["verdict"], orders["applied"], orders["pending"]) == (
        "pending",
        ["1", "2"],
        ["3"],
    )


def test_a_new_image_in_the_policy_is_pending(kube: Any, orders_db: str, tmp_path: Path) -> None:
    successful_run(kube, orders_db, tmp_path)
    loaded = write_policy(tmp_path, cart="registry.example.com/cart:2.5.0")
    code, out, _ = cli("status", str(loaded.path))
    assert code == 3
    assert "cart: pending" in out
    assert "registry.example.com/cart:2.4.0 -> registry.example.com/cart:2.5.0 not yet" in out


def test_after_a_failed_run_with_rollback_it_names_what_was_reverted(
    kube: Any, orders_db: str, tmp_path: Path
) -> None:
    successful_run(kube, orders_db, tmp_path)
    # run-2: a new cart image and migration V3; it fails after both, and rolls back
    (tmp_path / "migrations" / "orders" / "V3__more.sql").write_text(
        "ALTER TABLE public.orders ADD COLUMN more int;\n"
    )
    (tmp_path / "migrations" / "orders" / "U3__more.sql").write_text(
        "ALTER TABLE public.orders DROP COLUMN more;\n"
    )
    loaded = write_policy(tmp_path, cart="registry.example.com/cart:2.5.0")
    rollout(kube, loaded, "run-2")
    engine = PostgresEngine(orders_db)
    c = ctx(loaded, "orders", "run-2")
    engine.backup(c)
    engine.migrate(c)
    engine.revert(c)
    revert_images(kube, loaded, "run-2")

    code, out, err = cli("status", str(loaded.path))
    assert code == 3, out + err
    assert "cart: pending" in out
    assert "reverted by run run-2 (from server: registry.example.com/cart:2.5.0)" in out
    assert "redis: in sync" in out
    assert "orders (postgres): pending" in out
    assert "reverted: 3 (by run run-2)" in out
    assert "versions: applied 1,2, pending 3, failed -, reverted 3" in out

    code, out, _ = cli("status", str(loaded.path), "--json")
    data = json.loads(out)
    cart = next(s for s in data["services"] if s["name"] == "cart")
    assert cart["verdict"] == "pending"
    assert cart["reverted_from"] == {"server": "registry.example.com/cart:2.5.0"}
    assert cart["containers"][0]["live"] == "registry.example.com/cart:2.4.0"
    orders = data["datastores"][0]
    assert orders["reverted"] == ["3"]
    row = next(v for v in orders["versions"] if v["version"] == "3")
    assert (row["state"], row["run_id"], row["reverted_by"]) == ("reverted", "run-2", "run-2")


def test_unreachable_parts_are_unknown_with_one_line(
    kube: Any, orders_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = successful_run(kube, orders_db, tmp_path)
    monkeypatch.delenv("AIRFLOW_CONN_ORDERS_DB")
    code, out, err = cli("status", str(loaded.path))
    assert code == 6, out + err
    assert "orders (postgres): unknown" in out
    assert "cannot read it: The conn_id `orders_db` isn't defined" in out
    assert "cart: in sync" in out
    assert "Traceback" not in out + err


def test_a_missing_workload_is_degraded(kube: Any, orders_db: str, tmp_path: Path) -> None:
    loaded = write_policy(tmp_path, postgres=False)
    kube.add_workload(
        "StatefulSet", NS, "redis-cart", {"redis": "registry.example.com/redis:7.4.0"}
    )
    code, out, _ = cli("status", str(loaded.path))
    assert code == 5
    assert "cart: degraded  (Deployment/cartservice, missing)" in out
    assert "Deployment shop/cartservice not found" in out


def test_a_cluster_identity_without_list_is_unknown_in_one_line(
    kube: Any, orders_db: str, tmp_path: Path
) -> None:
    loaded = successful_run(kube, orders_db, tmp_path)
    kube.forbid("list", "deployments")
    code, out, err = cli("status", str(loaded.path))
    assert code == 6, out + err
    assert "cart: unknown" in out
    line = next(x for x in out.splitlines() if "cannot read the cluster" in x)
    assert 'may not list deployments.apps in namespace "shop"' in line
    assert "convoy render rbac --status" in line  # the Role it needs, not the runner's
    assert "orders (postgres): in sync" in out
