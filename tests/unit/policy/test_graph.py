from __future__ import annotations

import pytest

from convoy.policy.graph import find_cycles


def _graph(edges: dict[str, list[str]]) -> dict[str, list[tuple[str, str]]]:
    return {node: [(dep, f"{node}->{dep}") for dep in deps] for node, deps in edges.items()}


@pytest.mark.parametrize(
    ("edges", "order", "expected"),
    [
        ({"a": ["b"], "b": []}, ["a", "b"], []),
        ({"a": ["b"], "b": ["a"]}, ["a", "b"], [(["a", "b", "a"], "a->b")]),
        # Reported from the first-defined member whatever node the search started at.
        ({"c": ["a"], "a": ["b"], "b": ["c"]}, ["a", "b", "c"], [(["a", "b", "c", "a"], "a->b")]),
        (
            {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]},
            ["a", "b", "c", "d"],
            [(["a", "b", "a"], "a->b"), (["c", "d", "c"], "c->d")],
        ),
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, ["a", "b", "c", "d"], []),
    ],
)
def test_find_cycles(
    edges: dict[str, list[str]], order: list[str], expected: list[tuple[list[str], str]]
) -> None:
    assert find_cycles(_graph(edges), order) == expected


def test_long_chain_does_not_recurse() -> None:
    n = 20_000
    order = [f"s{i}" for i in range(n)]
    edges = {order[i]: [order[i + 1]] for i in range(n - 1)}
    edges[order[-1]] = [order[0]]
    ((cycle, edge),) = find_cycles(_graph(edges), order)
    assert len(cycle) == n + 1
    assert edge == "s0->s1"
