"""YAML text -> plain data plus the line and column of every key and value.

PyYAML's composer keeps the start mark of every node; constructing the data
from the same node graph lets us map any field path back to the file.

Nodes are counted from the parser's events before anything is composed or
expanded: a few lines of nested anchors ("billion laughs") expand to billions
of nodes, so a document that would bring more than :data:`ALIAS_BUDGET` nodes
in through aliases is refused, as go-yaml has done since CVE-2019-11253, and
so is one of more than :data:`NODE_BUDGET` nodes in all or nested deeper than
:data:`DEPTH_BUDGET` (each node costs the DAG processor time and memory
several times over, and each remembers its path from the root).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from convoy.policy.errors import Diagnostic

PathElem = str | int
FieldPath = tuple[PathElem, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml parses ~10x faster; the DAG processor loads every policy within its
# import timeout, so use it whenever PyYAML was built with it.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")
#: Most nodes a document may bring in through aliases (each alias counts the
#: whole subtree it repeats). Policies that share a block between services
#: stay far below it; an alias bomb passes it within its first few levels.
ALIAS_BUDGET = 10_000
#: Most nodes a document may have, aliases expanded. A policy of a few hundred
#: services has a few thousand.
NODE_BUDGET = 20_000
#: Deepest nesting of lists and mappings. A policy nests about ten levels; a
#: MongoDB update pipeline a few more.
DEPTH_BUDGET = 64


@dataclass(frozen=True)
class Mark:
    """A 1-based position in the source file."""

    line: int
    column: int


START = Mark(1, 1)


@dataclass(frozen=True)
class Document:
    """Parsed YAML data and where each value (and each mapping key) starts."""

    data: Any
    values: Mapping[FieldPath, Mark]
    keys: Mapping[FieldPath, Mark]

    def value_mark(self, path: Iterable[PathElem]) -> Mark:
        """Where the value at ``path`` starts, or its nearest existing parent."""
        p = tuple(path)
        while p and p not in self.values:
            p = p[:-1]
        return self.values.get(p, START)

    def key_mark(self, path: Iterable[PathElem]) -> Mark:
        """Where the key naming ``path`` starts; list items fall back to the value."""
        p = tuple(path)
        return self.keys.get(p) or self.value_mark(p)

    def anchor(self, path: Iterable[PathElem]) -> Mark:
        """Position of the nearest existing node: its key line reads best for a mapping."""
        p = tuple(path)
        while p and p not in self.values:
            p = p[:-1]
        return self.key_mark(p) if p else self.value_mark(p)


def render_path(path: Iterable[PathElem]) -> str:
    """``('services', 2, 'dependsOn', 0)`` -> ``services[2].dependsOn[0]``."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif _PLAIN_KEY.match(elem):
            out += f".{elem}" if out else elem
        else:
            out += f"[{json.dumps(elem)}]"
    return out


class _Position(Protocol):
    """A PyYAML mark, from the pure-Python or the libyaml parser (0-based)."""

    line: int
    column: int


def _mark(mark: _Position | None) -> Mark:
    if mark is None:
        return START
    return Mark(mark.line + 1, mark.column + 1)


class _Walker:
    """Records positions and duplicate keys while walking a composed node graph."""

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.values: dict[FieldPath, Mark] = {}
        self.keys: dict[FieldPath, Mark] = {}
        self.problems: list[Diagnostic] = []
        self._active: set[int] = set()

    def walk(self, node: yaml.Node, path: FieldPath) -> None:
        self.values[path] = _mark(node.start_mark)
        # Recursive aliases are refused before this walk (_over_budget); this guard
        # keeps the walk finite should one ever get through.
        if id(node) in self._active:
            return
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._walk_mapping(node, path)
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    self.walk(item, (*path, index))
        finally:
            self._active.discard(id(node))

    def _walk_mapping(self, node: yaml.MappingNode, path: FieldPath) -> None:
        first_seen: dict[str, Mark] = {}
        # Duplicates are judged on the keys written here: a key overriding one
        # brought in by a `<<` merge is legitimate YAML.
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            mark = _mark(key_node.start_mark)
            if key in first_seen:
                self.problems.append(
                    Diagnostic(
                        self.file,
                        mark.line,
                        mark.column,
                        render_path((*path, key)),
                        f"duplicate key '{key}' (first defined at line {first_seen[key].line})",
                    )
                )
            else:
                first_seen[key] = mark
        self.loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self._key(key_node, path, report=False)
            if key is None:
                continue
            self.keys[(*path, key)] = _mark(key_node.start_mark)
            self.walk(value_node, (*path, key))

    def _key(self, key_node: yaml.Node, path: FieldPath, *, report: bool = True) -> str | None:
        if not isinstance(key_node, yaml.ScalarNode):
            if report:
                mark = _mark(key_node.start_mark)
                self.problems.append(
                    Diagnostic(
                        self.file,
                        mark.line,
                        mark.column,
                        render_path(path),
                        "mapping keys must be plain scalars",
                    )
                )
            return None
        return str(self.loader.construct_object(key_node))


