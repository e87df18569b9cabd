"""The approval gate in the pure plan: carried, digested, rendered for the approver."""

from __future__ import annotations

import hashlib
import json

from plan_helpers import make_policy, svc

from convoy.plan import (
    ApprovalGate,
    build_plan,
    render_approval_markdown,
    render_rollback_approval_markdown,
    render_text,
)
from convoy.plan.models import _content
from convoy.policy.models import Policy

GATE = {"required": True, "approvers": ["alice", "bob"], "timeoutMinutes": 30}


def with_approval(policy: Policy, approval: dict[str, object]) -> Policy:
    data = policy.model_dump(by_alias=True)
    data["approval"] = approval
    return Policy.model_validate(data)


def test_plan_carries_the_approval() -> None:
    plan = build_plan(with_approval(make_policy([svc("a")]), GATE))
    assert plan.approval == ApprovalGate(("alice", "bob"), 30)
    assert plan.to_dict()["approval"] == {"approvers": ["alice", "bob"], "timeout_minutes": 30}
    assert build_plan(make_policy([svc("a")])).approval is None


def test_not_required_means_no_gate() -> None:
    off = {"required": False, "approvers": ["alice"], "timeoutMinutes": 5}
    assert build_plan(with_approval(make_policy([svc("a")]), off)).approval is None


def test_plans_without_approval_keep_their_digest() -> None:
    plan = build_plan(make_policy([svc("a")]))
    assert "approval" not in plan.to_dict()
    # The digest of the content without the key, as it was before approvals existed.
    canonical = json.dumps(_content(plan), sort_keys=True, separators=(",", ":"))
    assert plan.digest == hashlib.sha256(canonical.encode()).hexdigest()


def test_digest_changes_with_the_approval() -> None:
    base = make_policy([svc("a")])
    digests = {
        build_plan(base).digest,
        build_plan(with_approval(base, GATE)).digest,
        build_plan(with_approval(base, {**GATE, "approvers": ["alice"]})).digest,
        build_plan(with_approval(base, {**GATE, "timeoutMinutes": 31})).digest,
    }
    assert len(digests) == 4


def test_render_text_names_the_gate() -> None:
    text = render_text(build_plan(with_approval(make_policy([svc("a")]), GATE)))
    assert "approval: required from alice, bob after preflight (timeout 30 min)" in text


def test_approval_markdown_is_the_dry_run_diff() -> None:
    policy = with_approval(make_policy([svc("a"), svc("b", "a")]), GATE)
    current = {"a": {"main": "reg/a:1", "sidecar": "reg/a-side:2"}}
    md = render_approval_markdown(build_plan(policy), current=current)
    assert "**Wave 0**" in md
    assert "**Wave 1**" in md
    assert "| `a` | Deployment/a-wl | `main` | `reg/a:1` | `reg/a:2` |" in md
    assert "| `a` | Deployment/a-wl | `sidecar` | `reg/a-side:2` | unchanged |" in md
    assert "| `b` | Deployment/b-wl | `main` | unknown | `reg/b:2` |" in md
    assert "**3 container image(s) change**, 1 already at the target." in md
    assert "within 30 minutes" in md
    assert "1. revert images of b (Deployment/b-wl, wave 1)" in md


def test_approval_markdown_lists_migrations_per_datastore() -> None:
    ds = {"name": "orders", "type": "postgres", "connId": "db", "migrations": "m", "after": []}
    policy = with_approval(make_policy([svc("a")], datastores=[ds]), GATE)
    md = render_approval_markdown(
        build_plan(policy), migrations={"orders": ["V1__create", "V2__add_status"]}
    )
    assert "**Before the rollout**" in md
    assert "  - migrate: `V1__create`, `V2__add_status` (those not applied yet run" in md
    assert md.index("**Before the rollout**") < md.index("**Wave 0**")


def test_rollback_approval_markdown() -> None:
    plan = build_plan(with_approval(make_policy([svc("a")]), GATE))
    md = render_rollback_approval_markdown(plan, "manual__1", dry_run=True)
    assert "Manual rollback in **p** of run `manual__1` (dry run)" in md
    assert "1. revert images of a (Deployment/a-wl, wave 0)" in md
