"""SQL expressions of PostgreSQL transforms, checked with PostgreSQL's own parser.

A transform's ``where`` and each ``set`` value are written by the policy author
and placed by the engine inside statements convoy builds (``... WHERE (<where>)``,
``SET col = (<value>)``, and the body of the in-flight trigger). Text that is
not exactly one expression could leave that statement: ``id <= 2) OR (TRUE``
widens the update, ``TRUE); DROP TABLE x; SELECT (`` runs a second statement.

So each text is parsed by libpg_query (``pglast``) as the only expression of
a fixed statement -- ``SELECT 1 FROM t WHERE <where>`` and ``SELECT <value>``
-- and refused unless the parse tree is exactly that statement with the
author's expression in its one slot: one statement, no parenthesis closed
early, no clause added (``ORDER BY``, ``UNION``, ``LIMIT``, ``FROM``, an
alias...), no data-modifying statement inside, no ``$n`` parameter of the
author's own. The data-interval placeholders become ``$1``/``$2`` for the
parse, as they become bound parameters at run time; any other template is
parsed as ``NULL`` (the template check refuses it).

What an expression may *call* is the author's business, as in a migration:
this check is about structure, not about which functions are safe.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pglast.parser import ParseError

# pglast (libpg_query, ~0.2 s to import) is imported where an expression is
# checked: a DAG file whose policies have no ``where``/``set`` never pays for it.

INTERVAL_PLACEHOLDER = re.compile(r"\{\{\s*(data_interval_start|data_interval_end)\s*\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_PARAM_NUMBER = {"data_interval_start": 1, "data_interval_end": 2}

Slot = Literal["where", "value"]

# The statement each kind of expression is parsed in, split around the slot.
_TEMPLATES: dict[Slot, tuple[str, str]] = {
    "where": ("SELECT 1 FROM t WHERE ", "\n"),
    "value": ("SELECT ", "\n"),
}
# A harmless expression in the slot: the reference tree to compare against.
_SENTINEL = "TRUE"

# What an extra key of the parsed SELECT means to the author.
_CLAUSES = {
    "distinctClause": "DISTINCT",
    "intoClause": "INTO",
    "fromClause": "FROM",
    "whereClause": "WHERE",
    "groupClause": "GROUP BY",
    "havingClause": "HAVING",
    "windowClause": "WINDOW",
    "valuesLists": "VALUES",
    "sortClause": "ORDER BY",
    "limitOffset": "OFFSET",
    "limitCount": "LIMIT",
    "lockingClause": "FOR UPDATE/SHARE",
    "withClause": "WITH",
    "larg": "UNION/INTERSECT/EXCEPT",
    "rarg": "UNION/INTERSECT/EXCEPT",
    "op": "UNION/INTERSECT/EXCEPT",
    "limitOption": "LIMIT",
    "targetList": "a second value (',')",
}
_MODIFYING = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")


@dataclass(frozen=True)
class ExpressionProblem:
    """Why a text is not one expression; ``offset`` is a 0-based index into the text."""

    message: str
    offset: int | None = None

    def located(self, text: str) -> str:
        """The message with where in the text it happened (line:column within the text)."""
        if self.offset is None:
            return self.message
        offset = max(0, min(self.offset, len(text)))
        before = text[:offset]
        line = before.count("\n") + 1
        column = offset - (before.rfind("\n") + 1) + 1
        where = f"column {column}" if "\n" not in text else f"line {line}, column {column}"
        return f"{self.message} (at {where} of the expression)"


@dataclass(frozen=True)
class _Prepared:
    """The text with placeholders replaced, and how to map offsets back."""

    text: str
    params: dict[int, int]  # offset of each placeholder's $n in ``text`` -> offset in original
    shifts: tuple[tuple[int, int], ...]  # (offset in ``text``, delta to add) from that offset on

    def original(self, offset: int) -> int:
        delta = 0
        for start, shift in self.shifts:
            if offset >= start:
                delta = shift
        return offset + delta


def _prepare(text: str, slot: Slot) -> _Prepared:
    out: list[str] = []
    params: dict[int, int] = {}
    shifts: list[tuple[int, int]] = []
    position = 0
    length = 0
    for match in INTERVAL_PLACEHOLDER.finditer(text) if slot == "where" else ():
        out.append(text[position : match.start()])
        length += match.start() - position
        param = f"${_PARAM_NUMBER[match.group(1)]}"
        params[length] = match.start()
        out.append(param)
        length += len(param)
        shifts.append((length, match.end() - length))
        position = match.end()
    out.append(text[position:])
    # Other templates are refused by the template check; for the parse they are a NULL
    # of the same length, so that one inside a comment or string hides nothing.
    rest = _ANY_TEMPLATE.sub(lambda m: "NULL".ljust(len(m[0])), "".join(out))
    return _Prepared(rest, params, tuple(shifts))


def expression_problem(text: str, slot: Slot) -> ExpressionProblem | None:
    """``None`` if ``text`` is exactly one SQL expression for ``slot``, else why not.

    ``slot`` is ``"where"`` (a condition; may use the data-interval placeholders)
    or ``"value"`` (the new value of a ``set`` column). Other templates are
    parsed as ``NULL``; the template check reports them.
    """
    if not text.strip():
        return ExpressionProblem("must not be empty")
    from pglast.parser import ParseError, parse_sql_json

    prepared = _prepare(text, slot)
    prefix, suffix = _TEMPLATES[slot]
    statement = prefix + prepared.text + suffix
    try:
        tree = json.loads(parse_sql_json(statement))
    except ParseError as exc:
        return _syntax_problem(exc, prepared, statement, len(prefix), slot)
    stmts: list[dict[str, Any]] = tree.get("stmts", [])
    semicolon = _semicolon(prepared.text)
    if len(stmts) != 1 or semicolon is not None:
        return ExpressionProblem(
            "must be one SQL expression, not several statements: ';' ends the statement "
            "convoy builds around it",
            None if semicolon is None else prepared.original(semicolon),
        )
    select = stmts[0]["stmt"].get("SelectStmt")
    if select is None:
        return ExpressionProblem("must be one SQL expression")
    expression = _slot(select, slot)
    problem = _shape_problem(select, _reference(slot), slot)
    if problem is not None:
        return problem
    return _content_problem(expression, prepared, len(prefix))


@functools.cache
def _reference(slot: Slot) -> dict[str, Any]:
    from pglast.parser import parse_sql_json

    prefix, suffix = _TEMPLATES[slot]
    tree = json.loads(parse_sql_json(prefix + _SENTINEL + suffix))
    select: dict[str, Any] = tree["stmts"][0]["stmt"]["SelectStmt"]
    return select


def _slot(select: dict[str, Any], slot: Slot) -> Any:
    if slot == "where":
        return select.get("whereClause")
    targets = select.get("targetList") or [{}]
    return targets[0].get("ResTarget", {}).get("val")


def _without_slot(select: dict[str, Any], slot: Slot) -> dict[str, Any]:
    copy = dict(select)
    if slot == "where":
        copy.pop("whereClause", None)
    else:
        targets = copy.get("targetList") or []
        if len(targets) == 1 and "ResTarget" in targets[0]:
            # Its location moves with leading spaces or comments in the author's text.
            target = {
                k: v for k, v in targets[0]["ResTarget"].items() if k not in ("val", "location")
            }
            copy["targetList"] = [{"ResTarget": target}]
    return copy


def _shape_problem(
    select: dict[str, Any], reference: dict[str, Any], slot: Slot
) -> ExpressionProblem | None:
    got, want = _without_slot(select, slot), _without_slot(reference, slot)
    if got == want:
        return None
    if slot == "value":
        targets = select.get("targetList") or []
        if len(targets) > 1:
            return ExpressionProblem("must be one SQL expression, not a list (',')")
        if targets and targets[0].get("ResTarget", {}).get("name"):
            return ExpressionProblem("must be one SQL expression without an alias (AS ...)")
    added = [k for k in got if k not in want or got[k] != want[k]]
    names = sorted({_CLAUSES.get(k, k) for k in added if k in _CLAUSES})
    listed = ", ".join(names) or "a clause"
    return ExpressionProblem(
        f"must be one SQL expression; it adds {listed} to the statement convoy builds "
        "around it (a subquery needs its own parentheses)"
    )


def _nodes(value: Any) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                found.append((key, child))
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _content_problem(expression: Any, prepared: _Prepared, start: int) -> ExpressionProblem | None:
    for key, node in _nodes(expression):
        if key in _MODIFYING:
            verb = key.removesuffix("Stmt").upper()
            return ExpressionProblem(
                f"must not contain a data-modifying statement ({verb}); write changes in a "
                "migration"
            )
        if key == "ParamRef" and isinstance(node, dict):
            at = int(node.get("location", -1)) - start
            if at not in prepared.params:
                return ExpressionProblem(
                    "'$n' parameters are not supported; use {{ data_interval_start }} or "
                    "{{ data_interval_end }}, which convoy binds as parameters",
                    prepared.original(at) if at >= 0 else None,
                )
        if key == "A_Star":
            return ExpressionProblem("'*' is not a value; name the column or write an expression")
    return None


def _syntax_problem(
    exc: ParseError, prepared: _Prepared, statement: str, start: int, slot: Slot
) -> ExpressionProblem:
    message = " ".join((str(exc.args[0]) if exc.args else str(exc)).split())
    location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
    at = None if location is None else location - start
    if at is not None and at >= len(prepared.text):
        at = None
    near = statement[location] if location is not None and location < len(statement) else ""
    if near == ")" and at is not None and _closes_early(prepared.text, at):
        return ExpressionProblem(
            "is not one SQL expression: this ')' closes a parenthesis the expression did not "
            f"open, which would end the {'condition' if slot == 'where' else 'value'} convoy "
            "puts it in",
            prepared.original(at),
        )
    semicolon = _semicolon(prepared.text)
    if semicolon is not None:
        return ExpressionProblem(
            "must be one SQL expression, not several statements: ';' ends the statement "
            "convoy builds around it",
            prepared.original(semicolon),
        )
    if location is None or at is None:
        return ExpressionProblem(f"is not one SQL expression: {message} (incomplete expression)")
    return ExpressionProblem(f"is not one SQL expression: {message}", prepared.original(at))


def _semicolon(text: str) -> int | None:
    """Offset of the first ``;`` token (not one inside a string, identifier or comment)."""
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(text)
    except ParseError:
        return None
    return next((t.start for t in tokens if text[t.start : t.end + 1] == ";"), None)


def _closes_early(text: str, offset: int) -> bool:
    """Whether the ``)`` at ``offset`` has no ``(`` before it (quotes and comments aside)."""
    from pglast.parser import ParseError, scan

    depth = 0
    try:
        tokens = scan(text)
    except ParseError:
        return False
    for token in tokens:
        if token.start > offset:
            break
        piece = text[token.start : token.end + 1]
        if piece == "(":
            depth += 1
        elif piece == ")":
            depth -= 1
            if depth < 0:
                return token.start == offset
    return False
