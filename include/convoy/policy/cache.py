"""A cache of checked policies: an unchanged policy file is not parsed and checked again.

Airflow's DAG processor parses the DAG file every ``min_file_process_interval``
in a fresh process, so nothing in memory survives between parses, and with a
thousand policies reading and checking them (the positional YAML parse with
its budgets, pydantic, the semantic checks) is about a fifth of the parse.
This cache keeps, on disk, what a successful load found: the policy's plain
data (as the YAML parse produced it), its warnings and a digest of the
migrations scanned beside it. On a hit the data is validated by the same
pydantic model again (exactly what the full load does with it) and the
migration folders are scanned again and must give the same digest; the YAML
parse and the checks, whose result depends only on those inputs, are skipped.

An entry is used only when all of these are unchanged: the policy file's
bytes (sha256), the path it was loaded by and its real path, the migration
folders' listings and contents, convoy's own source files (size and mtime)
and the versions of the libraries the checks use. Anything else is a miss
and the file is loaded in full. Invalid policies are never stored, so they
are reported on every parse, and neither are policies holding anything that
looks like a credential (what :mod:`convoy.redaction` would mask): an entry
must not become one more copy of it.

Entries are JSON, never pickle: reading one runs no code. The directory must
belong to the user running the parse and not be writable by others (as ssh
treats its files); otherwise the cache is not used. Whoever can write it as
that user could make a DAG differ from its policy file, which is the trust
already given to the DAG folder; preflight loads the policy file itself
(never through the cache) and refuses a run whose plan differs from the DAG's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from convoy.policy.errors import Diagnostic
from convoy.policy.files import FileRefused, read_regular, real_dir
from convoy.policy.loader import LoadedPolicy
from convoy.policy.migrations import MigrationFile, directory_problem, scan_migrations
from convoy.policy.models import Policy
from convoy.redaction import redact

#: Bumped whenever the entry layout or what a hit skips changes.
FORMAT = 1
#: Largest entry read back (a policy file may have 1 MiB; its data as JSON about as much).
ENTRY_MAX_BYTES = 8 * 1024 * 1024
#: Temporary files of interrupted writes older than this are removed when pruning.
STALE_TMP_SECONDS = 3600.0

# A date or datetime in the YAML data is stored as a one-key object with this key,
# which no YAML key can collide with unnoticed: data holding it is not cached.
_TAG = "\x00convoy:"


class _Uncacheable(Exception):
    """The data holds a value JSON cannot give back exactly (bytes, sets, non-string keys...)."""


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str) or k.startswith(_TAG):
                raise _Uncacheable(k)
            out[k] = _encode(v)
        return out
    if isinstance(value, dt.datetime):
        return {_TAG + "datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG + "date": value.isoformat()}
    raise _Uncacheable(type(value).__name__)


def _decode_object(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((key, text),) = obj.items()
        if key == _TAG + "datetime":
            return dt.datetime.fromisoformat(text)
        if key == _TAG + "date":
            return dt.date.fromisoformat(text)
    return obj


def _holds_credential(value: Any) -> bool:
    """Whether a string of ``value`` (key or value) holds what the redaction masks.

    Strings only: the policy's own field names (``key``, ``secretRef``) name
    settings, not secrets.
    """
    if isinstance(value, str):
        return redact(value) != value
    if isinstance(value, list):
        return any(_holds_credential(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_credential(k) or _holds_credential(v) for k, v in value.items())
    return False


def _library_versions() -> list[str]:
    from importlib import metadata

    versions = [sys.version]
    for dist in ("pydantic", "pydantic-core", "PyYAML", "croniter", "pglast"):
        try:
            versions.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} absent")
    import yaml

    versions.append(f"libyaml={getattr(yaml, '__with_libyaml__', False)}")
    return versions


@cache
def code_fingerprint() -> str:
    """What the result of a load depends on besides its inputs: convoy's code and the libraries.

    Size and mtime of every module of the installed convoy package (a changed
    check must not be skipped by an old entry), computed once per process.
    """
    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(json.dumps(_library_versions()).encode())
    for module in sorted(package.rglob("*.py")):
        st = module.stat()
        h.update(f"{module.relative_to(package)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _files_digest(files: Iterable[MigrationFile]) -> str:
    # repr covers every compared field (version, kind, path, checksum, has_down), not the content.
    return hashlib.sha256(repr(tuple(files)).encode()).hexdigest()


def _usable_dir(path: Path) -> str | None:
    """Why ``path`` must not hold cache entries, if it must not."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):  # lstat: a symbolic link is not a directory
        return "it is not a directory"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return "it belongs to another user"
    if st.st_mode & 0o022:
        return "other users can write to it"
    return None


