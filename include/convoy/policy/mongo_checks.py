"""Mongo transform documents: update operators, pipeline stages, no server-side JavaScript."""

from __future__ import annotations

from typing import Any

from convoy.policy.names import suggest
from convoy.policy.reporter import Reporter
from convoy.policy.source import FieldPath
from convoy.policy.templates import check_templates

# These run JavaScript inside mongod; refused so a policy cannot execute code there.
JAVASCRIPT_OPERATORS = frozenset({"$where", "$function", "$accumulator"})
UPDATE_OPERATORS = frozenset(
    {
        "$currentDate",
        "$inc",
        "$min",
        "$max",
        "$mul",
        "$rename",
        "$set",
        "$setOnInsert",
        "$unset",
        "$addToSet",
        "$pop",
        "$pull",
        "$push",
        "$pullAll",
        "$bit",
    }
)
# The only stages MongoDB accepts in an update pipeline.
PIPELINE_STAGES = frozenset(
    {"$addFields", "$set", "$project", "$unset", "$replaceRoot", "$replaceWith"}
)


def check_mongo_filter(reporter: Reporter, path: FieldPath, value: Any) -> None:
    _walk(reporter, path, value, templates_allowed=True)


def check_mongo_update(reporter: Reporter, path: FieldPath, value: Any) -> None:
    if isinstance(value, dict):
        if not value:
            reporter.error(path, "update must not be empty")
        for key in value:
            if not str(key).startswith("$"):
                reporter.error(
                    (*path, key),
                    f"'{key}' is not an update operator; an update document uses only "
                    f"operators, e.g. {{$set: {{{key}: ...}}}}",
                    at_key=True,
                )
            elif key not in UPDATE_OPERATORS and key not in JAVASCRIPT_OPERATORS:
                reporter.error(
                    (*path, key),
                    f"unknown update operator '{key}'{suggest(key, UPDATE_OPERATORS)}",
                    at_key=True,
                )
    elif isinstance(value, list):
        if not value:
            reporter.error(path, "update pipeline must not be empty")
        for index, stage in enumerate(value):
            _check_stage(reporter, (*path, index), stage)
    _walk(reporter, path, value, templates_allowed=False)


def _check_stage(reporter: Reporter, path: FieldPath, stage: Any) -> None:
    allowed = ", ".join(sorted(PIPELINE_STAGES))
    if not isinstance(stage, dict):
        return  # pydantic reports the type
    if len(stage) != 1:
        reporter.error(
            path, f"a pipeline stage is a mapping with exactly one stage operator ({allowed})"
        )
        return
    (name,) = stage
    if name not in PIPELINE_STAGES:
        reporter.error(
            (*path, name),
            f"'{name}' is not allowed in an update pipeline; use one of {allowed}",
            at_key=True,
        )


def _walk(reporter: Reporter, path: FieldPath, value: Any, *, templates_allowed: bool) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in JAVASCRIPT_OPERATORS:
                reporter.error(
                    (*path, key),
                    f"'{key}' runs JavaScript on the database server and is refused; "
                    "use query and aggregation operators instead",
                    at_key=True,
                )
            _walk(reporter, (*path, key), item, templates_allowed=templates_allowed)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(reporter, (*path, index), item, templates_allowed=templates_allowed)
    elif isinstance(value, str):
        check_templates(reporter, path, value, allowed=templates_allowed)
