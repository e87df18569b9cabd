"""The test suite's own Airflow: nothing the caller's environment points at is used.

``make`` exports ``AIRFLOW_HOME=.airflow`` (the demo's home), and a developer's
shell may carry ``AIRFLOW_CONFIG``, ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` or
connections of a real deployment. :func:`isolate` removes all of that from the
environment before anything imports Airflow and points Airflow at a private
home; :func:`watch` / :func:`changes` let the session check at its end that
what the caller's variables named is exactly as it was (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

#: Variables that carry Airflow configuration, connections, variables or state.
AIRFLOW_VARIABLE = re.compile(r"^_?AIRFLOW")
#: convoy's own state locations: reports and run records would land in the caller's.
CONVOY_STATE_VARIABLES = ("CONVOY_REPORTS_DIR", "CONVOY_RUNS_DIR", "CONVOY_DEMO_DIR")
#: Settings whose value may be a SQLite file of the caller's.
DB_VARIABLES = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__SQL_ALCHEMY_CONN")


@dataclass(frozen=True)
class CallerAirflow:
    """What the caller's environment pointed at, before :func:`isolate` removed it."""

    removed: dict[str, str]
    watched: tuple[Path, ...] = field(default=())


Snapshot = dict[str, tuple[str, int, int] | None]


@dataclass(frozen=True)
class Session:
    """The running test session's private home, and what its caller's environment named."""

    home: Path
    caller: CallerAirflow
    before: Snapshot


#: Set by ``tests/conftest.py`` before any test module is imported.
SESSION: Session | None = None


def _sqlite_file(uri: str) -> Path | None:
    match = re.match(r"^sqlite(?:\+\w+)?:///([^?]+)", uri)
    return Path(match.group(1)) if match and match.group(1) != ":memory:" else None


def isolate(environ: MutableMapping[str, str], home: Path) -> CallerAirflow:
    """Drop the caller's Airflow and convoy state variables; point Airflow at ``home``."""
    removed = {
        name: environ.pop(name)
        for name in sorted(environ)
        if AIRFLOW_VARIABLE.match(name) or name in CONVOY_STATE_VARIABLES
    }
    watched: list[Path] = []
    for name in ("AIRFLOW_HOME", "AIRFLOW_CONFIG", *CONVOY_STATE_VARIABLES):
        if removed.get(name):
            watched.append(Path(removed[name]).expanduser().absolute())
    for name in DB_VARIABLES:
        db = _sqlite_file(removed.get(name, ""))
        if db is not None:
            watched.extend(db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm"))
    environ["AIRFLOW_HOME"] = str(home)
    # A caller home that contains the private one (AIRFLOW_HOME=/tmp) changes by design.
    watched = [w for w in watched if not home.absolute().is_relative_to(w)]
    return CallerAirflow(removed, tuple(dict.fromkeys(watched)))


def watch(paths: Iterable[Path]) -> Snapshot:
    """Every file and directory under ``paths``: kind, size and mtime (``None``: absent)."""
    state: Snapshot = {}
    for root in paths:
        if not os.path.lexists(root):
            state[str(root)] = None
            continue
        for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            st = path.lstat()
            kind = "dir" if path.is_dir() and not path.is_symlink() else "file"
            # A directory's size is its entry table; its entries are listed themselves.
            state[str(path)] = (kind, 0 if kind == "dir" else st.st_size, st.st_mtime_ns)
    return state


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """One line per path created, removed or modified between two snapshots."""
    lines = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            lines.append(f"created: {path}")
        elif new is None:
            lines.append(f"removed: {path}")
        else:
            lines.append(f"modified: {path}")
    return lines