@dataclass
class ParseCache:
    """The entries of the policies of one policies directory (see the module docs)."""

    directory: Path
    hits: int = 0
    misses: int = 0
    stores: int = 0
    #: Why the last lookup missed (for tests and debugging), e.g. ``"policy changed"``.
    last_miss: str = ""

    @classmethod
    def open(cls, root: str | Path, policies_dir: str | Path) -> tuple[ParseCache | None, str]:
        """The cache of ``policies_dir`` under ``root`` (created 0700), or ``None`` and why not."""
        root = Path(root)
        namespace = hashlib.sha256(str(real_dir(Path(policies_dir))).encode()).hexdigest()[:16]
        directory = root / namespace
        for d in (root, directory):  # nothing is created inside a directory others can write
            try:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                return None, f"cannot create {d} ({exc.strerror or exc})"
            problem = _usable_dir(d)
            if problem:
                return None, f"{d}: {problem}"
        return cls(directory), ""

    # -- entries ---------------------------------------------------------------------
    def _entry(self, file: str, real: Path) -> Path:
        name = hashlib.sha256(f"{file}\0{real}".encode()).hexdigest()[:40]
        return self.directory / f"{name}.json"

    @staticmethod
    def _key(file: str, real: Path, source_sha256: str) -> str:
        parts = [FORMAT, code_fingerprint(), file, str(real), source_sha256]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _miss(self, why: str) -> None:
        self.misses += 1
        self.last_miss = why

    def lookup(self, path: Path, file: str, raw: bytes) -> LoadedPolicy | None:
        """The policy loaded from ``raw`` as a full load would return it, or ``None`` (a miss)."""
        real, sha = real_dir(path), hashlib.sha256(raw).hexdigest()
        try:
            text = read_regular(self._entry(file, real), ENTRY_MAX_BYTES, "cache entry")
        except FileRefused:
            self._miss("no entry")
            return None
        try:
            entry = json.loads(text, object_hook=_decode_object)
        except ValueError:
            self._miss("unreadable entry")
            return None
        if not isinstance(entry, dict) or entry.get("key") != self._key(file, real, sha):
            self._miss("policy or code changed")
            return None
        try:
            policy = Policy.model_validate(entry["data"], by_name=False)
            warnings = tuple(Diagnostic(*w) for w in entry["warnings"])
            migrations = self._migrations(real.parent, entry["migrations"])
        except (ValidationError, KeyError, TypeError, ValueError):
            self._miss("unreadable entry")
            return None
        if migrations is None:
            self._miss("migrations changed")
            return None
        self.hits += 1
        return LoadedPolicy(
            path=path,
            policy=policy,
            source_sha256=sha,
            warnings=warnings,
            migrations=MappingProxyType(migrations),
        )

    @staticmethod
    def _migrations(
        base_dir: Path, stored: list[list[Any]]
    ) -> dict[str, tuple[MigrationFile, ...]] | None:
        """The migrations scanned again as the checks scan them; ``None`` if they changed."""
        out: dict[str, tuple[MigrationFile, ...]] = {}
        for name, scanned in stored:
            if scanned is None:
                out[name] = ()
                continue
            relative, kind, digest = scanned
            if directory_problem(base_dir, relative) is not None:
                return None
            files, problems = scan_migrations(base_dir / relative, kind, root=base_dir)
            if problems or _files_digest(files) != digest:
                return None
            out[name] = files
        return out

    def store(self, file: str, data: Any, loaded: LoadedPolicy) -> None:
        """Keep what a successful full load found (``data``: the YAML's); never raises."""
        try:
            encoded = _encode(data)
        except _Uncacheable:
            return
        if _holds_credential(encoded):
            # The entry would be one more copy of a credential pasted into the
            # policy, outside the DAG folder: such a policy is loaded in full.
            return
        kinds = {ds.name: (ds.migrations, ds.type) for ds in loaded.policy.datastores}
        migrations: list[list[Any]] = []
        for name, files in loaded.migrations.items():
            relative, kind = kinds.get(name, (None, "postgres"))
            scanned = None if relative is None else [relative, kind, _files_digest(files)]
            migrations.append([name, scanned])
        real = real_dir(loaded.path)
        entry = {
            "format": FORMAT,
            "key": self._key(file, real, loaded.source_sha256),
            "file": file,
            "data": encoded,
            "warnings": [
                [d.file, d.line, d.column, d.path, d.message, d.severity] for d in loaded.warnings
            ],
            "migrations": migrations,
        }
        try:
            text = json.dumps(entry, separators=(",", ":"), allow_nan=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(tmp, self._entry(file, real))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except (OSError, ValueError):
            return  # a full disk or a read-only cache only costs the next parse its time
        self.stores += 1

    def prune(self, keep: Iterable[tuple[str, Path]]) -> int:
        """Remove the entries of policy files no longer listed and stale temporary files."""
        wanted = {self._entry(file, real_dir(path)).name for file, path in keep}
        removed = 0
        now = time.time()
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0
        for name in names:
            victim = self.directory / name
            try:
                if name.startswith(".tmp-"):
                    if now - victim.stat().st_mtime < STALE_TMP_SECONDS:
                        continue
                elif not name.endswith(".json") or name in wanted:
                    continue
                victim.unlink()
                removed += 1
            except OSError:
                continue
        return removed
