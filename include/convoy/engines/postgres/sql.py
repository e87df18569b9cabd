"""SQL helpers: safe identifiers, DSN redaction, statement splitting, touched tables.

Identifiers from the policy (schemas, tables, keys, columns) must match
:data:`IDENTIFIER` and are then quoted with :class:`psycopg.sql.Identifier`;
anything else raises :class:`~convoy.engines.errors.UnsafeIdentifier`. SQL
*expressions* in ``where``/``set`` are written by the policy author (like a
migration); each must parse as exactly one expression
(:mod:`convoy.policy.sql_expressions`) and is then passed through, the
data-interval placeholders in it becoming bound parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from convoy.engines.errors import UnsafeExpression, UnsafeIdentifier
from convoy.policy.sql_expressions import INTERVAL_PLACEHOLDER, Slot, expression_problem

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
NO_TRANSACTION_MARKER = "-- convoy:no-transaction"
Conn = psycopg.Connection[TupleRow]
_SECRET_KEYS = frozenset({"password", "sslpassword", "passfile", "sslkey"})


@dataclass(frozen=True, order=True)
class TableName:
    """A validated ``schema.table``; ``schema`` is ``None`` until resolved."""

    schema: str | None
    name: str

    @property
    def ident(self) -> sql.Composable:
        if self.schema is None:
            return sql.Identifier(self.name)
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


def identifier(value: str, field: str) -> str:
    """``value`` if it is a plain identifier, else :class:`UnsafeIdentifier`."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise UnsafeIdentifier(str(value), field)
    return value


