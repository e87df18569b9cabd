"""The ``convoy`` command line: validate, plan, schema, render, report, settings, status, db.

Exit codes: 0 success, 1 invalid input or failed operation, 2 usage error
(``convoy status`` adds its verdicts' codes: :mod:`convoy.operate.cli`).
No traceback reaches the user unless ``CONVOY_DEBUG=1`` asks for it. What a
command prints passes through :func:`convoy.redaction.redact`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from convoy import __version__
from convoy.policy import LoadedPolicy, PolicyError, discover_policies, load_policy
from convoy.redaction import redact, redact_data

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """The command line itself is wrong (exit code 2)."""


def _policy_files(targets: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_dir():
            found = discover_policies(path)
            if not found:
                raise UsageError(f"{target}: no policy files (*.yaml, *.yml) in this directory")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{target}: no such file or directory")
    return files


def _load_one(target: str) -> LoadedPolicy:
    files = _policy_files([target])
    if len(files) != 1:
        raise UsageError(f"{target}: expected one policy file, found {len(files)}")
    return load_policy(files[0])


def _print_warnings(loaded: LoadedPolicy, err: TextIO) -> None:
    for warning in loaded.warnings:
        print(warning, file=err)


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    status = EXIT_OK
    for path in _policy_files(args.policies):
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            for diagnostic in exc.diagnostics:
                print(diagnostic, file=err)
            count = sum(1 for d in exc.diagnostics if d.severity == "error")
            print(f"{path}: invalid ({count} error{'s' if count != 1 else ''})", file=err)
            status = EXIT_INVALID
            continue
        _print_warnings(loaded, err)
        policy = loaded.policy
        print(
            f"{path}: ok ({policy.metadata.name}: {len(policy.services)} services, "
            f"{len(policy.datastores)} datastores)",
            file=out,
        )
    return status


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from convoy.plan import build_plan, render_text

    loaded = _load_one(args.policy)
    _print_warnings(loaded, err)
    services = [s for s in args.services.split(",") if s] if args.services else None
    known = {s.name for s in loaded.policy.services}
    unknown = sorted(set(services or ()) - known)
    if unknown:
        raise UsageError(f"--services: unknown service(s) {', '.join(unknown)}")
    plan = build_plan(loaded, services=services)
    if args.json:
        print(json.dumps(redact_data(plan.to_dict()), indent=2, sort_keys=True), file=out)
    else:
        print(render_text(plan), file=out)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from convoy.policy.schema import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True), file=out)
    return EXIT_OK


def _status_subjects(args: argparse.Namespace) -> list[dict[str, str]]:
    """The RoleBinding subjects of ``render rbac --status`` (kubectl's option forms)."""
    from convoy.policy import names

    subjects: list[dict[str, str]] = []
    for value in args.serviceaccount or ():
        namespace, sep, name = value.partition(":")
        if not sep:
            raise UsageError(
                f"--serviceaccount {value!r}: expected NAMESPACE:NAME, e.g. "
                "convoy:convoy-airflow-worker"
            )
        problem = names.dns_label(namespace, "--serviceaccount namespace") or names.dns_subdomain(
            name, "--serviceaccount name"
        )
        if problem:
            raise UsageError(problem)
        subjects.append({"kind": "ServiceAccount", "name": name, "namespace": namespace})
    for kind, values in (("User", args.user), ("Group", args.group)):
        for value in values or ():
            if not value.strip():
                raise UsageError(f"--{kind.lower()}: empty name")
            subjects.append({"kind": kind, "name": value})
    return subjects


def cmd_render_rbac(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from convoy.rollout.rbac import render_rbac_yaml, render_status_rbac_yaml

    subjects = _status_subjects(args)
    if subjects and not args.status:
        raise UsageError(
            "--serviceaccount, --user and --group need --status (the runner's Role is bound "
            "to the policy's kubernetes.serviceAccount)"
        )
    loaded = _load_one(args.policy)
    _print_warnings(loaded, err)
    if args.status:
        text = (
            render_status_rbac_yaml(loaded.policy, subjects)
            if subjects
            else render_status_rbac_yaml(loaded.policy)
        )
    else:
        text = render_rbac_yaml(loaded.policy)
    print(redact(text), file=out, end="")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from convoy.observe.report import default_reports_dir, find_report

    reports_dir = Path(args.reports_dir) if args.reports_dir else default_reports_dir()
    name = "report.html" if args.html else "report.md"
    try:
        path = find_report(reports_dir, args.run_id, policy=args.policy, name=name)
    except (FileNotFoundError, LookupError) as exc:
        print(f"convoy report: {exc}", file=err)
        return EXIT_INVALID
    if args.path:
        print(path, file=out)
    else:
        print(redact(path.read_text(encoding="utf-8")), file=out, end="")
    return EXIT_OK


def cmd_settings_load(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from convoy.airflow.settings import load

    if not Path(args.file).is_file():
        raise UsageError(f"{args.file}: no such file")
    load(args.file, dry_run=args.dry_run, echo=lambda line: print(line, file=out))
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns every exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convoy", description="Upgrade policies as Airflow DAGs.")
    parser.add_argument("--version", action="version", version=f"convoy {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.required = True

    validate = sub.add_parser("validate", help="check policy files; report every error")
    validate.add_argument("policies", nargs="+", metavar="POLICY", help="file or directory")
    validate.set_defaults(func=cmd_validate)

    plan = sub.add_parser("plan", help="print the ordered steps of a policy")
    plan.add_argument("policy", metavar="POLICY")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--services", help="comma-separated subset (dependencies are included)")
    plan.set_defaults(func=cmd_plan)

    schema = sub.add_parser("schema", help="print the policy JSON Schema (for editors)")
    schema.set_defaults(func=cmd_schema)

    report = sub.add_parser("report", help="print the stored report of a run")
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument("--policy", help="the policy (dag_id), when several have this run id")
    report.add_argument("--html", action="store_true", help="the HTML report instead")
    report.add_argument("--path", action="store_true", help="print the file's path only")
    report.add_argument(
        "--reports-dir", help="default: $CONVOY_REPORTS_DIR or $AIRFLOW_HOME/convoy-reports"
    )
    report.set_defaults(func=cmd_report)

    render = sub.add_parser("render", help="render Kubernetes manifests for a policy")
    render_sub = render.add_subparsers(dest="what", parser_class=_Parser, metavar="WHAT")
    render_sub.required = True
    rbac = render_sub.add_parser(
        "rbac",
        help="least-privilege RBAC for the rollout runner (--status: for convoy status "
        "and the drift check)",
    )
    rbac.add_argument("policy", metavar="POLICY")
    rbac.add_argument(
        "--status",
        action="store_true",
        help="the read-only Role and RoleBinding of `convoy status` and driftCheck instead "
        "(list of the policy's workload kinds in its namespace)",
    )
    rbac.add_argument(
        "--serviceaccount",
        action="append",
        metavar="NAMESPACE:NAME",
        help="with --status: bind this ServiceAccount (repeatable; default: the Airflow "
        "workers', convoy:convoy-airflow-worker)",
    )
    rbac.add_argument(
        "--user", action="append", metavar="NAME", help="with --status: bind this user"
    )
    rbac.add_argument(
        "--group", action="append", metavar="NAME", help="with --status: bind this group"
    )
    rbac.set_defaults(func=cmd_render_rbac)

    settings = sub.add_parser("settings", help="Airflow connections, pools and variables")
    settings_sub = settings.add_subparsers(dest="what", parser_class=_Parser, metavar="WHAT")
    settings_sub.required = True
    load = settings_sub.add_parser(
        "load", help="create or update them from an Astro CLI airflow_settings.yaml"
    )
    load.add_argument("file", nargs="?", default="airflow_settings.yaml", metavar="FILE")
    load.add_argument("--dry-run", action="store_true", help="show what would change only")
    load.set_defaults(func=cmd_settings_load)

    from convoy.operate.cli import register as register_operate

    register_operate(sub, _Parser)
    return parser


Command = Callable[[argparse.Namespace, TextIO, TextIO], int]


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func: Command = args.func
        return func(args, out, err)
    except UsageError as exc:
        print(redact(str(exc)), file=err)
        print("run 'convoy --help' for usage", file=err)
        return EXIT_USAGE
    except PolicyError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=err)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("CONVOY_DEBUG"):
            traceback.print_exc(file=err)
        print(redact(f"convoy: internal error: {type(exc).__name__}: {exc}"), file=err)
        print("set CONVOY_DEBUG=1 to see the traceback and report it as a bug", file=err)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
