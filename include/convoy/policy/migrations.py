"""Scan a migrations directory: file naming, versions, undo files, checksums.

Pure (reads files, never executes them), so engines can reuse it to compare
checksums against the migration history in the datastore.

Migration files are sent to a production database, so they must be what was
reviewed beside the policy: the directory and every file in it must resolve,
after symbolic links, inside the policy's directory (``root``), and only
regular files are read.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from convoy.policy.errors import Diagnostic
from convoy.policy.files import MIGRATION_MAX_BYTES, FileRefused, file_kind, read_regular

MigrationKind = Literal["V", "U"]
DatastoreKind = Literal["postgres", "mongo"]

_VERSION = r"(?P<version>[0-9]+(?:\.[0-9]+)*)"
_DESCRIPTION = r"(?P<description>[A-Za-z0-9][A-Za-z0-9_.-]*)"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "postgres": re.compile(rf"^(?P<kind>[VU]){_VERSION}__{_DESCRIPTION}\.sql$"),
    "mongo": re.compile(rf"^(?P<kind>V){_VERSION}__{_DESCRIPTION}\.py$"),
}
_NAMING = {
    "postgres": "V<version>__<description>.sql (or U<version>__<description>.sql for its undo)",
    "mongo": "V<version>__<description>.py with up(db) and optional down(db)",
}
# Python writes these next to imported modules; they are not migrations.
_IGNORED_DIRS = frozenset({"__pycache__"})


@dataclass(frozen=True)
class MigrationFile:
    """One migration (``V``) or undo (``U``) file.

    ``has_down`` says an undo exists: for mongo a top-level ``down`` function in
    the file, for postgres a ``U`` file with the same version.
    """

    version: tuple[int, ...]
    version_text: str
    description: str
    kind: MigrationKind
    path: Path
    checksum: str
    has_down: bool = False
    #: The bytes a run executes, frozen at preflight (``convoy.plan.record``);
    #: ``None`` when scanned from disk (the file is read when needed).
    content: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """``V2__add_status``: how the migration is named in messages and history."""
        return self.path.stem

    def read_bytes(self) -> bytes:
        """The frozen content when there is one, else the file's bytes now."""
        return self.content if self.content is not None else self.path.read_bytes()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")


def parse_version(text: str) -> tuple[int, ...]:
    """``"2024.05.01"`` -> ``(2024, 5, 1)``; trailing zeros dropped so ``1.0 == 1``."""
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def directory_problem(base_dir: Path, relative: str) -> str | None:
    """Why ``migrations: <relative>`` of a policy in ``base_dir`` cannot be used, if it cannot.

    Checked before the directory is looked at, so nothing is said about what
    lies outside the policy's directory, not even whether it exists.
    """
    if not relative.strip():
        return "must name a directory of migration files, relative to the policy file"
    if Path(relative).is_absolute():
        return (
            f"'{relative}' is an absolute path; write the directory relative to the "
            "policy file, inside the policy's directory"
        )
    root = Path(os.path.realpath(base_dir))
    if not Path(os.path.normpath(root / relative)).is_relative_to(root):
        return (
            f"'{relative}' leads out of the policy's directory; migrations must live "
            "in the directory of the policy file or below it"
        )
    if not _inside(root / relative, root):
        return (
            f"'{relative}' leads out of the policy's directory through a symbolic link; "
            "migrations must live in the directory of the policy file or below it"
        )
    directory = root / relative
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        return f"migrations directory '{relative}' {state} (paths are relative to the policy file)"
    return None


def scan_migrations(
    directory: str | Path, kind: DatastoreKind = "postgres", *, root: str | Path | None = None
) -> tuple[tuple[MigrationFile, ...], list[Diagnostic]]:
    """Migration files of ``directory`` ordered by version (V before its U) and problems.

    Diagnostics name the offending file in ``Diagnostic.file``; lines point into it
    when known (Python syntax errors), else 1:1. With ``root`` (the policy's
    directory), the directory and each file must resolve inside it.
    """
    d = Path(directory)
    real_root = Path(os.path.realpath(root)) if root is not None else None
    if real_root is not None and not _inside(d, real_root):
        return (), [_problem(d, "migrations directory is outside the policy's directory")]
    if not d.exists():
        return (), [_problem(d, "migrations directory does not exist")]
    if not d.is_dir():
        return (), [_problem(d, "migrations path is not a directory")]
    files: list[MigrationFile] = []
    problems: list[Diagnostic] = []
    for entry in sorted(d.iterdir()):
        if entry.name.startswith(".") or entry.name in _IGNORED_DIRS:
            continue
        if real_root is not None and not _inside(entry, real_root):
            problems.append(_problem(entry, _LINK_OUT))
            continue
        found, issues = _read_entry(entry, kind)
        problems.extend(issues)
        if found is not None:
            files.append(found)
    problems.extend(_version_problems(files, kind))
    return _link_undo(files, kind), problems


