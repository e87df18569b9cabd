"""DAG file parse time for 1, 100 and 1000 policies: convoy vs Airflow's floor vs dag-factory.

Airflow kills a DAG file import after ``dagbag_import_timeout`` (30 s by
default) and then shows none of the DAGs in it, so the time to parse every
policy in one file is the number that matters. Measured in the same run:

- convoy: ``dags/convoy_policies.py`` over N generated policies (10
  services in 3 waves; kubernetes execution, so one pod step per rollout and
  per revert, a plain operator whose KubernetesPodOperator is built when the
  task runs; PythonOperators for preflight, gate, report, outcome);
- the floor: a plain DAG file building the same N DAGs (task ids, task
  groups and dependencies) with bare operators, a KubernetesPodOperator for
  each pod step (what Airflow costs whoever generates such DAGs);
- the light floor: the same with convoy's operator kinds, a bare
  ``BaseOperator`` subclass with one templated field for each pod step (what
  Airflow costs for convoy's own operators: convoy's overhead over them);
- dag-factory: the rollout shapes (no rollback) as dag-factory YAML;
- a task's start-up parse: convoy's DAG file with the parsing context of one
  task (``_AIRFLOW_PARSING_CONTEXT_DAG_ID``/``_TASK_ID``, as the task runner
  sets them), which builds only that DAG.

Each measurement runs in a fresh interpreter: Airflow and the
KubernetesPodOperator are imported first (not timed), then the DagBag of that
single file is built (timed: convoy's own imports are included), as the DAG
processor does. The repeats run in rounds, each round parsing every variant
once, so that the machine's drift over minutes slows all of them alike. Both
the wall time and the CPU time of that process are kept (medians over the
rounds): on a machine other jobs share, the wall time of whichever run met
their peak grows, while its CPU time mostly does not, so the ratios are given
for both.

    .venv/bin/python benchmarks/parse_time.py [--counts 1,100,1000] [--repeat 3] [--no-dagfactory]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "benchmarks" / "generated"
SERVICES_PER_POLICY = 10

# Three waves: s0-s3 first, s4-s6 need s0/s1, s7-s9 need the middle wave.
DEPENDS: dict[int, list[int]] = {4: [0], 5: [1], 6: [0, 1], 7: [4], 8: [5], 9: [6, 4]}


def _service_name(j: int) -> str:
    return f"svc{j}"


def convoy_policy(i: int) -> dict[str, object]:
    services = []
    for j in range(SERVICES_PER_POLICY):
        services.append(
            {
                "name": _service_name(j),
                "workload": {"kind": "Deployment", "name": f"svc{j}-deploy"},
                "containers": {"app": f"registry.example.com/p{i}/svc{j}:1.{j}.0"},
                "dependsOn": [_service_name(d) for d in DEPENDS.get(j, [])],
            }
        )
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": f"bench-{i:04d}", "owner": "bench", "tags": ["bench"]},
        "kubernetes": {
            "namespace": f"ns-{i:04d}",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        "rollout": {"maxParallel": 4},
        "services": services,
    }


def dagfactory_config(i: int) -> dict[str, object]:
    tasks: list[dict[str, object]] = [
        {
            "task_id": "preflight",
            "operator": "airflow.providers.standard.operators.empty.EmptyOperator",
        }
    ]
    for j in range(SERVICES_PER_POLICY):
        name = _service_name(j)
        tasks.append(
            {
                "task_id": f"rollout_{name}",
                "operator": "airflow.providers.cncf.kubernetes.operators.pod.KubernetesPodOperator",
                "image": "registry.example.com/convoy:0.1.0",
                "namespace": f"ns-{i:04d}",
                "name": f"rollout-{name}",
                "service_account_name": "convoy-rollout",
                "cmds": ["python", "-m", "convoy.rollout"],
                "arguments": [
                    "apply",
                    "--namespace",
                    f"ns-{i:04d}",
                    "--kind",
                    "Deployment",
                    "--name",
                    f"svc{j}-deploy",
                    "--container",
                    f"app=registry.example.com/p{i}/svc{j}:1.{j}.0",
                ],
                "do_xcom_push": True,
                "dependencies": [f"rollout_{_service_name(d)}" for d in DEPENDS.get(j, [])]
                or ["preflight"],
            }
        )
    tasks.append(
        {
            "task_id": "report",
            "operator": "airflow.providers.standard.operators.empty.EmptyOperator",
            "trigger_rule": "all_done",
            "dependencies": [f"rollout_{_service_name(j)}" for j in (2, 3, 7, 8, 9)],
        }
    )
    return {
        f"dagfactory-{i:04d}": {
            "default_args": {"owner": "bench", "start_date": "2026-01-01", "retries": 2},
            "schedule": None,
            "catchup": False,
            "max_active_runs": 1,
            "tags": ["bench"],
            "tasks": tasks,
        }
    }


def generate(count: int) -> dict[str, Path]:
    convoy_dir = GENERATED / f"convoy-{count}"
    factory_dir = GENERATED / f"dagfactory-{count}"
    for d in (convoy_dir, factory_dir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.y*ml"):
            old.unlink()
    for i in range(count):
        (convoy_dir / f"bench-{i:04d}.yaml").write_text(yaml.safe_dump(convoy_policy(i)))
        (factory_dir / f"dagfactory-{i:04d}.yml").write_text(yaml.safe_dump(dagfactory_config(i)))
    factory_dag_file = GENERATED / f"dagfactory_dags_{count}.py"
    factory_dag_file.write_text(
        textwrap.dedent(
            f"""\
            from dagfactory import load_yaml_dags

            load_yaml_dags(globals_dict=globals(), dags_folder={str(factory_dir)!r})
            """
        )
    )
    return {"convoy": convoy_dir, "dagfactory": factory_dag_file}


FLOOR_TEMPLATE = textwrap.dedent(
    """\
    import datetime as dt

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG, BaseOperator, TaskGroup

    DEPENDS = {depends!r}
    WAVES = {waves!r}
    LIGHT = {light!r}
    START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


    def noop():
        pass


    class LightPodStep(BaseOperator):
        # What convoy's pod steps are in the DAG: a plain operator with one
        # templated field, its KPO built only when the task runs.
        template_fields = ("arguments",)


    def pod(task_id, i, j):
        if LIGHT:
            op = LightPodStep(task_id=task_id)
            op.arguments = ["apply", "--name", f"svc{{j}}-deploy"]
            return op
        return KubernetesPodOperator(
            task_id=task_id,
            name=task_id.replace("_", "-"),
            namespace=f"ns-{{i:04d}}",
            image="registry.example.com/convoy:0.1.0",
            cmds=["python", "-m", "convoy.rollout"],
            arguments=["apply", "--name", f"svc{{j}}-deploy"],
        )


    for i in range({count}):
        with DAG(f"floor-{{i:04d}}", schedule=None, start_date=START, catchup=False) as dag:
            preflight = PythonOperator(task_id="preflight", python_callable=noop)
            rollouts = {{}}
            for w, members in enumerate(WAVES):
                with TaskGroup(f"wave_{{w}}"):
                    for j in members:
                        t = pod(f"rollout_svc{{j}}", i, j)
                        deps = DEPENDS.get(j)
                        t.set_upstream([rollouts[d] for d in deps] if deps else [preflight])
                        rollouts[j] = t
            with TaskGroup("rollback"):
                gate = PythonOperator(task_id="gate", python_callable=noop, trigger_rule="all_done")
                gate.set_upstream(list(rollouts.values()))
                last = [gate]
                for members in reversed(WAVES):
                    stage = [pod(f"revert_svc{{j}}", i, j) for j in reversed(members)]
                    for t in stage:
                        t.set_upstream(last)
                    last = stage
            report = PythonOperator(task_id="report", python_callable=noop, trigger_rule="all_done")
            report.set_upstream([*last, *(rollouts[j] for j in (2, 3, 7, 8, 9))])
            report >> PythonOperator(task_id="outcome", python_callable=noop)
        globals()[dag.dag_id] = dag
    """
)


def floor_file(count: int, *, light: bool = False) -> Path:
    """A DAG file building ``count`` DAGs of convoy's shape with bare operators.

    ``light``: the pod steps are plain operators as convoy's are (its KPO is
    built when the task runs), not KubernetesPodOperators.
    """
    waves: list[list[int]] = [[], [], []]
    level: dict[int, int] = {}
    for j in range(SERVICES_PER_POLICY):
        level[j] = max((level[d] + 1 for d in DEPENDS.get(j, [])), default=0)
        waves[level[j]].append(j)
    path = GENERATED / f"floor{'_light' if light else ''}_dags_{count}.py"
    path.write_text(FLOOR_TEMPLATE.format(depends=DEPENDS, waves=waves, count=count, light=light))
    return path


_CHILD = textwrap.dedent(
    """\
    import gc, json, os, sys, time
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    if os.environ.get("BENCH_GC_PAUSED"):
        gc.disable()
    start, cpu = time.perf_counter(), time.process_time()
    bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    tasks = sorted({len(d.tasks) for d in bag.dags.values()})
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "dags": len(bag.dags),
                      "errors": len(bag.import_errors), "tasks_per_dag": tasks}))
    """
)


class Variant:
    """One thing to parse: the DAG file, its environment and its parse cache."""

    def __init__(
        self, tool: str, target: Path, cache: str = "off", *, gc_paused: bool = False
    ) -> None:
        """``cache``: ``off`` (no parse cache), ``cold`` (an empty cache before every
        parse: the first parse after the policies changed, which also writes the
        entries) or ``warm`` (a cache filled by one untimed parse first: every later
        parse of the DAG processor). ``gc_paused``: the garbage collector is
        disabled for the whole parse, as convoy's DAG file does while it builds.
        """
        env = dict(os.environ)
        if gc_paused:
            env["BENCH_GC_PAUSED"] = "1"
        env.update(
            {
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
                "DO_NOT_TRACK": "1",
                "AUTO_TRACE_DAG_FACTORY": "False",
            }
        )
        self.dag_file = target
        if tool in ("convoy", "task"):
            env["CONVOY_POLICIES_DIR"] = str(target)
            env["CONVOY_EXECUTION_MODE"] = "kubernetes"
            self.dag_file = ROOT / "dags" / "convoy_policies.py"
        if tool == "task":
            env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = "bench-0000"
            env["_AIRFLOW_PARSING_CONTEXT_TASK_ID"] = "wave_0.rollout_svc0"
        # Each variant has a cache of its own, so rounds can interleave them.
        self.cache_dir = GENERATED / f"parse-cache-{tool}-{cache}"
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        env["CONVOY_PARSE_CACHE_DIR"] = "off" if cache == "off" else str(self.cache_dir)
        self.env, self.cache = env, cache
        self.runs: list[dict[str, object]] = []
        if cache == "warm":
            self.parse()

    def parse(self) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(self.dag_file)],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def timed(self) -> None:
        if self.cache == "cold":
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.runs.append(self.parse())

    def result(self) -> dict[str, object]:
        """The last run, with the median wall and CPU time of all runs."""
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        seconds = statistics.median(float(r["seconds"]) for r in self.runs)  # type: ignore[arg-type]
        cpu = statistics.median(float(r["cpu"]) for r in self.runs)  # type: ignore[arg-type]
        return {**self.runs[-1], "seconds": seconds, "cpu": cpu}


def measure_rounds(variants: dict[str, Variant], repeat: int) -> dict[str, dict[str, object]]:
    """``repeat`` rounds, each parsing every variant once, in a fresh interpreter each.

    The machine's speed drifts over minutes (other jobs, its host), and a
    ratio of two medians taken minutes apart carries that drift; a round
    measures every variant within a minute or so, so a slow spell slows
    them all alike.
    """
    for _ in range(repeat):
        for variant in variants.values():
            variant.timed()
    return {name: variant.result() for name, variant in variants.items()}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-dagfactory", action="store_true")
    args = parser.parse_args(argv)
    rows = [
        "| policies | convoy s, warm cache | convoy s, cold cache | floor s (KPO pod steps, bare) "
        "| warm / floor | warm / floor, CPU s | cold / floor "
        "| light floor s (convoy's operator kinds, bare) | warm / light floor "
        "| light floor s, GC paused | warm / light floor with GC paused "
        "| task start-up parse s (parsing context, cold) "
        "| convoy DAGs (tasks/DAG) | dag-factory s | dag-factory DAGs (tasks/DAG) "
        "| dag-factory / convoy warm | same, CPU s | dag-factory / convoy cold |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    loads = [os.getloadavg()[0]]
    for count in (int(c) for c in args.counts.split(",")):
        targets = generate(count)
        variants = {
            "convoy": Variant("convoy", targets["convoy"], cache="warm"),
            "cold": Variant("convoy", targets["convoy"], cache="cold"),
            "floor": Variant("floor", floor_file(count)),
            "light floor": Variant("floor", floor_file(count, light=True)),
            "light floor, GC paused": Variant(
                "floor", floor_file(count, light=True), gc_paused=True
            ),
            "task": Variant("task", targets["convoy"], cache="cold"),
        }
        if not args.no_dagfactory:
            variants["dag-factory"] = Variant("dagfactory", targets["dagfactory"])
        measured = measure_rounds(variants, args.repeat)
        for name, result in measured.items():
            if result["errors"] or result["dags"] != (1 if name == "task" else count):
                raise SystemExit(f"{name} at {count} policies: {result}")
        c, fl = measured["convoy"], measured["floor"]
        if c["tasks_per_dag"] != fl["tasks_per_dag"]:
            raise SystemExit(f"floor shape {fl['tasks_per_dag']} != convoy {c['tasks_per_dag']}")
        seconds = {k: float(v["seconds"]) for k, v in measured.items()}  # type: ignore[arg-type]
        cpu = {k: float(v["cpu"]) for k, v in measured.items()}  # type: ignore[arg-type]
        f = measured.get("dag-factory")
        factory = (
            f"| {seconds['dag-factory']:.2f} | {f['dags']} ({f['tasks_per_dag']}) "
            f"| {seconds['dag-factory'] / seconds['convoy']:.2f} "
            f"| {cpu['dag-factory'] / cpu['convoy']:.2f} "
            f"| {seconds['dag-factory'] / seconds['cold']:.2f} |"
            if f
            else "| not measured | | | | |"
        )
        light, paused = seconds["light floor"], seconds["light floor, GC paused"]
        rows.append(
            f"| {count} | {seconds['convoy']:.2f} | {seconds['cold']:.2f} "
            f"| {seconds['floor']:.2f} | {seconds['convoy'] / seconds['floor']:.2f} "
            f"| {cpu['convoy'] / cpu['floor']:.2f} | {seconds['cold'] / seconds['floor']:.2f} "
            f"| {light:.2f} | {seconds['convoy'] / light:.2f} "
            f"| {paused:.2f} | {seconds['convoy'] / paused:.2f} "
            f"| {seconds['task']:.3f} | {c['dags']} ({c['tasks_per_dag']}) {factory}"
        )
        print(rows[-1], flush=True)
        loads.append(os.getloadavg()[0])
    rows += [
        "",
        f"1-minute load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores "
        "(read before the first and after each row).",
    ]
    table = "\n".join(rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
