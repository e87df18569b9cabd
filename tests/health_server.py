"""A small HTTP health endpoint for the analysis provider ``http`` (tests only).

``GET /health/<image>`` answers 401 without ``Authorization: Bearer <token>``,
500 for an image tagged ``-errors`` (or for every image while ``failing`` is
set) and 200 otherwise, and records every request's path and
``Authorization`` header.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HealthServer:
    def __init__(self, token: str, host: str = "127.0.0.1") -> None:
        self.seen: list[tuple[str, str]] = []
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                outer.seen.append((self.path, auth))
                bad = outer.failing or "-errors" in self.path
                code = 401 if auth != f"Bearer {token}" else 500 if bad else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