_LINK_OUT = (
    "is a symbolic link that leads out of the policy's directory; a migration must be "
    "a file reviewed beside the policy"
)


def _inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root)


def _read_entry(entry: Path, kind: DatastoreKind) -> tuple[MigrationFile | None, list[Diagnostic]]:
    try:
        mode = entry.stat().st_mode
    except FileNotFoundError:
        return None, [_problem(entry, "is a dangling symbolic link")]
    except OSError as exc:
        return None, [_problem(entry, f"cannot read file: {exc.strerror or exc}")]
    special = file_kind(mode)
    if special == "a directory":
        return None, [_problem(entry, "unexpected directory among migrations")]
    if special is not None:
        return None, [_problem(entry, f"is {special}, not a regular file")]
    match = _PATTERNS[kind].match(entry.name)
    if match is None:
        hint = ""
        if kind == "mongo" and entry.name.startswith("U"):
            hint = "; mongo migrations have no undo files, define down(db) in the V file instead"
        return None, [_problem(entry, f"not a migration file; name it {_NAMING[kind]}{hint}")]
    try:
        content = read_regular(entry, MIGRATION_MAX_BYTES, "migration file")
    except FileRefused as exc:
        return None, [_problem(entry, str(exc))]
    has_down = False
    issues: list[Diagnostic] = []
    if kind == "mongo":
        has_down, issues = _inspect_python(entry, content)
    migration = MigrationFile(
        version=parse_version(match["version"]),
        version_text=match["version"],
        description=match["description"],
        kind="V" if match["kind"] == "V" else "U",
        path=entry,
        checksum=hashlib.sha256(content).hexdigest(),
        has_down=has_down,
    )
    return migration, issues


def _inspect_python(path: Path, content: bytes) -> tuple[bool, list[Diagnostic]]:
    """Whether ``down`` is defined, found by parsing (never importing) the module."""
    try:
        tree = ast.parse(content, filename=path.name)
    except SyntaxError as exc:
        line, column = exc.lineno or 1, exc.offset or 1
        return False, [
            Diagnostic(str(path), line, column, "", f"line {line}: invalid Python: {exc.msg}")
        ]
    except ValueError as exc:
        return False, [_problem(path, f"invalid Python source: {exc}")]
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    issues = [] if "up" in functions else [_problem(path, "defines no top-level up(db) function")]
    return "down" in functions, issues


def _version_problems(files: Sequence[MigrationFile], kind: DatastoreKind) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    seen: dict[tuple[str, tuple[int, ...]], MigrationFile] = {}
    for f in files:
        first = seen.setdefault((f.kind, f.version), f)
        if first is not f:
            problems.append(
                _problem(f.path, f"duplicate version {f.version_text} (same as {first.path.name})")
            )
    migrations = {f.version for f in files if f.kind == "V"}
    for f in files:
        if f.kind == "U" and f.version not in migrations:
            problems.append(
                _problem(
                    f.path,
                    f"undo for version {f.version_text} has no migration V{f.version_text}__*.sql",
                )
            )
    return problems


def _link_undo(files: list[MigrationFile], kind: DatastoreKind) -> tuple[MigrationFile, ...]:
    if kind == "postgres":
        undone = {f.version for f in files if f.kind == "U"}
        files = [
            replace(f, has_down=True) if f.kind == "V" and f.version in undone else f for f in files
        ]
    return tuple(sorted(files, key=lambda f: (f.version, f.kind != "V", f.path.name)))


def _problem(path: Path, message: str) -> Diagnostic:
    return Diagnostic(str(path), 1, 1, "", message)
