"""``python -m convoy.rollout apply|verify|revert|status|analyze`` — what the rollout pod runs.

``verify`` is ``apply`` through the canary steps and analyses of a frozen spec
(``--spec-json``); ``analyze`` measures a spec's analyses on workloads it does
not change (``rollout.waveAnalysis``). Their providers come from Kubernetes
Secrets through environment variables (:mod:`convoy.rollout.providers.secrets`).

The result JSON is the last line on stdout, and is also written to
``/airflow/xcom/return.json`` when ``/airflow/xcom`` exists (``CONVOY_XCOM_PATH``
overrides the file). Logs go to stderr. Exit codes: 0 success, 1 rollout
failure (the error JSON is printed, no traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from convoy.redaction import get_logger
from convoy.rollout.errors import RolloutError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_XCOM = Path("/airflow/xcom/return.json")
KINDS = ("Deployment", "StatefulSet", "DaemonSet")

log = get_logger("convoy.rollout")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with a JSON line, like every other outcome
        self.print_usage(sys.stderr)
        _emit({"error": "UsageError", "message": message}, xcom=False)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m convoy.rollout", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action in ("apply", "verify", "revert", "status", "analyze"):
        p = sub.add_parser(action)
        if action != "analyze":
            p.add_argument("--namespace", required=True)
            p.add_argument("--kind", required=True, choices=KINDS)
            p.add_argument("--name", required=True)
        p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster if available)")
        p.add_argument("--context", help="kubeconfig context")
        p.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
        p.add_argument("-v", "--verbose", action="store_true")
        if action in ("verify", "analyze"):
            p.add_argument(
                "--spec-json",
                required=True,
                help="the frozen verification as JSON (verify: canary, analyses, templates; "
                "analyze: analyses, templates, targets)",
            )
        if action == "verify":
            p.add_argument("--service", required=True, help="the policy's service name")
        if action in ("verify", "analyze"):
            p.add_argument(
                "--resume-json",
                help=f"the checkpoint an earlier {action} ended with on an inconclusive analysis "
                "(its result's checkpoint): go on from there once the analysis is approved",
            )
        if action == "analyze":
            p.add_argument("--where", default="analysis", help='e.g. "wave 1"')
            p.add_argument("--dry-run", action="store_true")
        if action in ("status", "analyze"):
            continue
        p.add_argument(
            "--container",
            action="append",
            default=[],
            metavar="NAME=IMAGE",
            help="container and image to set (repeatable)",
        )
        p.add_argument("--deadline-seconds", type=float, default=600.0)
        p.add_argument("--stall-seconds", type=float, default=30.0)
        p.add_argument("--dry-run", action="store_true")
        p.add_argument("--run-id")
        if action == "revert":
            p.add_argument(
                "--previous-json",
                help='images to restore as JSON {"container": "image"} (default: the '
                "workload's convoy.dev/previous-images annotation)",
            )
            p.add_argument(
                "--only-if-run-id",
                metavar="RUN_ID",
                help="revert only if the workload's convoy.dev/run-id annotation is RUN_ID (or "
                "--run-id, left by an earlier try of this revert); otherwise leave it alone and "
                "exit 0 with reverted false",
            )
    return parser


def _containers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in getattr(args, "container", []):
        name, sep, image = item.partition("=")
        if not sep or not name or not image:
            parser.error(f"--container must be NAME=IMAGE, got {item!r}")
        out[name] = image
    previous = getattr(args, "previous_json", None)
    if previous:
        try:
            data = json.loads(previous)
        except ValueError as exc:
            parser.error(f"--previous-json is not JSON: {exc}")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            parser.error('--previous-json must be an object {"container": "image"}')
        out = {**data, **out}
    if args.action in ("apply", "verify") and not out:
        parser.error(f"{args.action} needs at least one --container NAME=IMAGE")
    return out


def _spec(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``--spec-json`` as an object whose templates and analyses have the right shape."""
    raw = getattr(args, "spec_json", None)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        parser.error(f"--spec-json is not JSON: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("templates", {}), dict):
        parser.error('--spec-json must be an object with "templates" {name: spec}')
    for key in ("canary", "analyses", "targets"):
        if not isinstance(data.get(key, []), list):
            parser.error(f"--spec-json: {key} must be a list")
    if args.action == "analyze" and not data.get("targets"):
        parser.error("analyze needs targets in --spec-json")
    return data


def _api_client(args: argparse.Namespace) -> Any:
    from kubernetes import client, config

    in_cluster = args.in_cluster or (
        not args.kubeconfig and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )
    if in_cluster:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    return config.new_client_from_config(config_file=args.kubeconfig, context=args.context)


def _xcom_path() -> Path | None:
    override = os.environ.get("CONVOY_XCOM_PATH")
    if override:
        return Path(override)
    return DEFAULT_XCOM if DEFAULT_XCOM.parent.is_dir() else None


def _emit(payload: dict[str, Any], *, xcom: bool = True) -> None:
    text = json.dumps(payload, sort_keys=True)
    path = _xcom_path() if xcom else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _verified(runner: Any, spec: dict[str, Any]) -> Any:
    """A ``VerifiedRollout`` whose providers come from the pod's Secret variables.

    A missing Secret raises ``ProviderSecretMissing`` here, before anything changes.
    """
    from convoy.rollout.analysis import Analyzer
    from convoy.rollout.canary import VerifiedRollout
    from convoy.rollout.providers.secrets import providers_from_env

    providers = providers_from_env(dict(spec.get("templates") or {}), os.environ)
    return VerifiedRollout(runner, Analyzer(providers, log=runner.log))


def _verified_so_far(verified: Any) -> dict[str, Any]:
    """The analyses and canary steps a failed ``verify``/``analyze`` got through (the report's)."""
    if verified is None:
        return {}
    out: dict[str, Any] = {}
    if verified.analyzer.runs:
        out["analysis"] = [r.to_dict() for r in verified.analyzer.runs]
    if verified.steps:
        out["canary"] = list(verified.steps)
    return out


def _resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """``--resume-json`` as a ``Checkpoint`` (``None`` without it)."""
    raw = getattr(args, "resume_json", None)
    if not raw:
        return None
    from convoy.rollout.analysis import AnalysisRun
    from convoy.rollout.canary import Checkpoint

    try:
        if args.action == "analyze":
            data = dict(json.loads(raw))
            data["step"], data["template"] = int(data["step"]), int(data["template"])
            if not data["runs"]:
                raise ValueError("a checkpoint of an inconclusive analysis carries its runs")
            for run in data["runs"]:
                AnalysisRun.from_dict(run)  # a malformed run is a usage error, not a failure
            return data
        return Checkpoint.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        parser.error(f"--resume-json is not a checkpoint: {type(exc).__name__}: {exc}")


def _checkpoint(
    args: argparse.Namespace, spec: dict[str, Any], verified: Any, exc: Exception
) -> dict[str, Any]:
    """Where an inconclusive ``verify``/``analyze`` stopped, for a later ``--resume-json``.

    A pod cannot wait for the approver: it ends, and the task that parks for the
    decision starts the next pod from this (the same checkpoint a local task parks with).
    """
    from convoy.rollout.analysis import AnalysisInconclusive

    if verified is None or not isinstance(exc, AnalysisInconclusive):
        return {}
    if args.action == "analyze":
        from convoy.rollout.verify import analyze_checkpoint

        return {"checkpoint": analyze_checkpoint(spec["targets"], spec, verified.analyzer.runs)}
    stopped = verified.checkpoint()
    if stopped is None:
        return {}
    return {"checkpoint": {**stopped.to_dict(),
                           "runs": [r.to_dict() for r in verified.analyzer.runs]}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    containers = _containers(args, parser)
    spec = _spec(args, parser)
    resume = _resume(args, parser)
    if getattr(args, "only_if_run_id", None) == "":
        parser.error("--only-if-run-id needs a run id")
    from convoy.rollout.runner import RolloutRunner, Target  # imports the Kubernetes client

    verified: Any = None
    try:
        runner = RolloutRunner(
            _api_client(args),
            log=log,
            stall_seconds=getattr(args, "stall_seconds", 30.0),
        )
        if args.action in ("verify", "analyze"):
            verified = _verified(runner, spec)
        if args.action == "analyze":
            from convoy.rollout.verify import analyze_targets

            runs = analyze_targets(runner, verified.analyzer, spec["targets"], spec,
                                   where=args.where, dry_run=args.dry_run,
                                   resume=resume)  # fmt: skip
            _emit({"ok": True, "action": "analyze", "dryRun": args.dry_run,
                   "analysis": [r.to_dict() for r in runs]})  # fmt: skip
            return EXIT_OK
        target = Target(args.namespace, args.kind, args.name, containers)
        if args.action == "verify":
            from convoy.rollout.verify import verify_apply

            done = verify_apply(
                verified, target, spec, service=args.service,
                deadline_seconds=args.deadline_seconds, dry_run=args.dry_run, run_id=args.run_id,
                resume=resume,
            )  # fmt: skip
            # The rollout's result with the analyses and canary steps, as local tasks push them.
            _emit({"ok": True, "verified": True, **done.to_dict()})
            return EXIT_OK
        if args.action == "status":
            result = runner.status(target)
        elif args.action == "apply":
            result = runner.apply(
                target,
                deadline_seconds=args.deadline_seconds,
                dry_run=args.dry_run,
                run_id=args.run_id,
            )
        else:
            result = runner.revert(
                target,
                deadline_seconds=args.deadline_seconds,
                dry_run=args.dry_run,
                run_id=args.run_id,
                only_if_run_id=args.only_if_run_id,
            )
    except RolloutError as exc:
        log.error("%s failed: %s", args.action, exc.message)
        _emit({"action": args.action, "ok": False, **_verified_so_far(verified),
               **_checkpoint(args, spec, verified, exc), **exc.to_dict()})  # fmt: skip
        return EXIT_FAILED
    except Exception as exc:  # configuration problems (kubeconfig, context...)
        log.error("%s failed: %s: %s", args.action, type(exc).__name__, exc)
        _emit({"action": args.action, "ok": False, "error": type(exc).__name__,
               "message": str(exc)})  # fmt: skip
        return EXIT_FAILED
    payload: dict[str, Any] = {"ok": True, **result.to_dict()}
    if args.action == "revert":
        # Same shape as the revert tasks' results, which the run report reads.
        payload["reverted"] = result.status in ("complete", "noop")
        if result.status == "skipped":
            payload["reason"] = result.message
    _emit(payload)
    return EXIT_OK
