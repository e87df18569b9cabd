"""YAML text -> plain data plus the line and column of every key and value.

PyYAML's composer keeps the start mark of every node; constructing the data
from the same node graph lets us map any field path back to the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from convoy.policy.errors import Diagnostic

PathElem = str | int
FieldPath = tuple[PathElem, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml parses ~10x faster; the DAG processor loads every policy within its
# import timeout, so use it whenever PyYAML was built with it.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")


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


def _mark(mark: yaml.Mark | None) -> Mark:
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
        # A recursive alias would otherwise walk forever; pydantic rejects it later.
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