def parse_yaml(text: str, file: str) -> tuple[Document | None, list[Diagnostic]]:
    """Parse one YAML document; syntax errors come back as diagnostics, never raised."""
    too_big = _over_budget(text, file)
    if too_big is not None:
        return None, [too_big]
    doc, problems = _parse(_Loader, text, file)
    if doc is None and _Loader is not yaml.SafeLoader:
        # PyYAML's own parser words syntax errors better than libyaml and keeps
        # messages identical whether or not libyaml is installed.
        return _parse(yaml.SafeLoader, text, file)
    return doc, problems


def _parse(
    loader_class: type[yaml.SafeLoader], text: str, file: str
) -> tuple[Document | None, list[Diagnostic]]:
    # The pure-Python reader rejects control characters while being built.
    try:
        loader = loader_class(text)
    except yaml.reader.ReaderError as exc:
        return None, [_reader_diagnostic(exc, text, file)]
    walker = _Walker(loader, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Diagnostic(file, 1, 1, "", _EMPTY)]
        walker.walk(node, ())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        return None, [*walker.problems, _syntax_diagnostic(exc, file)]
    except yaml.reader.ReaderError as exc:
        return None, [*walker.problems, _reader_diagnostic(exc, text, file)]
    except yaml.YAMLError as exc:
        return None, [*walker.problems, Diagnostic(file, 1, 1, "", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    return Document(data, walker.values, walker.keys), walker.problems


@dataclass
class _Frame:
    """An open collection while counting aliases: where it is and what it has seen."""

    mapping: bool
    anchor: str | None
    start: int
    mark: Mark
    awaiting_key: bool = True
    key: PathElem = ""
    index: int = 0


def _over_budget(text: str, file: str) -> Diagnostic | None:
    """A diagnostic when the document passes a node budget, found from parser events alone."""
    try:
        return _count_nodes(yaml.parse(text, _Loader), file)
    except yaml.YAMLError:
        return None  # _parse reports it, worded as usual


def _count_nodes(events: Iterator[yaml.Event], file: str) -> Diagnostic | None:
    sizes: dict[str, tuple[int, Mark]] = {}  # anchor -> expanded size, where it is defined
    frames: list[_Frame] = []
    trail: list[PathElem] = []
    open_anchors: dict[str, Mark] = {}  # anchors of the collections still open
    expanded = 0  # nodes of the document with every alias expanded, so far
    through = 0  # of those, nodes brought in by aliases
    for event in events:
        if isinstance(event, yaml.DocumentStartEvent):
            sizes.clear()
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = frames.pop()
            if frames:
                trail.pop()
            if frame.anchor is not None:
                sizes[frame.anchor] = (expanded - frame.start, frame.mark)
                open_anchors.pop(frame.anchor, None)
        elif isinstance(event, yaml.NodeEvent):
            elem = _place(frames, event)
            if isinstance(event, yaml.AliasEvent):
                path = (*trail, elem) if elem is not None else tuple(trail)
                if event.anchor in open_anchors:
                    # A node containing itself: no policy value is recursive, and
                    # walking such a graph can take exponential time.
                    return _recursive_diagnostic(file, event, path, open_anchors[event.anchor])
                size, defined = sizes.get(str(event.anchor), (0, START))
                expanded += size
                through += size
                if through > ALIAS_BUDGET:
                    return _bomb_diagnostic(file, event, path, size, defined)
                if expanded > NODE_BUDGET:
                    return _size_diagnostic(file, event, path)
                continue
            expanded += 1
            if expanded > NODE_BUDGET:
                return _size_diagnostic(file, event, (*trail, elem) if elem is not None else ())
            anchor = None if event.anchor is None else str(event.anchor)
            mark = _mark(event.start_mark)
            if isinstance(event, yaml.CollectionStartEvent):
                if frames:
                    trail.append("?" if elem is None else elem)
                is_mapping = isinstance(event, yaml.MappingStartEvent)
                frames.append(_Frame(is_mapping, anchor, expanded - 1, mark))
                if len(frames) > DEPTH_BUDGET:
                    return _depth_diagnostic(file, event, tuple(trail))
                if anchor is not None:
                    open_anchors[anchor] = mark
            elif anchor is not None:
                sizes[anchor] = (1, mark)
    return None


def _place(frames: list[_Frame], event: yaml.NodeEvent) -> PathElem | None:
    """The path element of a node in its parent; None for a mapping key or the root."""
    if not frames:
        return None
    frame = frames[-1]
    if not frame.mapping:
        frame.index += 1
        return frame.index - 1
    if frame.awaiting_key:
        frame.awaiting_key = False
        value = getattr(event, "value", None)
        frame.key = value if isinstance(value, str) else "?"
        return None
    frame.awaiting_key = True
    return frame.key


def _bomb_diagnostic(
    file: str, event: yaml.Event, path: FieldPath, size: int, defined: Mark
) -> Diagnostic:
    mark = _mark(event.start_mark)
    anchor = getattr(event, "anchor", "")
    return Diagnostic(
        file,
        mark.line,
        mark.column,
        render_path(path),
        f"YAML aliases expand to more than {ALIAS_BUDGET} nodes ('*{anchor}' alone repeats "
        f"{size}, anchored at line {defined.line}); refused without expanding them: "
        "write the repeated values out or share fewer, smaller anchors",
    )


def _size_diagnostic(file: str, event: yaml.Event, path: FieldPath) -> Diagnostic:
    mark = _mark(event.start_mark)
    return Diagnostic(
        file,
        mark.line,
        mark.column,
        render_path(path),
        f"the document has more than {NODE_BUDGET} YAML nodes (values, keys, lists and "
        "mappings); a policy needs far fewer: split it into several policies",
    )


def _depth_diagnostic(file: str, event: yaml.Event, path: FieldPath) -> Diagnostic:
    mark = _mark(event.start_mark)
    return Diagnostic(
        file,
        mark.line,
        mark.column,
        render_path(path),
        f"the document nests lists and mappings more than {DEPTH_BUDGET} levels deep; "
        "a policy needs far fewer",
    )


def _recursive_diagnostic(
    file: str, event: yaml.Event, path: FieldPath, defined: Mark
) -> Diagnostic:
    mark = _mark(event.start_mark)
    anchor = getattr(event, "anchor", "")
    return Diagnostic(
        file,
        mark.line,
        mark.column,
        render_path(path),
        f"recursive YAML alias: '*{anchor}' is inside the node it names "
        f"(anchored at line {defined.line}); a policy value cannot contain itself",
    )


_EMPTY = (
    "file is empty; a policy is a mapping starting with "
    "'apiVersion: convoy/v1' and 'kind: UpgradePolicy'"
)


def _reader_diagnostic(exc: yaml.reader.ReaderError, text: str, file: str) -> Diagnostic:
    before = text[: exc.position]
    line = before.count("\n") + 1
    column = exc.position - (before.rfind("\n") + 1) + 1
    character = exc.character if isinstance(exc.character, int) else 0
    return Diagnostic(
        file, line, column, "", f"character U+{character:04X} is not allowed in YAML; remove it"
    )


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, file: str) -> Diagnostic:
    mark = _mark(exc.problem_mark or exc.context_mark)
    parts = [p for p in (exc.context, exc.problem) if p]
    detail = ": ".join(parts) if parts else "invalid YAML"
    if exc.context_mark is not None and exc.problem_mark is not None and exc.context:
        context_mark = _mark(exc.context_mark)
        if context_mark != mark:
            detail = f"{exc.problem} ({exc.context} at line {context_mark.line})"
    return Diagnostic(file, mark.line, mark.column, "", f"YAML syntax error: {detail}")
