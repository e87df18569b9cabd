"""Service verdicts from live workload objects (pure)."""

from __future__ import annotations

import json
from typing import Any

from convoy.operate.services import judge_service
from convoy.policy.models import Service

SVC = Service.model_validate(
    {
        "name": "cart",
        "workload": {"kind": "Deployment", "name": "cart"},
        "containers": {"server": "cart:2"},
    }
)


def obj(
    image: str, annotations: dict[str, Any] | None = None, *, done: bool = True
) -> dict[str, Any]:
    ann = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (annotations or {}).items()}
    ready = 3 if done else 1
    return {
        "metadata": {"name": "cart", "generation": 2, "annotations": ann},
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "server", "image": image}]}},
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": ready,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def verdict(o: dict[str, Any] | None) -> str:
    return judge_service(SVC, "shop", o).verdict


def test_verdicts() -> None:
    applied = {"convoy.dev/images": {"server": "cart:2"}, "convoy.dev/run-id": "r1"}
    assert verdict(obj("cart:2", applied)) == "in sync"
    assert verdict(obj("cart:2", applied, done=False)) == "pending"
    assert verdict(obj("cart:1")) == "pending"  # never touched by convoy: not yet run
    older = {"convoy.dev/images": {"server": "cart:1"}, "convoy.dev/run-id": "r0"}
    assert verdict(obj("cart:1", older)) == "pending"  # an older policy's image
    assert verdict(obj("cart:hotfix", applied)) == "drift"
    assert verdict(None) == "degraded"
    # a runner before convoy.dev/images: the previous-images annotation tells a revert
    legacy = {"convoy.dev/previous-images": {"server": "cart:1"}, "convoy.dev/run-id": "r1"}
    assert verdict(obj("cart:1", legacy)) == "pending"
    assert verdict(obj("cart:hotfix", legacy)) == "drift"


def test_reverted_is_named() -> None:
    reverted = {
        "convoy.dev/images": {"server": "cart:1"},
        "convoy.dev/reverted-from": {"server": "cart:2"},
        "convoy.dev/run-id": "r2",
    }
    state = judge_service(SVC, "shop", obj("cart:1", reverted))
    assert state.verdict == "pending"
    assert state.reasons[-1] == "reverted by run r2 (from server: cart:2)"
    assert state.reverted_from == {"server": "cart:2"}


def test_a_failed_rollout_is_degraded() -> None:
    applied = {"convoy.dev/images": {"server": "cart:2"}, "convoy.dev/run-id": "r1"}
    failed = obj("cart:2", applied, done=False)
    failed["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    state = judge_service(SVC, "shop", failed)
    assert (state.verdict, state.condition) == ("degraded", "failed")
    assert state.reasons[-1].startswith("rollout failed: ")


def test_a_missing_container_is_degraded() -> None:
    state = judge_service(
        SVC.model_copy(update={"containers": {"sidecar": "envoy:1"}}), "shop", obj("cart:2")
    )
    assert state.verdict == "degraded"
    assert state.reasons == ("container 'sidecar' not in the workload",)
