from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from plan_helpers import make_policy, svc

from convoy.plan import (
    BEFORE_ROLLOUT,
    PlanError,
    RevertDataStep,
    RevertImagesStep,
    build_plan,
    expand_subset,
    render_text,
    topological_levels,
)
from convoy.plan.models import _content, _plain, _write, canonical_json
from convoy.policy.loader import load_policy
from convoy.policy.models import Policy


def waves_of(policy: Policy, **kw: Any) -> list[list[str]]:
    return [list(w.services) for w in build_plan(policy, **kw).waves]


@pytest.mark.parametrize(
    ("deps", "levels"),
    [
        ({"a": []}, [["a"]]),
        ({"b": [], "a": []}, [["a", "b"]]),
        ({"a": ["b"], "b": []}, [["b"], ["a"]]),
        ({"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}, [["a"], ["b", "c"], ["d"]]),
        ({"a": ["zz"]}, [["a"]]),  # unknown names are the loader's business
    ],
)
def test_topological_levels(deps: dict[str, list[str]], levels: list[list[str]]) -> None:
    assert topological_levels(deps) == levels


@pytest.mark.parametrize("deps", [{"a": ["b"], "b": ["a"]}, {"a": ["a"]}])
def test_cycles_are_refused(deps: dict[str, list[str]]) -> None:
    with pytest.raises(PlanError):
        topological_levels(deps)


def test_waves_follow_depends_on(shop: Policy) -> None:
    assert waves_of(shop) == [
        ["catalog", "currency", "redis"],
        ["cart", "payment"],
        ["checkout"],
    ]


@pytest.mark.parametrize("max_parallel", [1, 2, 3, 5, 9])
def test_max_parallel_never_splits_a_level(max_parallel: int) -> None:
    """maxParallel caps services at once in the DAG run; it does not chunk waves."""
    policy = make_policy([svc(n) for n in "edcba"], max_parallel=max_parallel)
    plan = build_plan(policy)
    assert [list(w.services) for w in plan.waves] == [["a", "b", "c", "d", "e"]]
    assert [w.index for w in plan.waves] == [0]
    assert plan.max_parallel == max_parallel


def test_a_wide_level_stays_one_wave_and_dependents_follow_it() -> None:
    policy = make_policy([svc("a"), svc("b"), svc("c"), svc("d", "c")], max_parallel=2)
    assert waves_of(policy) == [["a", "b", "c"], ["d"]]
    assert build_plan(policy).step("d").depends_on == ("c",)


def test_rollout_step_fields(shop: Policy) -> None:
    step = build_plan(shop).step("cart")
    assert step.namespace == "ns"
    assert (step.kind, step.workload, step.wave) == ("Deployment", "cart-wl", 1)
    assert step.containers == (("main", "reg/cart:2"), ("sidecar", "reg/cart-side:2"))
    assert step.depends_on == ("redis",)


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        (None, ("cart", "catalog", "checkout", "currency", "payment", "redis")),
        ([], ("cart", "catalog", "checkout", "currency", "payment", "redis")),
        (["catalog"], ("catalog",)),
        (["cart"], ("cart", "redis")),
        (["checkout"], ("cart", "checkout", "currency", "payment", "redis")),
        (["payment", "catalog"], ("catalog", "currency", "payment")),
    ],
)
def test_expand_subset(shop: Policy, chosen: list[str] | None, expected: tuple[str, ...]) -> None:
    assert expand_subset(shop, chosen) == expected


def test_expand_subset_unknown(shop: Policy) -> None:
    with pytest.raises(PlanError, match="'nope'"):
        expand_subset(shop, ["nope"])


def test_subset_plan_only_has_selected_services(shop: Policy) -> None:
    plan = build_plan(shop, services=["cart"])
    assert [list(w.services) for w in plan.waves] == [["redis"], ["cart"]]
    assert plan.services == ("cart", "redis")
    assert {s.service for s in plan.rollback if isinstance(s, RevertImagesStep)} == {
        "cart",
        "redis",
    }


def _pg(name: str, after: list[str] | None, **extra: Any) -> dict[str, Any]:
    ds: dict[str, Any] = {"name": name, "type": "postgres", "connId": f"{name}_db"}
    if after is not None:
        ds["after"] = after
    ds.update(extra)
    return ds


@pytest.mark.parametrize(
    ("after", "position"),
    [
        ([], BEFORE_ROLLOUT),
        (None, 2),  # after the last wave
        (["redis"], 0),
        (["cart"], 1),
        (["redis", "cart"], 1),  # the wave where the last of them completes
        (["checkout", "redis"], 2),
    ],
)
def test_datastore_position(shop: Policy, after: list[str] | None, position: object) -> None:
    policy = shop.model_copy(
        update={"datastores": make_policy([svc("x")], datastores=[_pg("orders", after)]).datastores}
    )
    (phase,) = build_plan(policy).datastore_phases
    assert phase.position == position


