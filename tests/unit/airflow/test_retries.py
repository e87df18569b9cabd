"""One retry classification: each error class says whether Airflow retries it.

The tables below are the classification; changing an error's class attribute,
or adding an error class without deciding, fails here.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from airflow.sdk.exceptions import AirflowFailException

from convoy.airflow import retries
from convoy.engines.errors import EngineError
from convoy.rollout import errors as rollout_errors
from convoy.rollout.errors import RolloutError

#: Every module that defines engine errors (imported so their classes exist).
ENGINE_ERROR_MODULES = (
    "convoy.engines.errors",
    "convoy.engines.postgres.dry_run",
    "convoy.engines.mongo.errors",
)

#: Engine errors left to Airflow's retries: another writer, throttling.
RETRIABLE_ENGINE_ERRORS = {"LockTimeout", "LockLost", "Throttled"}
#: Every engine error that fails its task at once.
FAILING_ENGINE_ERRORS = {
    "BackupFailed",
    "ChecksumMismatch",
    "FailedMigrationPresent",
    "HistoryNotEmpty",
    "InvalidMongoSpec",
    "MigrationFailed",
    "MigrationsUnreadable",
    "MissingDataInterval",
    "NoBackup",
    "NothingToRevert",
    "OutOfOrderMigration",
    "RevertIncomplete",
    "UnknownCollection",
    "UnknownTransform",
    "UnknownVersion",
    "UnsafeCollectionName",
    "UnsafeExpression",
    "UnsafeIdentifier",
    "WriteRefused",
}

#: (retried when applying, retried when reverting) of every rollout error.
ROLLOUT_ERRORS = {
    "AnalysisFailed": (False, True),
    "AnalysisInconclusive": (False, True),
    "RolloutError": (False, True),
    "ApiUnavailable": (True, True),
    "ChangedWhileWaiting": (False, True),
    "ConflictRetriesExhausted": (False, True),
    "ContainerNotFound": (False, False),
    "CrashLooping": (False, True),
    "DeadlineExceeded": (False, True),
    "Forbidden": (False, True),
    "ImagePullFailed": (False, True),
    "NothingToRevert": (False, False),
    "PodFailure": (False, True),
    "PodUnschedulable": (False, True),
    "ProviderSecretMissing": (False, True),
    "UnsupportedUpdateStrategy": (False, True),
    "WorkloadNotFound": (False, False),
}


def _subclasses(base: type[BaseException]) -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    pending = [base]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("convoy."):
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _engine_errors() -> dict[str, type[BaseException]]:
    for module in ENGINE_ERROR_MODULES:
        importlib.import_module(module)
    found = _subclasses(EngineError)
    del found["EngineError"]
    return found


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance without running ``__init__`` (the classification is per class)."""
    exc = cls.__new__(cls)
    exc.args = (f"{cls.__name__} happened",)
    return exc


def test_every_engine_error_is_classified() -> None:
    assert set(_engine_errors()) == RETRIABLE_ENGINE_ERRORS | FAILING_ENGINE_ERRORS


def test_engine_errors_retried_only_for_contention_and_throttling() -> None:
    for name, cls in _engine_errors().items():
        expected = name in RETRIABLE_ENGINE_ERRORS
        assert retries.is_retriable(_instance(cls)) is expected, name
        # Engine errors have one rule for every stage, the revert included.
        assert retries.is_retriable(_instance(cls), revert=True) is expected, name


def _rollout_modules() -> list[str]:
    import convoy.rollout

    names = [convoy.rollout.__name__]
    for info in pkgutil.walk_packages(convoy.rollout.__path__, "convoy.rollout."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
            names.append(info.name)
    return names


def test_every_rollout_error_is_classified() -> None:
    _rollout_modules()
    found = _subclasses(RolloutError)
    assert set(found) == set(ROLLOUT_ERRORS)
    # The name lookup of pod results imports every module that defines one.
    assert {cls.__module__ for cls in found.values()} == set(retries.ROLLOUT_ERROR_MODULES)


@pytest.mark.parametrize(("name", "expected"), sorted(ROLLOUT_ERRORS.items()))
def test_rollout_error_classification(name: str, expected: tuple[bool, bool]) -> None:
    cls = retries.rollout_error_class(name)
    assert cls is not None
    apply_retried, revert_retried = expected
    exc = RolloutError("boom") if cls is RolloutError else _instance(cls)
    assert retries.is_retriable(exc) is apply_retried
    assert retries.is_retriable(exc, revert=True) is revert_retried
    # A rollout pod's result names the class; the same rule applies by name.
    assert retries.is_retriable_name(name) is apply_retried
    assert retries.is_retriable_name(name, revert=True) is revert_retried


@pytest.mark.parametrize("name", ["", "ConfigException", "LockTimeout", "ValueError"])
def test_unknown_names_are_retried(name: str) -> None:
    assert retries.rollout_error_class(name) is None
    assert retries.is_retriable_name(name) is True
    assert retries.is_retriable_name(name, revert=True) is True


@pytest.mark.parametrize("exc", [OSError("connection refused"), RuntimeError("x"), KeyError("k")])
def test_other_exceptions_are_retried(exc: Exception) -> None:
    assert retries.is_retriable(exc) is True
    assert retries.is_retriable(exc, revert=True) is True
    retries.fail_unless_retriable("migrations of orders", exc)  # no raise


def test_fail_unless_retriable_names_the_step_and_keeps_the_cause() -> None:
    exc = rollout_errors.DeadlineExceeded("deadline of 600s exceeded")
    with pytest.raises(AirflowFailException, match="rollout of cart failed: deadline") as info:
        retries.fail_unless_retriable("rollout of cart failed", exc)
    assert info.value.__cause__ is exc
    retries.fail_unless_retriable("revert of cart failed", exc, revert=True)  # no raise
