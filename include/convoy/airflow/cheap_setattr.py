"""``BaseOperator.__setattr__`` without its per-assignment converter lookup, same behaviour.

Airflow's ``BaseOperator.__setattr__`` formats ``_convert_<name>`` and
looks it up through the whole class hierarchy on every assignment, in vain
for almost every name, and ``BaseOperator.__init__`` assigns about 65
attributes: a fifth of what building a plain operator costs, paid for every
task of every policy at each parse of the DAG file. The
class here knows its converters once, from the class, and does the rest as
Airflow does: converts, keeps the init-kwargs record and the XComArg
dependencies of template fields.
``tests/unit/airflow/test_cheap_setattr.py`` checks that an operator built
through this mixin ends up as Airflow's own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import BaseOperator

_PREFIX = "_convert_"


class CheapSetattr(BaseOperator):
    """A ``BaseOperator`` whose attribute assignment finds its converters once per class."""

    _convoy_converted: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Converters are methods of the class (Airflow defines them on BaseOperator).
        cls._convoy_converted = frozenset(
            name.removeprefix(_PREFIX) for name in dir(cls) if name.startswith(_PREFIX)
        )

    def __setattr__(self, key: str, value: Any) -> None:
        # From here on Airflow's ``BaseOperator.__setattr__``, but for the lookup.
        if key in self._convoy_converted:
            value = getattr(self, _PREFIX + key)(value)
        object.__setattr__(self, key, value)
        if self._BaseOperator__from_mapped or self._lock_for_execution:  # type: ignore[attr-defined]
            return
        init_kwargs = self._BaseOperator__init_kwargs  # type: ignore[attr-defined]
        if key in init_kwargs:
            init_kwargs[key] = value
        if self._BaseOperator__instantiated and key in self.template_fields:  # type: ignore[attr-defined]
            self._set_xcomargs_dependency(key, value)


class ConvoyPythonOperator(CheapSetattr, PythonOperator):
    """Airflow's ``PythonOperator`` with :class:`CheapSetattr`: the Python steps of convoy's DAGs.

    Preflight, the rollback gate, the report and the outcome are four tasks of
    every policy; in local execution every step is one.
    """
