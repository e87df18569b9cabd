"""Pure parts of the emulator: patch flavours, selectors, previous versions."""

from __future__ import annotations

from typing import Any

import pytest

from convoy.emulator import behaviour, previous_image
from convoy.emulator.patching import PatchError, json_patch, merge_patch, strategic_merge
from convoy.emulator.store import field_selector_matches, label_selector_matches

POD: dict[str, Any] = {
    "spec": {
        "containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"},
        ]
    }
}


def test_strategic_merge_by_name() -> None:
    patch = {"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}
    out = strategic_merge(POD, patch)
    assert [(c["name"], c["image"]) for c in out["spec"]["containers"]] == [
        ("a", "a:1"), ("b", "b:2"), ("c", "c:1")
    ]  # fmt: skip
    assert out["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}]
    assert POD["spec"]["containers"][1]["image"] == "b:1"  # input untouched


def test_strategic_merge_directives() -> None:
    out = strategic_merge(POD, {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["b"]
    assert strategic_merge({"a": 1, "b": 2}, {"a": None}) == {"b": 2}
    with pytest.raises(PatchError):
        strategic_merge(POD, {"spec": {"containers": [{"image": "no-name"}]}})


def test_merge_patch_replaces_lists() -> None:
    out = merge_patch(POD, {"spec": {"containers": [{"name": "b", "image": "b:2"}]}})
    assert out == {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}


def test_json_patch() -> None:
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/spec/containers/0/name", "value": "a"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "a:2"},
        {"op": "add", "path": "/metadata", "value": {"labels": {"x/y": "1"}}},
        {"op": "remove", "path": "/metadata/labels/x~1y"},
    ]
    out = json_patch(POD, ops)
    assert out["spec"]["containers"][0]["image"] == "a:2"
    assert out["metadata"] == {"labels": {}}
    with pytest.raises(PatchError):
        json_patch(POD, [{"op": "replace", "path": "/spec/nope/0", "value": 1}])


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("app=cart", {"app": "cart"}, True),
        ("app=cart,tier!=db", {"app": "cart", "tier": "db"}, False),
        ("app in (cart, web)", {"app": "web"}, True),
        ("app notin (cart)", {"app": "cart"}, False),
        ("tier", {"app": "cart"}, False),
        ("!tier", {"app": "cart"}, True),
        ("", {}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], match: bool) -> None:
    assert label_selector_matches(selector, labels) is match


def test_field_selector() -> None:
    obj = {"metadata": {"name": "cart", "namespace": "shop"}}
    assert field_selector_matches("metadata.name=cart", obj)
    assert not field_selector_matches("metadata.name!=cart", obj)
    with pytest.raises(ValueError, match="not supported"):
        field_selector_matches("spec.replicas=1", obj)


@pytest.mark.parametrize(
    ("image", "previous"),
    [
        ("registry.example.com/cart:2.4.0", "registry.example.com/cart:2.3.0"),
        ("redis:7.4-alpine", "redis:7.3-alpine"),
        ("reg:5000/app:3.0.0", "reg:5000/app:2.0.0"),
        ("app:v1.0.5", "app:v1.0.4"),
        ("app:latest", "app:previous"),
        ("shop/checkout:2.4.0-crashloop", "shop/checkout:2.3.0"),
        ("app", "app:previous"),
    ],
)
def test_previous_image(image: str, previous: str) -> None:
    assert previous_image(image) == previous


def test_previous_tag_override_and_behaviours() -> None:
    assert previous_image("reg:5000/app:3.0.0", "1.0") == "reg:5000/app:1.0"
    assert behaviour("app:1-crashloop") == "crashloop"
    assert behaviour("reg:5000/app-slow") == "ready"  # no tag: the port is not a tag
    assert behaviour("app:2.0") == "ready"
