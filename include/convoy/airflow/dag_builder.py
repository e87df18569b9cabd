"""Plan -> Airflow DAG. The only module that lays out tasks.

Shape (task ids)::

    preflight [-> approve (approval.required)]
      -> datastore_<name>.backup -> migrate -> partitions_<t> -> transform_<t> (mapped) ...
         -> validate                                              (after: [])
      -> wave_<n>.rollout_<svc>: each after its own dependsOn (waves group, never wait)
      -> datastore groups placed after wave n (after every rollout so far) -> later waves ...
      -> report -> outcome        (max_active_tasks = maxParallel)
    rollback.gate (all_done over every step) -> rollback.revert_data_<ds> (newest first)
      -> rollback.revert_<svc> (newest wave first) -> report
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup
from airflow.sdk.definitions.param import ParamsDict

from convoy.airflow import (
    alerts,
    analysis,
    approval,
    assets,
    config,
    datastores,
    gates,
    inconclusive,
    local_rollout,
    pods,
    report_task,
    runtime,
)
from convoy.airflow import preflight as preflight_task
from convoy.airflow.cheap_setattr import ConvoyPythonOperator
from convoy.plan import (
    BEFORE_ROLLOUT,
    DatastorePhase,
    Plan,
    RevertDataStep,
    RevertImagesStep,
    RolloutStep,
    build_plan,
    render_text,
)
from convoy.plan.models import Position
from convoy.policy.loader import LoadedPolicy
from convoy.policy.models import Policy
from convoy.redaction import redact

Task = Any  # an Airflow operator


def default_args(policy: Policy) -> dict[str, Any]:
    return {
        "on_failure_callback": runtime.step_failure_callback,
        "owner": redact(policy.metadata.owner),
        "retries": config.RETRIES,
        "retry_delay": config.RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": config.MAX_RETRY_DELAY,
    }


def trigger_params(plan: Plan) -> dict[str, Param]:
    return {
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Compute and report everything, change nothing.",
        ),
        "services": Param(
            [],
            type="array",
            items={"type": "string", "enum": list(plan.services)},
            uniqueItems=True,
            title="Services",
            description="Roll out only these (their dependencies are added). Empty = all.",
        ),
        "mode": Param(
            "upgrade",
            type="string",
            enum=["upgrade", "rollback"],
            title="Mode",
            description=(
                "upgrade: roll out the policy. rollback: skip every forward step and "
                "revert what the run `rollback_run_id` changed."
            ),
        ),
        "rollback_run_id": Param(
            "",
            type="string",
            title="Run to roll back",
            description="mode=rollback only: the id of the run whose changes to revert.",
        ),
    }


def schedule(policy: Policy) -> Any:
    """The policy's ``schedule`` with *data-interval* semantics for cron expressions and presets.

    Airflow 3 turns a cron string into a ``CronTriggerTimetable`` whose runs have
    an empty data interval (start == end) unless ``create_cron_data_intervals``
    is set. Transforms filter on ``{{ data_interval_start }}``/``{{ data_interval_end }}``
    so each scheduled run and backfill processes its own period exactly once:
    convoy always uses ``CronDataIntervalTimetable`` (UTC), i.e. the run for
    ``[start, end)`` starts once ``end`` has passed. ``null``/``@once``/``@continuous``
    are passed through.
    """
    value = policy.schedule
    if value is None or value in ("@once", "@continuous"):
        return value
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(value, timezone="UTC")


def doc_md(loaded: LoadedPolicy, plan: Plan) -> str:
    policy = loaded.policy
    return redact(
        f"# {policy.metadata.name}\n\n{policy.metadata.description}\n\n"
        f"Policy file `{loaded.path.name}` (sha256 `{loaded.source_sha256[:12]}`), "
        f"plan digest `{plan.digest[:12]}`, execution "
        f"`{config.execution_mode(policy)}`.\n\n```text\n{render_text(plan)}```\n"
    )


def _step_dict(step: RolloutStep) -> dict[str, Any]:
    return {
        "service": step.service,
        "namespace": step.namespace,
        "kind": step.kind,
        "workload": step.workload,
        "containers": dict(step.containers),
    }


class _Builder:
    """Holds what every task factory needs; one instance per DAG."""

    def __init__(self, loaded: LoadedPolicy, plan: Plan) -> None:
        self.loaded = loaded
        self.plan = plan
        self.settings = loaded.policy.kubernetes
        self.mode = config.execution_mode(loaded.policy)
        self.pod_spec = pods.pod_spec(plan, self.settings)
        self.policy_path = str(loaded.path.resolve())
        self.datastores = {ds.name: ds for ds in loaded.policy.datastores}
        self.apply_ids: dict[str, str] = {}
        self.datastore_ids: list[str] = []
        self.group_ids: dict[str, list[str]] = {}
        self.mapped_ids: list[str] = []
        self.wave_analysis_ids: list[str] = []

    # -- forward path ------------------------------------------------------------
    def rollout_task(self, step: RolloutStep) -> Task:
        if self.mode == "kubernetes":
            analysis.require_pod_secrets(self.loaded.policy)
            pod = pods.rollout_pod(self.pod_spec, self.plan, step)
            pod.outlets = assets.workload_assets(step)
            return pod
        verified = analysis.rollout_kwargs(self.loaded.policy, step.service)
        return self._verified_operator(bool(verified))(
            task_id=config.rollout_task_id(step.service),
            python_callable=local_rollout.rollout_local,
            op_kwargs={
                "step": _step_dict(step),
                "conn_id": self.settings.conn_id,
                "in_cluster": self.settings.in_cluster,
                "deadline_seconds": self.plan.deadline_seconds,
                **verified,
            },
            trigger_rule="none_failed",
            pool=config.rollout_pool(),
            outlets=assets.workload_assets(step),
        )

    def _verified_operator(self, verified: bool) -> type[ConvoyPythonOperator]:
        """The operator of a step: one that can park for an approval when its analyses can.

        With ``approval.required`` an inconclusive analysis waits for the
        approvers (:mod:`convoy.airflow.inconclusive`); other DAGs keep plain
        ``ConvoyPythonOperator`` s.
        """
        if verified and self.plan.approval is not None:
            return inconclusive.VerifiedStepOperator
        return ConvoyPythonOperator

    def _stage_task(self, phase: DatastorePhase, stage: str, **extra: Any) -> Task:
        callables = {
            "backup": datastores.backup,
            "migrate": datastores.migrate,
            "validate": datastores.validate,
        }
        task = ConvoyPythonOperator(
            task_id=stage,
            python_callable=callables[stage],
            op_kwargs={"datastore": phase.datastore},
            trigger_rule="none_failed",
            **extra,
        )
        return task

    def _transform_tasks(self, phase: DatastorePhase) -> list[Task]:
        """``partitions_<t> -> transform_<t>`` (mapped over the partitions), per transform."""
        ds = self.datastores[phase.datastore]
        tasks: list[Task] = []
        for t in ds.transforms:
            kwargs = {
                "datastore": phase.datastore,
                "transform": t.name,
            }
            parts = ConvoyPythonOperator(
                task_id=config.partitions_task_id(t.name),
                python_callable=datastores.partitions,
                op_kwargs=kwargs,
                trigger_rule="none_failed",
            )
            # One task instance per key range; an empty list expands to nothing
            # (the mapped task is skipped and none_failed lets the next stage run).
            mapped = ConvoyPythonOperator.partial(
                task_id=config.transform_task_id(t.name),
                python_callable=datastores.transform,
                op_kwargs=kwargs,
                trigger_rule="none_failed",
                outlets=assets.transform_assets(ds, t.name),
            ).expand(op_args=parts.output)
            self.mapped_ids.append(mapped.task_id)
            tasks += [parts, mapped]
        return tasks

    def datastore_group(self, phase: DatastorePhase) -> TaskGroup | None:
        if not phase.steps:
            return None
        ds = self.datastores[phase.datastore]
        ids: list[str] = []
        with TaskGroup(config.datastore_group_id(phase.datastore)) as group:
            chain: list[Task] = []
            for ds_step in phase.steps:
                if ds_step.stage == "transform":
                    chain += self._transform_tasks(phase)
                elif ds_step.stage == "migrate":
                    chain.append(
                        self._stage_task(phase, "migrate", outlets=assets.datastore_assets(ds))
                    )
                else:
                    chain.append(self._stage_task(phase, ds_step.stage))
            for upstream, downstream in itertools.pairwise(chain):
                upstream >> downstream
            ids = [task.task_id for task in chain]
        self.datastore_ids += ids
        self.group_ids[phase.datastore] = ids
        return group

    def forward(self, start: Task) -> list[Any]:
        """Lay out rollouts and datastore phases after ``start``; return the last tasks.

        A rollout follows the rollouts of its own ``dependsOn`` and the latest
        datastore phase before its wave (or ``start``), nothing else: waves
        group the tasks, they are no barriers, so no service waits for an
        unrelated one (the run's ``max_active_tasks`` caps them at
        ``maxParallel``). A datastore phase placed after wave *n* follows every
        rollout since the previous phase (through the last ones of their
        chains), and the rollouts after it follow the phase.
        """
        barrier: list[Any] = [start]
        barrier_wave = 0  # the first wave after ``barrier``
        wave_of: dict[str, int] = {}
        tasks: dict[str, Task] = {}
        open_ends: dict[str, Task] = {}  # rollouts since the barrier that nothing follows yet

        def phases(position: Position) -> list[Any]:
            return [g for p in self.plan.phases_at(position) if (g := self.datastore_group(p))]

        def close(groups: list[Any]) -> None:
            nonlocal barrier, open_ends
            for upstream in open_ends.values() or barrier:
                upstream >> groups
            barrier, open_ends = groups, {}

        if groups := phases(BEFORE_ROLLOUT):
            close(groups)
        for wave in self.plan.waves:
            with TaskGroup(config.wave_group_id(wave.index)):
                for step in wave.steps:
                    task = self.rollout_task(step)
                    self.apply_ids[step.service] = task.task_id
                    tasks[step.service] = task
                    wave_of[step.service] = wave.index
                    # Dependencies before the barrier are implied by it.
                    deps = [tasks[d] for d in step.depends_on if wave_of[d] >= barrier_wave]
                    task.set_upstream(deps or barrier)
                    for d in step.depends_on:
                        open_ends.pop(d, None)
                    open_ends[step.service] = task
                checked = self.wave_analysis_task(wave.index)
            if checked is not None:  # rollout.waveAnalysis: the wave proves itself first
                close([checked])
                barrier_wave = wave.index + 1
            if groups := phases(wave.index):
                close(groups)
                barrier_wave = wave.index + 1
        return list(open_ends.values()) or barrier

    def wave_analysis_task(self, wave: int) -> Task | None:
        """``wave_<n>.analysis`` (``rollout.waveAnalysis``): later waves and phases follow it."""
        if not self.loaded.policy.rollout.wave_analysis:
            return None
        if self.mode == "kubernetes":
            pod = pods.wave_analysis_pod(self.pod_spec, wave)
            self.wave_analysis_ids.append(pod.task_id)
            return pod
        task = self._verified_operator(True)(
            task_id=analysis.WAVE_TASK_ID,
            python_callable=analysis.wave_analysis,
            op_kwargs={
                "wave": wave,
                "conn_id": self.settings.conn_id,
                "in_cluster": self.settings.in_cluster,
            },
            trigger_rule="none_failed",
            retries=0,
        )
        self.wave_analysis_ids.append(task.task_id)
        return task

    # -- rollback ------------------------------------------------------------------
    def revert_images_task(self, undo: RevertImagesStep) -> Task:
        step = self.plan.step(undo.service)
        apply_id = self.apply_ids[undo.service]
        if self.mode == "kubernetes":
            return pods.revert_pod(self.pod_spec, self.plan, step, apply_id)
        return ConvoyPythonOperator(
            task_id=config.revert_task_id(undo.service),
            python_callable=local_rollout.revert_local,
            op_kwargs={
                "step": _step_dict(step),
                "apply_task_id": apply_id,
                "conn_id": self.settings.conn_id,
                "in_cluster": self.settings.in_cluster,
                "deadline_seconds": self.plan.deadline_seconds,
            },
            trigger_rule="none_skipped",
            pool=config.rollout_pool(),
            **config.revert_task_kwargs(),
        )

    def rollback(self) -> tuple[list[Any], list[str]]:
        """The rollback group; returns its last tasks and every revert task id."""
        watched = [*self.apply_ids.values(), *self.datastore_ids, *self.wave_analysis_ids]
        ids: list[str] = []
        with TaskGroup(config.ROLLBACK_GROUP):
            gate = ConvoyPythonOperator(
                task_id=config.ROLLBACK_GATE,
                python_callable=gates.rollback_gate,
                op_kwargs={
                    "watched": watched,
                    "mapped": list(self.mapped_ids),
                    "approval_task_id": approval.TASK_ID if self.plan.approval else None,
                },
                trigger_rule="all_done",
                retries=0,
            )
            # Watch every step, not only the last wave: all_done waits for all of them.
            gate.set_upstream([self.dag.get_task(t) for t in watched])
            last: list[Any] = [gate]
            stage: list[Any] = []
            current_wave: int | None = None
            for undo in self.plan.rollback:
                if isinstance(undo, RevertDataStep):
                    task = ConvoyPythonOperator(
                        task_id=config.revert_data_task_id(undo.datastore),
                        python_callable=datastores.revert,
                        op_kwargs={
                            "datastore": undo.datastore,
                            "stage_task_ids": self.group_ids.get(undo.datastore, []),
                            "mapped_task_ids": list(self.mapped_ids),
                        },
                        trigger_rule="none_skipped",
                        pool=config.ROLLBACK_POOL,
                        **config.revert_task_kwargs(),
                    )
                    task.set_upstream(last)
                    last = [task]
                else:
                    if undo.wave != current_wave:
                        if stage:
                            last = stage
                        stage, current_wave = [], undo.wave
                    task = self.revert_images_task(undo)
                    task.set_upstream(last)
                    stage.append(task)
                ids.append(task.task_id)
            if stage:
                last = stage
        return last, ids

    dag: DAG


class PolicyDAG(DAG):
    """A policy's DAG: Airflow's, with ``test()`` that works with ``alerts.deadlineMinutes``.

    On Airflow 3.3.2, ``DAG.test()`` (and so ``airflow dags test``) schedules
    from an in-memory serialization round trip that leaves the encoded alerts
    in ``dag.deadline`` where ``DagRun.update_state`` expects ``deadline_alert``
    ids: every successful run then ends in ``AttributeError: 'dict' object has
    no attribute 'hex'`` and exit code 1 (apache/airflow#73428, fixed by the
    unreleased apache/airflow#73430). Only the scheduler evaluates deadlines and
    ``test()`` runs none, so the alert is detached for the duration of
    ``test()``: the DAG serialized into the metadata DB (parsed from the file
    again by ``test()``) keeps it, and a real scheduler still fires it
    (docs/decisions.md; ``tests/e2e/test_dags_test_deadline_e2e.py`` fails once
    the pinned Airflow no longer needs this).
    """

    def __hash__(self) -> int:
        # Airflow's hashes the DAG's task ids, among others, at every call, and
        # every dependency set during the build hashes the DAG of each task in
        # it (tens of thousands of times per parse of a big folder). Equal DAGs
        # have the same type and dag_id (``DAG.__eq__``), so this hash agrees
        # with equality, and unlike Airflow's it does not change as tasks are added.
        return hash((type(self), self.dag_id))

    def test(self, *args: Any, **kwargs: Any) -> Any:
        deadline = self.deadline
        if not deadline:
            return super().test(*args, **kwargs)
        self.deadline = None
        try:
            return super().test(*args, **kwargs)
        finally:
            self.deadline = deadline


def build_dag(loaded: LoadedPolicy, *, plan: Plan | None = None) -> DAG:
    """The DAG of one policy (``dag_id`` = ``metadata.name``)."""
    policy = loaded.policy
    plan = plan or build_plan(loaded)
    builder = _Builder(loaded, plan)
    start = dt.datetime.combine(policy.start_date, dt.time(), tzinfo=dt.UTC)
    name = policy.metadata.name
    a = policy.alerts
    extra: dict[str, Any] = {}
    if a.deadline_minutes:
        extra["deadline"] = alerts.deadline_alert(
            a.deadline_minutes, policy=name, targets=a.on_failure
        )
    with PolicyDAG(
        dag_id=policy.metadata.name,
        description=redact(policy.metadata.description) or None,
        doc_md=doc_md(loaded, plan),
        schedule=schedule(policy),
        start_date=start,
        catchup=False,
        max_active_runs=1,
        # maxParallel caps the run's running tasks (rollouts, reverts and the
        # datastore tasks between them); waves are no barriers (``forward``).
        max_active_tasks=plan.max_parallel,
        tags=sorted({"convoy", *(redact(t) for t in policy.metadata.tags)}),
        default_args=default_args(policy),
        render_template_as_native_obj=False,
        # Resolved when they fire: a connection missing at parse time never breaks the DAG.
        on_failure_callback=alerts.lazy_notifiers(a.on_failure, policy=name),
        on_success_callback=alerts.lazy_notifiers(a.on_success, policy=name),
        **extra,
    ) as dag:
        builder.dag = dag
        preflight = ConvoyPythonOperator(
            task_id=config.PREFLIGHT,
            python_callable=preflight_task.preflight,
            op_kwargs={"policy_path": builder.policy_path, "digest": plan.digest},
            retries=0,
        )
        first: Task = preflight
        if plan.approval is not None:
            # Between preflight (which resolves the run's selection) and any change.
            first = approval.PlanApprovalOperator(
                plan=plan,
                conn_id=builder.settings.conn_id,
                in_cluster=builder.settings.in_cluster,
            )
            preflight >> first
        last = builder.forward(first)
        steps = [*builder.apply_ids.values(), *builder.datastore_ids, *builder.wave_analysis_ids]
        reverts: list[str] = []
        if plan.rollback_automatic:
            rollback_last, reverts = builder.rollback()
            last = [*last, *rollback_last]
        report = ConvoyPythonOperator(
            task_id=config.REPORT,
            python_callable=report_task.report,
            op_kwargs={
                "steps": steps,
                "reverts": reverts,
                "mapped": builder.mapped_ids,
                "services": dict(builder.apply_ids),
                "datastores": {k: list(v) for k, v in builder.group_ids.items()},
                # Task arguments are stored with the DAG and shown as rendered templates:
                # an entry carrying a token is taken from the (encrypted) run record.
                "on_rollback": [redact(e) for e in a.on_rollback],
                "on_failure": [redact(e) for e in a.on_failure],
                "targets": {s.service: _step_dict(s) for w in plan.waves for s in w.steps},
                "conn_id": builder.settings.conn_id,
                "in_cluster": builder.settings.in_cluster,
                "approval_task_id": approval.TASK_ID if plan.approval else None,
                "datastore_names": [d.name for d in policy.datastores],
            },
            trigger_rule="all_done",
            retries=0,
        )
        report.set_upstream(last)
        final = ConvoyPythonOperator(
            task_id=config.OUTCOME,
            python_callable=gates.outcome,
            trigger_rule="all_done",
            retries=0,
        )
        report >> final
    # The trigger form's params are attached once the tasks exist: Airflow
    # deep-copies the DAG's params into every operator at every wrapped
    # ``__init__`` level (a third of the DAG file's parse time), while at run time
    # the task's params are merged with the DAG's anyway (``process_params``).
    dag.params = ParamsDict(trigger_params(plan))
    return dag
