"""``convoy status`` and ``convoy db info|validate|baseline|repair|backups``.

Registered into the ``convoy`` parser by :func:`register`. Connections come
from Airflow (:mod:`convoy.airflow.connections`: the policy's ``connId`` s,
``AIRFLOW_CONN_*``, secrets backends), unless a caller hands other
:class:`~convoy.operate.status.Sources`.

Exit codes of ``convoy status`` (the overall verdict, the worst item's):
0 in sync, 3 pending, 4 drift, 5 degraded, 6 unknown (something could not be
read); 1 invalid policy, 2 usage error. ``convoy db``: 0 success, 1 refused
or failed (one line on stderr: what and why), 2 usage error (unknown
datastore, bad option).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from convoy.operate import status as status_mod
from convoy.operate.model import EXIT_CODES, BackupRun, DatastoreState
from convoy.operate.status import Datastore, Sources
from convoy.policy import LoadedPolicy
from convoy.policy.models import PostgresDatastore
from convoy.redaction import redact, redact_data

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Set by tests (or an embedding program) to use other connections than Airflow's.
SOURCES: Sources | None = None


class CommandError(Exception):
    """A one-line refusal: ``convoy <command>: <message>``, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def airflow_sources() -> Sources:
    from convoy.airflow import connections

    return Sources(
        kube=connections.kube_api_client,
        postgres=connections.postgres_conninfo,
        mongo=connections.mongo_client,
    )


def _sources() -> Sources:
    return SOURCES if SOURCES is not None else airflow_sources()


def _load(args: argparse.Namespace, err: TextIO) -> LoadedPolicy:
    from convoy.cli import _load_one, _print_warnings

    loaded = _load_one(args.policy)
    _print_warnings(loaded, err)
    return loaded


def _datastores(loaded: LoadedPolicy, name: str | None, *, one: bool = False) -> list[Datastore]:
    stores = list(loaded.policy.datastores)
    if name is not None:
        found = [d for d in stores if d.name == name]
        if not found:
            known = ", ".join(d.name for d in stores) or "none"
            raise CommandError(f"unknown datastore {name!r} (policy has: {known})", EXIT_USAGE)
        return found
    if not stores:
        raise CommandError(f"policy {loaded.policy.metadata.name!r} has no datastores", EXIT_USAGE)
    if one and len(stores) > 1:
        names = ", ".join(d.name for d in stores)
        raise CommandError(f"name the datastore: one of {names}", EXIT_USAGE)
    return stores


def _json(data: Any, out: TextIO) -> None:
    print(json.dumps(redact_data(data), indent=2, sort_keys=True), file=out)


def _confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise CommandError(f"{question}: refused without --yes (stdin is not a terminal)")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CommandError(f"{question}: not confirmed, nothing changed")


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = _load(args, err)
    report = status_mod.collect(loaded, _sources())
    if args.json:
        _json(report.to_dict(), out)
    else:
        print(redact(status_mod.render_text(report)), file=out)
    return EXIT_CODES[report.verdict]


# --------------------------------------------------------------------------- db


def _states(loaded: LoadedPolicy, stores: list[Datastore]) -> list[DatastoreState]:
    sources = _sources()
    states = [status_mod.datastore(loaded, ds, sources) for ds in stores]
    for s in states:
        if s.error is not None:
            raise CommandError(f"datastore {s.name!r}: {s.error}")
    return states


