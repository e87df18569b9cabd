"""Load a policy file: bytes -> YAML with positions -> model + semantic checks.

Every problem in the file is collected before anything is raised, so one run of
``convoy validate`` shows them all; nothing here lets a traceback escape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from convoy.policy.checks import check_policy
from convoy.policy.errors import Diagnostic, PolicyError
from convoy.policy.files import POLICY_MAX_BYTES, FileRefused, is_inside, read_regular, real_dir
from convoy.policy.migrations import MigrationFile
from convoy.policy.models import Policy
from convoy.policy.source import Document, parse_yaml
from convoy.policy.translate import translate

if TYPE_CHECKING:
    from convoy.policy.cache import ParseCache


@dataclass(frozen=True)
class LoadedPolicy:
    """A valid policy with where it came from and what was found beside it."""

    path: Path
    policy: Policy
    source_sha256: str
    warnings: tuple[Diagnostic, ...] = field(default=())
    migrations: Mapping[str, tuple[MigrationFile, ...]] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in the policy (migrations...) resolve against."""
        return self.path.parent


def load_policy(
    path: str | Path,
    *,
    known_expectations: Collection[str] | None = None,
    cache: ParseCache | None = None,
) -> LoadedPolicy:
    """Load and fully check one policy file.

    Raises :class:`PolicyError` carrying every error (and warning) found.
    ``known_expectations`` optionally restricts expectation types to a known set.
    With ``cache`` (the DAG file's parses only, :mod:`convoy.policy.cache`), an
    unchanged file is taken from it and a fully loaded one is stored in it.
    """
    p = Path(path)
    file = str(path)
    raw = _read(p, file)
    if known_expectations is not None:
        cache = None  # entries hold what the checks found without that restriction
    if cache is not None and (hit := cache.lookup(p, file, raw)) is not None:
        return hit
    text = _decode(raw, file)
    try:
        return _load(p, file, raw, text, known_expectations, cache)
    except RecursionError:
        # PyYAML and pydantic recurse per nesting level; absurd nesting must not crash.
        raise PolicyError([Diagnostic(file, 1, 1, "", "document nests too deeply")]) from None


def _load(
    p: Path,
    file: str,
    raw: bytes,
    text: str,
    known_expectations: Collection[str] | None,
    cache: ParseCache | None = None,
) -> LoadedPolicy:
    doc, diagnostics = parse_yaml(text, file)
    if doc is None:
        raise PolicyError(diagnostics)
    if not isinstance(doc.data, dict):
        mark = doc.value_mark(())
        raise PolicyError(
            [
                *diagnostics,
                Diagnostic(
                    file,
                    mark.line,
                    mark.column,
                    "",
                    f"a policy must be a mapping at the top level, got {_shape(doc)}",
                ),
            ]
        )
    policy = _validate(doc, file, diagnostics)
    # Relative paths resolve against the directory that really holds the file,
    # as they do at run time; nothing they name may leave it.
    result = check_policy(doc, file, real_dir(p).parent, known_expectations=known_expectations)
    diagnostics.extend(result.diagnostics)
    if policy is None or any(d.severity == "error" for d in diagnostics):
        raise PolicyError(diagnostics)
    loaded = LoadedPolicy(
        path=p,
        policy=policy,
        source_sha256=hashlib.sha256(raw).hexdigest(),
        warnings=tuple(sorted(set(diagnostics))),
        migrations=MappingProxyType(dict(result.migrations)),
    )
    if cache is not None:
        cache.store(file, doc.data, loaded)
    return loaded


def discover_policies(directory: str | Path) -> list[Path]:
    """Policy files of ``directory``, sorted; ``_``/``.`` prefixed files are drafts/hidden.

    Everything named like a policy except a directory is listed, FIFOs and
    dangling links included, so that loading it reports why it is refused
    instead of the file silently going missing.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(
        p
        for p in d.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(("_", ".")) and not p.is_dir()
    )


def declared_name(path: str | Path) -> str | None:
    """``metadata.name`` of a policy file that may be invalid, read under the loader's limits.

    For naming the placeholder of a broken policy: never raises, never blocks
    on a special file and never expands an alias bomb.
    """
    p = Path(path)
    try:
        raw = _read(p, str(p))
        doc, _ = parse_yaml(_decode(raw, str(p)), str(p))
    except (PolicyError, RecursionError):
        return None
    if doc is None or not isinstance(doc.data, dict):
        return None
    metadata = doc.data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _validate(doc: Document, file: str, diagnostics: list[Diagnostic]) -> Policy | None:
    try:
        # by_name=False: only the documented camelCase keys are accepted from YAML.
        return Policy.model_validate(doc.data, by_name=False)
    except ValidationError as exc:
        diagnostics.extend(translate(exc.errors(include_url=False), doc, file))
        return None


def _read(p: Path, file: str) -> bytes:
    if p.is_dir():
        raise PolicyError([Diagnostic(file, 1, 1, "", "is a directory, not a policy file")])
    if p.is_symlink() and not is_inside(p, real_dir(p.parent)):
        # The DAG processor loads every file of the policies directory and shows
        # what it finds wrong in them: a link must not make it read other files.
        raise PolicyError([Diagnostic(file, 1, 1, "", _OUTSIDE)])
    try:
        return read_regular(p, POLICY_MAX_BYTES, "policy file")
    except FileRefused as exc:
        raise PolicyError([Diagnostic(file, 1, 1, "", str(exc))]) from None


_OUTSIDE = (
    "is a symbolic link to a file outside its directory; convoy reads a policy only "
    "from the directory that lists it (copy or move the file there)"
)


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise PolicyError(
            [Diagnostic(file, line, column, "", f"file is not valid UTF-8 (byte 0x{bad})")]
        ) from None


def _shape(doc: Document) -> str:
    if isinstance(doc.data, list):
        return "a list"
    if isinstance(doc.data, str):
        return "a string"
    return "a scalar value" if doc.data is not None else "null"
