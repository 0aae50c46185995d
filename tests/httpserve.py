"""Loopback HTTP servers for tests (tests/esplora_server.py, tests/faultproxy.py).

`LoopbackServer` is the base of a test server: it listens on 127.0.0.1 and a free
port with a ThreadingHTTPServer whose handler threads are daemons, serves from a daemon
thread once started, and gives its base `url`. `QuietHandler` is a request handler
that speaks HTTP/1.1 (keep-alive) and logs nothing; `answer` writes a whole answer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer:
    """Listens on 127.0.0.1 (a free port) from construction; start() serves, stop() ends."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, name: str,
                 server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer) -> None:
        self._http = server_class(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name=name,
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for HTTP/1.1 (connections kept alive) that logs no requests."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


def send_head(handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str],
              length: int) -> None:
    """Send the status line, `headers` and a Content-Length of `length`."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(length))
    handler.end_headers()


def answer(handler: BaseHTTPRequestHandler, status: int, content: bytes,
           headers: Mapping[str, str]) -> None:
    """Send a whole answer: `status`, `headers`, the Content-Length, then `content`."""
    send_head(handler, status, headers, len(content))
    handler.wfile.write(content)
