"""``python -m convoy.emulator serve --policy PATH --port 0 --kubeconfig OUT``.

Seeds the emulator from a policy (workloads at the previous versions of the
policy's images), writes a kubeconfig, prints the URL and serves until SIGTERM.

Bad arguments (a port out of range, a host it cannot listen on, a tick that is
not a positive number, an unwritable output file) end with one
``python -m convoy.emulator serve: error: ...`` line and exit code 2, before
anything is served; a policy with errors prints its diagnostics first. If the
simulated controller stops, the server stops too (exit 1): a server whose
workloads never move would only make the caller wait for a rollout forever.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from convoy.emulator.cluster import MAX_TICK_SECONDS, EmulatedCluster

PROG = "python -m convoy.emulator"
#: How often the serving loop checks that the controller is still running.
HEALTH_CHECK_SECONDS = 0.2


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0: any free port), not {port}")
    return port


def _host(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"not a host name or address: {text!r}")
    return text


def _tick(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_TICK_SECONDS:  # False for NaN too
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_TICK_SECONDS:g} seconds, not {text}"
        )
    return value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve an emulated cluster seeded from a policy")
    serve.add_argument("--policy", type=Path, help="policy file to seed workloads from")
    serve.add_argument("--host", type=_host, default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=0)
    serve.add_argument("--kubeconfig", type=Path, required=True)
    serve.add_argument("--ready-file", type=Path, help="written with the URL once serving")
    serve.add_argument("--tick-seconds", type=_tick, default=0.05)
    serve.add_argument("--previous-tag", default=None)
    args = parser.parse_args(argv)

    policy = None
    if args.policy is not None:
        from convoy.policy import PolicyError, load_policy

        try:
            policy = load_policy(args.policy).policy
        except PolicyError as exc:
            for diagnostic in exc.diagnostics:
                print(diagnostic, file=sys.stderr)
            serve.error(f"argument --policy: {args.policy} is not a valid policy")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Raised, not an Event.set(): a handler that takes the Event's lock can
        # deadlock when the signal lands while the main thread re-acquires it.
        raise _Stop

    cluster = EmulatedCluster(args.tick_seconds, host=args.host, port=args.port)
    try:
        cluster.start()
    except (OSError, OverflowError) as exc:
        cluster.stop()
        serve.error(f"cannot listen on {args.host}:{args.port}: {_reason(exc)}")
    try:
        namespace = "default"
        if policy is not None:
            cluster.seed_from_policy(policy, previous_tag=args.previous_tag)
            namespace = policy.kubernetes.namespace
        try:
            cluster.write_kubeconfig(args.kubeconfig, namespace=namespace)
        except OSError as exc:
            serve.error(f"argument --kubeconfig: cannot write {args.kubeconfig}: {_reason(exc)}")
        if args.ready_file is not None:
            try:
                args.ready_file.write_text(cluster.url + "\n")
            except OSError as exc:
                reason = _reason(exc)
                serve.error(f"argument --ready-file: cannot write {args.ready_file}: {reason}")
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        print(cluster.url, flush=True)
        while True:
            time.sleep(HEALTH_CHECK_SECONDS)
            if not cluster.controller_alive:
                error = cluster.controller_error
                reason = f"{type(error).__name__}: {error}" if error is not None else "exited"
                print(f"{PROG}: the simulated controller stopped ({reason})", file=sys.stderr)
                return 1
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        cluster.stop()
    return 0


class _Stop(Exception):
    """SIGTERM or SIGINT: stop serving."""


if __name__ == "__main__":
    sys.exit(main())
