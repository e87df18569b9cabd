"""Fixtures of the "Upgrades" page tests: a policies directory with one good and one bad policy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

GOOD = textwrap.dedent(
    """\
    apiVersion: convoy/v1
    kind: UpgradePolicy
    metadata:
      name: shop-ui
      description: Shop <b>2.4</b> rollout
      owner: platform
    kubernetes:
      namespace: shop
      serviceAccount: convoy-rollout
      runnerImage: registry.example.com/convoy:0.1.0
    rollout: {maxParallel: 2, progressDeadlineSeconds: 60}
    services:
      - name: redis
        workload: {kind: StatefulSet, name: redis-cart}
        containers: {redis: redis:7.4-alpine}
      - name: cart
        workload: {kind: Deployment, name: cartservice}
        containers: {server: registry.example.com/cart:2.4.0}
        dependsOn: [redis]
    datastores:
      - name: orders
        type: postgres
        connId: orders_db
        after: [redis]
        backup: snapshot
        transforms:
          - name: backfill-status
            table: public.orders
            key: id
            set: {status: "'open'"}
    """
)

# Two errors: an unknown key (line 5) and a dependency on an unknown service (line 16).
BAD = textwrap.dedent(
    """\
    apiVersion: convoy/v1
    kind: UpgradePolicy
    metadata:
      name: broken-ui
      colour: red
    kubernetes:
      namespace: shop
      serviceAccount: convoy-rollout
      runnerImage: registry.example.com/convoy:0.1.0
    services:
      - name: cart
        workload: {kind: Deployment, name: cartservice}
        containers: {server: registry.example.com/cart:2.4.0}
        dependsOn:
          - redis
          - cartt
    """
)


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "good.yaml").write_text(GOOD, encoding="utf-8")
    (d / "bad.yaml").write_text(BAD, encoding="utf-8")
    (d / "_draft.yaml").write_text("not: [a policy", encoding="utf-8")  # ignored: draft
    return d