def test_datastore_stages_in_order(shop: Policy) -> None:
    ds = _pg(
        "orders",
        ["cart"],
        backup="snapshot",
        migrations="migrations/orders",
        transforms=[{"name": "fill", "table": "t", "key": "id", "set": {"a": "1"}}],
        validation=[{"table": "t", "expectations": [{"expect_x": {}}]}],
    )
    policy = make_policy([svc("cart")], datastores=[ds])
    (phase,) = build_plan(policy).datastore_phases
    assert [s.stage for s in phase.steps] == ["backup", "migrate", "transform", "validate"]
    assert [s.detail for s in phase.steps] == ["snapshot", "migrations/orders", "fill", "t"]


def test_datastore_with_unselected_after_is_left_out(shop: Policy) -> None:
    datastores = make_policy(
        [svc("x")], datastores=[_pg("orders", ["checkout"]), _pg("late", None)]
    ).datastores
    policy = shop.model_copy(update={"datastores": datastores})
    plan = build_plan(policy, services=["catalog"])
    assert [p.datastore for p in plan.datastore_phases] == ["late"]


def test_rollback_order_data_newest_first_then_images_newest_wave_first() -> None:
    datastores = [
        _pg("early", [], backup="snapshot"),
        _pg("mid", ["a"], migrations="m"),
        _pg("late", None, migrations="m"),
    ]
    policy = make_policy([svc("a"), svc("b", "a"), svc("c", "a")], datastores=datastores)
    plan = build_plan(policy)
    names = [s.datastore if isinstance(s, RevertDataStep) else s.service for s in plan.rollback]
    assert names == ["late", "mid", "early", "c", "b", "a"]
    assert [p.datastore for p in plan.datastore_phases] == ["early", "mid", "late"]


def test_plan_is_deterministic_and_digest_stable(shop: Policy) -> None:
    reordered = make_policy(list(reversed([svc(s.name, *s.depends_on) for s in shop.services])))
    a, b = build_plan(shop), build_plan(shop)
    assert a == b
    assert a.to_json() == b.to_json()
    assert a.digest == b.digest
    assert len(a.digest) == 64
    # Same content regardless of declaration order (kinds differ: redis is a StatefulSet here).
    assert build_plan(reordered).digest == build_plan(reordered).digest


@pytest.mark.parametrize(
    "change",
    [
        {"rollout": {"maxParallel": 1}},
        {"kubernetes": {"namespace": "other", "runnerImage": "r:1"}},
        {"rollback": {"automatic": False}},
    ],
)
def test_digest_changes_with_plan(shop: Policy, change: dict[str, Any]) -> None:
    data = shop.model_dump(by_alias=True)
    data.update(change)
    assert build_plan(Policy.model_validate(data)).digest != build_plan(shop).digest


def test_digest_known_value_is_pinned() -> None:
    # Canonical JSON must not drift between runs, Python versions or releases:
    # preflight refuses a run whose plan no longer has the DAG's digest.
    plan = build_plan(make_policy([svc("a")]))
    assert plan.digest == "c0707053c0a2537b73a519d4dffcdf2a1e5b444b3f4c336509fb597e8ccd84cf"
    body = plan.to_dict()
    assert body["digest"] == plan.digest
    assert json.loads(plan.to_json()) == body


def test_to_dict_shape(shop: Policy) -> None:
    body = build_plan(shop).to_dict()
    assert body["policy_name"] == "p"
    assert body["waves"][1]["steps"][0]["containers"] == [
        ["main", "reg/cart:2"],
        ["sidecar", "reg/cart-side:2"],
    ]
    assert body["rollback"][0]["action"] == "revert-images"


def test_render_text(shop: Policy) -> None:
    text = render_text(build_plan(shop))
    assert "wave 0:" in text
    assert "wave 2:" in text
    assert "main -> reg/checkout:2" in text
    assert "(after cart, payment)" in text
    assert text.index("revert images of checkout") < text.index("revert images of redis")


GOOD_POLICIES = sorted((Path(__file__).parents[2] / "policies" / "good").glob("*.yaml"))


@pytest.mark.parametrize("path", GOOD_POLICIES, ids=lambda p: p.name)
def test_canonical_json_is_json_dumps_of_the_content(path: Path) -> None:
    """The one-walk writer gives the text ``json.dumps`` gives of the plan's content."""
    plan = build_plan(load_policy(path))
    expected = json.dumps(_content(plan), sort_keys=True, separators=(",", ":"))
    assert canonical_json(plan) == expected
    assert plan.digest == hashlib.sha256(expected.encode()).hexdigest()


@pytest.mark.parametrize(
    "value", [True, False, None, 0, -3, 1.5, 'é\u2028"', ["a", (1, 2)], {"b": 1, 3: [None]}]
)
def test_canonical_writer_on_every_json_kind(value: Any) -> None:
    out: list[str] = []
    _write(value, out)
    assert "".join(out) == json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))
