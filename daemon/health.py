"""`/healthz` and `/metrics` on the daemon's listen address (default loopback).

`/healthz` answers 200 with each chain's freshness as JSON when every chain had a
successful cycle within its freshness SLA, else 503 naming the stale chains;
`/metrics` is the Prometheus text format. Anything else is 404. The server runs in
its own thread and never touches a chain source.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from daemon.errors import ConfigError
from daemon.metrics import Metrics
from daemon.service import ChainStatus


def health_document(statuses: list[ChainStatus]) -> tuple[int, dict[str, Any]]:
    """Return the HTTP status and JSON body of `/healthz` for the chains' statuses."""
    stale = [s.chain for s in statuses if not s.fresh]
    chains = {s.chain: {"fresh": s.fresh, "status": s.status,
                        "last_cycle_at": s.last_cycle_at.isoformat() if s.last_cycle_at
                        else None,
                        "block": s.block, "open_findings": s.open_findings,
                        "last_error": s.last_error} for s in statuses}
    body = {"status": "stale" if stale else "ok", "stale": stale, "chains": chains}
    return (503 if stale else 200), body


class HealthServer:
    """Serves `/healthz` from `statuses()` and `/metrics` from `metrics`."""

    def __init__(self, listen: str, statuses: Callable[[], list[ChainStatus]],
                 metrics: Metrics) -> None:
        host, _, port = listen.rpartition(":")
        self._statuses = statuses
        self._metrics = metrics
        try:
            self._http = ThreadingHTTPServer((host.strip("[]"), int(port)), self._handler())
        except OSError as exc:
            raise ConfigError(f"daemon.listen: cannot listen on {listen}: "
                              f"{exc.strerror or exc}") from None
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="health",
                                        daemon=True)

    @property
    def address(self) -> str:
        """HOST:PORT actually bound (useful with port 0)."""
        host, port = self._http.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    try:
                        status, body = health_document(server._statuses())
                    except Exception as exc:  # the store is down: unhealthy, say why
                        status, body = 503, {"status": "error", "error": type(exc).__name__}
                    self._send(status, "application/json", json.dumps(body).encode())
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, server._metrics.render())
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silence per-request logging (scrapes every few seconds)."""

        return Handler
