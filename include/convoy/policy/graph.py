"""Cycles in the ``dependsOn`` graph, found iteratively so long chains cannot overflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

Edge = TypeVar("Edge")


def find_cycles(
    graph: Mapping[str, Sequence[tuple[str, Edge]]], order: Sequence[str]
) -> list[tuple[list[str], Edge]]:
    """Each distinct cycle once, as ``[a, b, a]`` starting at the node earliest in ``order``.

    ``graph`` maps a node to ``(successor, edge)`` pairs; the edge returned is the
    one leaving the cycle's first node, so callers can point at it.
    """
    rank = {node: i for i, node in enumerate(order)}
    found: dict[frozenset[str], tuple[list[str], Edge]] = {}
    done: set[str] = set()
    for root in order:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        pending = [iter(graph.get(root, ()))]
        while pending:
            step = next(pending[-1], None)
            if step is None:
                pending.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            successor = step[0]
            if successor in on_path:
                members = path[path.index(successor) :]
                start = min(members, key=lambda n: rank.get(n, len(rank)))
                i = members.index(start)
                cycle = [*members[i:], *members[:i], start]
                edge = next(e for s, e in graph[start] if s == cycle[1])
                found.setdefault(frozenset(members), (cycle, edge))
            elif successor not in done:
                path.append(successor)
                on_path.add(successor)
                pending.append(iter(graph.get(successor, ())))
    return list(found.values())
