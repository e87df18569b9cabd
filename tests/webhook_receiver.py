"""A local HTTP server standing in for an alert webhook (fixture ``webhook_receiver``)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Answers each POST with the next of ``statuses`` (then 200) and keeps what arrived."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        #: The raw request bodies, in arrival order.
        self.raw: list[bytes] = []
        #: The request paths (with their query), in arrival order.
        self.paths: list[str] = []
        #: Wall-clock time (``time.time()``) each body arrived.
        self.arrived: list[float] = []
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.raw.append(self.rfile.read(length))
                receiver.paths.append(self.path)
                receiver.arrived.append(time.time())
                receiver.received.set()
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hooks/convoy") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def bodies(self) -> list[Any]:
        """The bodies parsed as JSON."""
        return [json.loads(b) for b in self.raw]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
