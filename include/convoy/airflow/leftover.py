"""What a failed rollback left behind, and the commands to finish it by hand.

Pure functions (no Airflow, no cluster): the ``report`` task gathers the facts
and :func:`left_behind_lines` turns them into the lines of the alert and of the
run report, e.g.::

    cart: Deployment/cartservice still at server=registry.example.com/cart:2.4.0
    (revert failed); finish by hand: python -m convoy.rollout revert --namespace shop
    --kind Deployment --name cartservice --container server=registry.example.com/cart:2.3.0
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageLeftover:
    """A service whose image revert ended failed."""

    service: str
    namespace: str
    kind: str
    workload: str
    #: Images the workload runs now (``None``: could not be read).
    current: Mapping[str, str] | None = None
    #: Images to put back (``None``: the runner takes them from the workload's
    #: ``convoy.dev/previous-images`` annotation).
    previous: Mapping[str, str] | None = None
    #: A manual rollback's target run: the command then leaves the workload alone
    #: unless that run changed it last, as the failed revert would have.
    only_if_run_id: str | None = None


@dataclass(frozen=True)
class DataLeftover:
    """A datastore whose data revert ended failed."""

    datastore: str


@dataclass(frozen=True)
class Leftovers:
    dag_id: str
    #: The run whose changes are to be reverted (the run itself, or the target
    #: of a manual rollback run).
    run_id: str
    images: Sequence[ImageLeftover] = field(default_factory=tuple)
    data: Sequence[DataLeftover] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.images or self.data)


def _images(images: Mapping[str, str]) -> str:
    return ", ".join(f"{c}={i}" for c, i in sorted(images.items()))


def revert_images_command(item: ImageLeftover) -> str:
    args = [
        "python", "-m", "convoy.rollout", "revert",
        "--namespace", item.namespace, "--kind", item.kind, "--name", item.workload,
    ]  # fmt: skip
    for container, image in sorted((item.previous or {}).items()):
        args += ["--container", f"{container}={image}"]
    if item.only_if_run_id:
        args += ["--only-if-run-id", item.only_if_run_id]
    return shlex.join(args)


def revert_data_command(dag_id: str, run_id: str) -> str:
    conf = json.dumps({"mode": "rollback", "rollback_run_id": run_id})
    return shlex.join(["airflow", "dags", "trigger", dag_id, "-c", conf])


def image_line(item: ImageLeftover) -> str:
    where = f"{item.kind}/{item.workload}"
    state = f"still at {_images(item.current)}" if item.current else "in an unknown state"
    line = f"{item.service}: {where} {state} (revert failed)"
    if item.previous:
        line += f", should be back at {_images(item.previous)}"
    return f"{line}; finish by hand: {revert_images_command(item)}"


def data_line(dag_id: str, run_id: str, item: DataLeftover) -> str:
    return (
        f"{item.datastore}: data changes of run {run_id} are still in place (revert failed); "
        f"finish by hand: {revert_data_command(dag_id, run_id)}"
    )


def left_behind_lines(leftovers: Leftovers) -> list[str]:
    """One line per datastore (first: data is reverted before images) and per service."""
    lines = [data_line(leftovers.dag_id, leftovers.run_id, d) for d in leftovers.data]
    return lines + [image_line(i) for i in leftovers.images]


def left_behind_message(leftovers: Leftovers) -> str:
    """The ERROR log text / alert body of a rollback that did not finish."""
    if not leftovers:
        return ""
    head = (
        f"ROLLBACK INCOMPLETE for {leftovers.dag_id} run {leftovers.run_id}: "
        "these are left as they are and need a human:"
    )
    return "\n".join([head, *(f"- {line}" for line in left_behind_lines(leftovers))])
