from __future__ import annotations

import pytest

from convoy.policy.source import Mark, parse_yaml, render_path

TEXT = """\
apiVersion: convoy/v1
services:
  - name: cart
    dependsOn: [redis, db]
  - {name: redis}
"""


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ((), ""),
        (("services", 2, "dependsOn", 0), "services[2].dependsOn[0]"),
        (("update", "$set", "a"), "update.$set.a"),
        (("set", "shipped at"), 'set["shipped at"]'),
        ((0,), "[0]"),
    ],
)
def test_render_path(path: tuple[str | int, ...], rendered: str) -> None:
    assert render_path(path) == rendered


@pytest.mark.parametrize(
    ("path", "mark"),
    [
        (("apiVersion",), Mark(1, 13)),
        (("services",), Mark(3, 3)),
        (("services", 0), Mark(3, 5)),
        (("services", 0, "dependsOn", 1), Mark(4, 24)),
        (("services", 1, "name"), Mark(5, 12)),
        # A path that does not exist falls back to its nearest parent.
        (("services", 1, "workload", "kind"), Mark(5, 5)),
    ],
)
def test_value_marks(path: tuple[str | int, ...], mark: Mark) -> None:
    doc, problems = parse_yaml(TEXT, "p.yaml")
    assert problems == []
    assert doc is not None
    assert doc.value_mark(path) == mark


def test_key_marks_and_anchor() -> None:
    doc, _ = parse_yaml(TEXT, "p.yaml")
    assert doc is not None
    assert doc.key_mark(("services", 0, "dependsOn")) == Mark(4, 5)
    # List items have no key: the item's own position is used.
    assert doc.key_mark(("services", 1)) == Mark(5, 5)
    assert doc.anchor(("services", 0, "workload")) == Mark(3, 5)


def test_data_is_constructed_like_safe_load() -> None:
    doc, _ = parse_yaml("d: 2026-01-01\nn: 1\nb: yes\n", "p.yaml")
    assert doc is not None
    assert str(doc.data["d"]) == "2026-01-01"
    assert doc.data["n"] == 1
    assert doc.data["b"] is True


def test_duplicate_keys_are_reported_but_parsing_goes_on() -> None:
    doc, problems = parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n", "p.yaml")
    assert doc is not None
    assert [str(p) for p in problems] == [
        "p.yaml:4:3: b.c: duplicate key 'c' (first defined at line 3)"
    ]


def test_merge_key_override_is_not_a_duplicate() -> None:
    doc, problems = parse_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\n", "p.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data["use"] == {"x": 3, "y": 2}
    assert doc.value_mark(("use", "x")) == Mark(4, 6)


def test_non_scalar_key_is_reported() -> None:
    _, problems = parse_yaml("? [a, b]\n: 1\n", "p.yaml")
    assert problems[0].message == "mapping keys must be plain scalars"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "p.yaml:1:1: file is empty"),
        ("# only a comment\n", "p.yaml:1:1: file is empty"),
        ("a: [1, 2\n", "p.yaml:2:1: YAML syntax error"),
        ("a: !!python/object:os.system x\n", "p.yaml:1:4: YAML syntax error"),
        ("a: 1\n---\nb: 2\n", "p.yaml:2:1: YAML syntax error"),
    ],
)
def test_unparseable_text_gives_one_positioned_diagnostic(text: str, expected: str) -> None:
    doc, problems = parse_yaml(text, "p.yaml")
    assert doc is None
    assert len(problems) == 1
    assert str(problems[0]).startswith(expected)


def test_recursive_alias_is_refused() -> None:
    doc, problems = parse_yaml("a: &x [1, *x]\n", "p.yaml")
    assert doc is None
    assert [str(p) for p in problems] == [
        "p.yaml:1:11: a[1]: recursive YAML alias: '*x' is inside the node it names "
        "(anchored at line 1); a policy value cannot contain itself"
    ]
