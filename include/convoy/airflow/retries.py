"""Which failures Airflow retries and which fail the task at once: one rule for every task.

The classification belongs to the error types (``retriable`` on
:class:`convoy.engines.errors.EngineError` and
:class:`convoy.rollout.errors.RolloutError`, plus ``retriable_in_revert`` on the
latter); this module only applies it. Datastore stages, local rollouts and
reverts pass the exception they caught; a rollout pod passes the error name its
JSON result carries, looked up among the rollout error classes. An error that
is neither (a driver's connection error, a kubeconfig problem, a pod that left
no result) is always left to the retries.

The error modules are imported on first use: ``convoy.engines`` pulls in the
policy models, which DAG parsing does not need here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NoReturn

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from convoy.rollout.errors import RolloutError

#: Every module that defines rollout error classes, imported before a lookup by
#: name so that the classes exist (a test keeps this list complete).
ROLLOUT_ERROR_MODULES = ("convoy.rollout.errors", "convoy.rollout.analysis")


def is_retriable(exc: BaseException, *, revert: bool = False) -> bool:
    """Whether a task that failed with ``exc`` should be left to Airflow's retries.

    ``revert`` selects the rule of rollback steps for rollout errors
    (``retriable_in_revert``); engine errors have one rule for every stage.
    """
    from convoy.engines.errors import EngineError
    from convoy.rollout.errors import RolloutError

    if isinstance(exc, RolloutError):
        return type(exc).retriable_in_revert if revert else type(exc).retriable
    if isinstance(exc, EngineError):
        return type(exc).retriable
    return True


def rollout_error_class(name: str) -> type[RolloutError] | None:
    """The rollout error class called ``name`` (as in a runner's JSON ``error``), if any.

    Derived from the subclasses of :class:`~convoy.rollout.errors.RolloutError`,
    so a new error class is known here without a list of names to keep in step.
    """
    for module in ROLLOUT_ERROR_MODULES:
        importlib.import_module(module)
    from convoy.rollout.errors import RolloutError

    pending: list[type[RolloutError]] = [RolloutError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def is_retriable_name(name: str, *, revert: bool = False) -> bool:
    """:func:`is_retriable` for an error known only by its class name (a pod's result).

    A name that is not a rollout error (``ConfigException``, an empty string...)
    stays retriable.
    """
    cls = rollout_error_class(name)
    if cls is None:
        return True
    return cls.retriable_in_revert if revert else cls.retriable


def fail(message: str, cause: BaseException | None = None) -> NoReturn:
    """Fail the task now, without the retries it has left."""
    raise AirflowFailException(message) from cause


def fail_unless_retriable(what: str, exc: BaseException, *, revert: bool = False) -> None:
    """Raise ``AirflowFailException("<what>: <exc>")`` when ``exc`` is not retriable.

    Returns when it is: the caller re-raises ``exc`` for Airflow to retry.
    """
    if not is_retriable(exc, revert=revert):
        fail(f"{what}: {exc}", exc)