def cmd_db_info(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = _load(args, err)
    states = _states(loaded, _datastores(loaded, args.datastore))
    if args.json:
        _json({"policy": loaded.policy.metadata.name, "datastores": [s.to_dict() for s in states]},
              out)  # fmt: skip
    else:
        print(redact("\n\n".join(status_mod.render_versions(s) for s in states)), file=out)
    return EXIT_OK


#: Version states ``db validate`` refuses (the next run would refuse them too).
INVALID_STATES = {
    "edited": "edited after it was applied",
    "missing": "applied, but its file is missing",
    "failed": "failed part-way (repair it)",
    "out of order": "lower than an applied version",
}


def cmd_db_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = _load(args, err)
    states = _states(loaded, _datastores(loaded, args.datastore))
    problems = [
        (s.name, v.version, v.state, INVALID_STATES[v.state], v)
        for s in states
        for v in s.versions
        if v.state in INVALID_STATES
    ]
    if args.json:
        _json(
            {
                "valid": not problems,
                "problems": [
                    {
                        "datastore": ds,
                        "version": ver,
                        "state": state,
                        "message": msg,
                        "checksum": v.checksum,
                        "file_checksum": v.file_checksum,
                    }
                    for ds, ver, state, msg, v in problems
                ],
            },
            out,
        )
    else:
        for ds, ver, _state, msg, v in problems:
            detail = (
                f" (applied {v.checksum}, file {v.file_checksum})" if v.state == "edited" else ""
            )
            print(f"{ds}: version {ver}: {msg}{detail}", file=err)
        for s in states:
            bad = sum(1 for p in problems if p[0] == s.name)
            applied = len(s.versions_in("applied", "edited", "missing"))
            print(
                f"{s.name}: {'ok' if not bad else 'invalid'} "
                f"({applied} applied, {bad} problem{'s' if bad != 1 else ''})",
                file=out,
            )
    return EXIT_OK if not problems else EXIT_FAILED


def _engine_call(
    loaded: LoadedPolicy, ds: Datastore, log: Callable[[str], None]
) -> tuple[Any, Any]:
    """(engine, context) for a maintenance call on ``ds``."""
    from convoy.engines.mongo import MongoEngine
    from convoy.engines.postgres import PostgresEngine

    sources = _sources()
    ctx = status_mod.context(loaded, ds, log=log)
    if isinstance(ds, PostgresDatastore):
        return PostgresEngine(sources.postgres(ds.conn_id), sources.pg_config), ctx
    return MongoEngine(sources.mongo(ds.conn_id), ds.database, sources.mongo_config), ctx


def _check_version(text: str) -> str:
    from convoy.policy.migrations import parse_version

    try:
        return ".".join(str(p) for p in parse_version(text))
    except ValueError:
        raise CommandError(
            f"--version {text!r}: expected dot-separated integers", EXIT_USAGE
        ) from None


def cmd_db_baseline(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = _load(args, err)
    (ds,) = _datastores(loaded, args.datastore, one=True)
    version = _check_version(args.version)
    _confirm(f"baseline {ds.name} ({ds.type}) at version {version}", args.yes)
    lines: list[str] = []
    engine, ctx = _engine_call(loaded, ds, lines.append)
    if isinstance(ds, PostgresDatastore):
        engine.baseline(ctx, version, args.description)
        done = [f"baseline at version {version}"]
    else:
        from convoy.operate import mongo

        done = mongo.baseline(
            engine.client, ds.database, ctx, version, engine.config, args.description
        )
    for line in done:
        print(f"{ds.name}: {line}", file=out)
    return EXIT_OK


def cmd_db_repair(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = _load(args, err)
    (ds,) = _datastores(loaded, args.datastore, one=True)
    version = _check_version(args.version)
    what = "repair" + (" (accepting the file's checksum)" if args.accept_checksum else "")
    _confirm(f"{what} version {version} of {ds.name} ({ds.type})", args.yes)
    lines: list[str] = []
    engine, ctx = _engine_call(loaded, ds, lines.append)
    for line in engine.repair(ctx, version, accept_checksum=args.accept_checksum):
        print(f"{ds.name}: {line}", file=out)
    return EXIT_OK


def _backup_runs(loaded: LoadedPolicy, ds: Datastore, unfinished: set[str]) -> list[BackupRun]:
    from convoy.operate import retention

    sources = _sources()
    if isinstance(ds, PostgresDatastore):
        from convoy.operate import postgres

        conninfo = sources.postgres(ds.conn_id)
        conn = postgres.connect_read_only(conninfo, f"convoy:{ds.name}:backups")
        try:
            runs = postgres.backups(conn, sources.pg_config, ds.name)
            flight = postgres.in_flight(conn, sources.pg_config, ds.name)
        finally:
            conn.close()
    else:
        from convoy.operate import mongo

        db = sources.mongo(ds.conn_id)[ds.database]
        runs = mongo.backups(db, sources.mongo_config, ds.name)
        flight = mongo.in_flight(db, sources.mongo_config, ds.name)
    flight.update(dict.fromkeys(unfinished, "run not finished in Airflow"))
    return retention.protect(runs, flight)


def _unfinished_runs(dag_id: str, err: TextIO) -> set[str]:
    try:
        from convoy.airflow.connections import unfinished_runs

        return unfinished_runs(dag_id)
    except Exception as exc:
        raise CommandError(
            f"cannot read the runs of {dag_id!r} from Airflow ({status_mod.one_line(exc)}); "
            "pruning needs them to keep unfinished runs' backups"
        ) from None


def cmd_db_backups(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from convoy.operate import retention

    loaded = _load(args, err)
    stores = _datastores(loaded, args.datastore)
    older: dt.timedelta | None = None
    if args.older_than is not None:
        try:
            older = retention.parse_duration(args.older_than)
        except ValueError as exc:
            raise CommandError(f"--older-than {exc}", EXIT_USAGE) from None
    if args.keep is not None and args.keep < 1:
        raise CommandError("--keep must be at least 1", EXIT_USAGE)
    if args.prune and args.keep is None and older is None:
        raise CommandError("--prune needs --keep N or --older-than D", EXIT_USAGE)
    if not args.prune and (args.keep is not None or older is not None):
        raise CommandError("--keep and --older-than select what --prune removes", EXIT_USAGE)
    unfinished = _unfinished_runs(loaded.policy.metadata.name, err) if args.prune else set()
    now = dt.datetime.now(dt.UTC)
    report: list[dict[str, Any]] = []
    texts: list[str] = []
    for ds in stores:
        try:
            runs = _backup_runs(loaded, ds, unfinished)
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(f"datastore {ds.name!r}: {status_mod.one_line(exc)}") from None
        chosen = (
            retention.select(runs, keep=args.keep, older_than=older, now=now) if args.prune else []
        )
        pruned: list[str] = []
        if chosen:
            ids = ", ".join(r.run_id for r in chosen)
            _confirm(f"prune the backups of {ds.name} run(s) {ids}", args.yes)
            pruned = _prune(loaded, ds, chosen)
        report.append(
            {
                "datastore": ds.name,
                "runs": [r.to_dict() | {"size_bytes": r.size_bytes} for r in runs],
                "pruned": [r.run_id for r in chosen],
            }
        )
        texts.append(status_mod.render_backups(ds.name, runs, [r.run_id for r in chosen]))
        for line in pruned:
            texts.append(line)
    if args.json:
        _json({"policy": loaded.policy.metadata.name, "datastores": report}, out)
    else:
        print(redact("\n\n".join(texts)), file=out)
    return EXIT_OK


def _prune(loaded: LoadedPolicy, ds: Datastore, runs: list[BackupRun]) -> list[str]:
    sources = _sources()
    ctx = status_mod.context(loaded, ds, log=lambda _line: None)
    if isinstance(ds, PostgresDatastore):
        from convoy.operate import postgres

        return postgres.prune(sources.postgres(ds.conn_id), ctx, runs, sources.pg_config)
    from convoy.operate import mongo

    return mongo.prune(sources.mongo(ds.conn_id), ds.database, ctx, runs, sources.mongo_config)


# --------------------------------------------------------------------------- parser

Command = Callable[[argparse.Namespace, TextIO, TextIO], int]


def _guarded(name: str, func: Command) -> Command:
    """Engine refusals and connection failures as one line and exit code, never a traceback."""

    def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        from convoy.engines.errors import EngineError
        from convoy.policy import PolicyError

        try:
            return func(args, out, err)
        except CommandError as exc:
            print(redact(f"convoy {name}: {exc}"), file=err)
            return exc.code
        except PolicyError:
            raise
        except (EngineError, OSError, ValueError, RuntimeError, LookupError) as exc:
            print(redact(f"convoy {name}: {status_mod.one_line(exc)}"), file=err)
            return EXIT_FAILED
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("psycopg", "pymongo", "airflow", "mongomock"):
                print(redact(f"convoy {name}: {status_mod.one_line(exc)}"), file=err)
                return EXIT_FAILED
            raise

    return run


def register(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``status`` and ``db`` to the ``convoy`` subcommands."""
    status = sub.add_parser(
        "status", help="live images and datastore versions against the policy (read-only)"
    )
    status.add_argument("policy", metavar="POLICY")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_guarded("status", cmd_status))

    db = sub.add_parser("db", help="datastore versions, checksums, baseline, repair, backups")
    db_sub = db.add_subparsers(dest="what", parser_class=parser_class, metavar="WHAT")
    db_sub.required = True

    def command(name: str, helptext: str, func: Command, *, one: bool = False) -> Any:
        p = db_sub.add_parser(name, help=helptext)
        p.add_argument("policy", metavar="POLICY")
        p.add_argument(
            "datastore",
            nargs="?",
            metavar="DATASTORE",
            help="default: every datastore" if not one else "needed when there are several",
        )
        p.set_defaults(func=_guarded(f"db {name}", func))
        return p

    info = command("info", "every version with state, checksum, run and time", cmd_db_info)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    validate = command("validate", "checksums of applied files against disk", cmd_db_validate)
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    baseline = command(
        "baseline",
        "mark versions up to V applied on a datastore convoy never managed",
        cmd_db_baseline,
        one=True,
    )
    baseline.add_argument("--version", required=True, metavar="V")
    baseline.add_argument("--description", default="baseline")
    baseline.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    repair = command(
        "repair", "clear a failed migration of version V after fixing it", cmd_db_repair, one=True
    )
    repair.add_argument("--version", required=True, metavar="V")
    repair.add_argument(
        "--accept-checksum",
        action="store_true",
        help="also accept the current file of an applied version that was edited",
    )
    repair.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    backups = command("backups", "list kept backups; prune them by a retention rule",
                      cmd_db_backups)  # fmt: skip
    backups.add_argument("--prune", action="store_true", help="remove what the rule allows")
    backups.add_argument("--keep", type=int, metavar="N", help="keep the N newest runs")
    backups.add_argument("--older-than", metavar="D", help="prune runs older than D (7d, 12h)")
    backups.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    backups.add_argument("--json", action="store_true", help="machine-readable output")