def table_name(value: str, field: str) -> TableName:
    """Parse ``table`` or ``schema.table`` (both parts plain identifiers)."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) not in (1, 2):
        raise UnsafeIdentifier(str(value), field)
    if not all(IDENTIFIER.match(part) for part in parts):
        raise UnsafeIdentifier(str(value), field)
    return TableName(parts[0], parts[1]) if len(parts) == 2 else TableName(None, parts[0])


def relation_exists(conn: Conn, schema: str, name: str) -> bool:
    """Whether ``schema.name`` is a table (or other relation) now."""
    row = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", [schema, name]
    ).fetchone()
    return bool(row and row[0])


def redact_dsn(conninfo: str) -> str:
    """The connection string without its password (for logs and reports)."""
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return "<unparseable connection string>"
    safe = {k: ("***" if k in _SECRET_KEYS else v) for k, v in params.items() if v is not None}
    return make_conninfo("", **{k: str(v) for k, v in safe.items()})


def author_expression(text: str, slot: Slot, field: str) -> tuple[str, set[str]]:
    """One author expression (``where`` or a ``set`` value) ready to be put in parentheses.

    Checked again here, as at load time, so a plan record or a model built
    without the loader cannot carry a second statement into the database.
    The text ends with a newline so a trailing ``--`` comment cannot swallow
    the closing parenthesis and whatever convoy puts after it.
    """
    problem = expression_problem(text, slot)
    if problem is not None:
        raise UnsafeExpression(field, problem.located(text))
    rendered, used = render_author_sql(text)
    return rendered + "\n", used


def render_author_sql(text: str) -> tuple[str, set[str]]:
    """Author SQL ready for psycopg with named parameters.

    ``%`` is escaped and ``{{ data_interval_start }}``/``{{ data_interval_end }}``
    become ``%(data_interval_start)s``/``%(data_interval_end)s``, never pasted values.
    Returns the text and the parameter names used.
    """
    used: set[str] = set()

    def _param(match: re.Match[str]) -> str:
        used.add(match.group(1))
        return f"%({match.group(1)})s"

    escaped = text.replace("%", "%%")
    return INTERVAL_PLACEHOLDER.sub(_param, escaped), used


def is_no_transaction(script: str) -> bool:
    """Whether the first line of a migration is ``-- convoy:no-transaction``."""
    first = script.lstrip("\ufeff").split("\n", 1)[0].strip()
    return first.lower().replace(" ", "") == NO_TRANSACTION_MARKER.replace(" ", "")


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)
  | (?P<string>[EeBbXxUu]?&?'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<semicolon>;)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokenize(script: str) -> Iterator[Token]:
    """Tokens of a SQL script: words, quoted names, strings, ``;``, other chars.

    Handles ``--`` and nested ``/* */`` comments, ``'...'`` (with ``E''``
    prefixes) and ``$tag$...$tag$`` strings, so semicolons inside them do not
    split statements. Comments and whitespace come out as kinds ``ws``/``comment``.
    """
    pos, n = 0, len(script)
    while pos < n:
        m = _TOKEN.match(script, pos)
        if m is None:  # pragma: no cover - "other" matches any character
            break
        kind = m.lastgroup or "other"
        if kind == "block_comment":
            depth, i = 1, m.end()
            while i < n and depth:
                if script.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif script.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            yield Token("comment", script[pos:i])
            pos = i
            continue
        if kind == "dollar":
            tag = m.group()
            end = script.find(tag, m.end())
            end = n if end < 0 else end + len(tag)
            yield Token("string", script[pos:end])
            pos = end
            continue
        yield Token("comment" if kind == "line_comment" else kind, m.group())
        pos = m.end()


def split_statements(script: str) -> list[str]:
    """The statements of a script (comments kept inside, empty ones dropped)."""
    statements: list[str] = []
    current: list[str] = []
    meaningful = False
    for tok in tokenize(script):
        if tok.kind == "semicolon":
            if meaningful:
                statements.append("".join(current).strip())
            current, meaningful = [], False
            continue
        current.append(tok.text)
        if tok.kind not in ("ws", "comment"):
            meaningful = True
    if meaningful:
        statements.append("".join(current).strip())
    return statements


def _unquote(tok: Token) -> str:
    if tok.kind == "quoted":
        return tok.text[1:-1].replace('""', '"')
    return tok.text.lower()


def _read_name(words: list[Token], i: int) -> tuple[TableName | None, int]:
    """A possibly qualified name starting at ``words[i]``; returns it and the next index."""
    if i >= len(words) or words[i].kind not in ("word", "quoted"):
        return None, i
    parts = [_unquote(words[i])]
    i += 1
    while i + 1 < len(words) and words[i].text == "." and words[i + 1].kind in ("word", "quoted"):
        parts.append(_unquote(words[i + 1]))
        i += 2
    if len(parts) == 1:
        return TableName(None, parts[0]), i
    return TableName(parts[-2], parts[-1]), i


def _skip(words: list[Token], i: int, *keywords: str) -> int:
    while i < len(words) and words[i].kind == "word" and words[i].text.lower() in keywords:
        i += 1
    return i


def touched_tables(script: str) -> tuple[set[TableName], set[TableName]]:
    """Tables a script changes, best effort: ``(touched, created)`` (may overlap).

    Recognised statement heads (keywords case-insensitive, names may be quoted
    or schema-qualified, ``IF [NOT] EXISTS``/``ONLY`` skipped):
    ``ALTER TABLE t``, ``UPDATE t``, ``DELETE FROM t``, ``INSERT INTO t``,
    ``DROP TABLE a, b``, ``TRUNCATE [TABLE] a, b``,
    ``CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON t``,
    ``CREATE [UNLOGGED] TABLE [IF NOT EXISTS] t`` (reported as *created*).
    Names inside ``DO`` blocks, functions or dynamic SQL are not seen: declare
    such tables in the datastore's ``snapshotTables``.
    """
    touched: set[TableName] = set()
    created: set[TableName] = set()
    for statement in split_statements(script):
        words = [t for t in tokenize(statement) if t.kind not in ("ws", "comment")]
        lowered = [t.text.lower() if t.kind == "word" else "" for t in words]
        # data-changing statements may sit inside WITH ...: look at every keyword
        for j, word in enumerate(lowered):
            name: TableName | None = None
            if word == "update" and (j == 0 or lowered[j - 1] in ("", "as")):
                name, _ = _read_name(words, _skip(words, j + 1, "only"))
            elif word == "delete" and j + 1 < len(words) and lowered[j + 1] == "from":
                name, _ = _read_name(words, _skip(words, j + 2, "only"))
            elif word == "insert" and j + 1 < len(words) and lowered[j + 1] == "into":
                name, _ = _read_name(words, j + 2)
            if name is not None:
                touched.add(name)
        head = lowered[:2]
        if head == ["alter", "table"]:
            name, _ = _read_name(words, _skip(words, 2, "if", "exists", "only"))
            if name:
                touched.add(name)
        elif head == ["drop", "table"] or (head and head[0] == "truncate"):
            i = _skip(words, 1, "table", "if", "exists", "only")
            while True:
                name, i = _read_name(words, _skip(words, i, "only"))
                if name is None:
                    break
                touched.add(name)
                if i < len(words) and words[i].text == ",":
                    i += 1
                    continue
                break
        elif head and head[0] == "create":
            i = _skip(words, 1, "or", "replace", "unique", "unlogged", "temporary", "temp")
            if i < len(words) and lowered[i] == "index":
                on = next((k for k in range(i, len(words)) if lowered[k] == "on"), None)
                if on is not None:
                    name, _ = _read_name(words, _skip(words, on + 1, "only"))
                    if name:
                        touched.add(name)
            elif i < len(words) and lowered[i] == "table":
                name, _ = _read_name(words, _skip(words, i + 1, "if", "not", "exists"))
                if name:
                    created.add(name)
    return touched, created
