"""``python -m convoy.emulator serve --policy PATH --port 0 --kubeconfig OUT``.

Seeds the emulator from a policy (workloads at the previous versions of the
policy's images), writes a kubeconfig, prints the URL and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from convoy.emulator.cluster import EmulatedCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convoy.emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve an emulated cluster seeded from a policy")
    serve.add_argument("--policy", type=Path, help="policy file to seed workloads from")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--kubeconfig", type=Path, required=True)
    serve.add_argument("--ready-file", type=Path, help="written with the URL once serving")
    serve.add_argument("--tick-seconds", type=float, default=0.05)
    serve.add_argument("--previous-tag", default=None)
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with EmulatedCluster(args.tick_seconds, host=args.host, port=args.port) as cluster:
        namespace = "default"
        if args.policy is not None:
            from convoy.policy import load_policy

            policy = load_policy(args.policy).policy
            cluster.seed_from_policy(policy, previous_tag=args.previous_tag)
            namespace = policy.kubernetes.namespace
        cluster.write_kubeconfig(args.kubeconfig, namespace=namespace)
        print(cluster.url, flush=True)
        if args.ready_file is not None:
            args.ready_file.write_text(cluster.url + "\n")
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
