"""The health and metrics listener under hostile clients: a slow-loris drip and a flood
of idle connections neither starve `/healthz` nor stop reconciliation; `/metrics` can
require a bearer token; the status cache spares the store. Real uvicorn on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from chains.fake import FakeAdapter
from daemon.bootstrap import open_store
from daemon.inputs.config import Settings
from daemon.runtime import health
from daemon.runtime.health import HealthServer, StatusCache, health_document, metrics_exposed
from daemon.runtime.metrics import Metrics
from daemon.runtime.scheduler import run_forever
from daemon.service import Service
from daemon.status import ChainStatus
from tests.waiting import free_port

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def status(chain: str, signal: str, fresh: bool = True) -> ChainStatus:
    return ChainStatus(chain, signal, 0, NOW, 100, fresh, None)


def test_healthz_is_503_while_a_chain_is_stale_or_unverified() -> None:
    """200 only when every chain is fresh and vouched for; 503 names the stale and the
    unverified chains."""
    assert health_document([status("a", "compliant"), status("b", "discrepancy")])[0] == 200
    code, body = health_document([status("a", "unverified"), status("b", "stale", False)])
    assert code == 503 and body["stale"] == ["b"] and body["unverified"] == ["a"]
    assert body["status"] == "stale"
    code, body = health_document([status("a", "unverified")])
    assert (code, body["status"]) == (503, "unverified")


def test_the_status_cache_asks_the_store_once_per_period() -> None:
    """However many callers, `statuses()` runs once per period; an error is cached too."""
    calls: list[int] = []
    now = [0.0]
    cache = StatusCache(lambda: calls.append(1) or [status("a", "compliant")], 1.0,
                        clock=lambda: now[0])
    threads = [threading.Thread(target=cache.get) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    now[0] = 1.5
    cache.get()
    assert len(calls) == 2


def test_metrics_exposed_only_on_a_non_loopback_address_without_a_token() -> None:
    """Binding beyond loopback without a metrics token is allowed but warned about."""
    assert metrics_exposed("0.0.0.0", None) and metrics_exposed("10.1.2.3", None)  # noqa: S104
    assert not metrics_exposed("0.0.0.0", "t0ken-value")  # noqa: S104
    assert not metrics_exposed("127.0.0.1", None) and not metrics_exposed("::1", None)


def test_metrics_require_the_token_when_one_is_set() -> None:
    """With a token, /metrics is 401 (JSON) without it or with another, 200 with it;
    /healthz stays open; unknown paths are a JSON 404."""
    server = HealthServer("127.0.0.1:0", lambda: [status("a", "compliant")], Metrics(),
                          token="s3cret-metrics-token").start()
    try:
        base = f"http://{server.address}"
        assert httpx.get(f"{base}/metrics").status_code == 401
        wrong = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == 401
        good = httpx.get(f"{base}/metrics",
                         headers={"Authorization": "Bearer s3cret-metrics-token"})
        assert good.status_code == 200 and "segwatch_" in good.text
        assert httpx.get(f"{base}/healthz").status_code == 200
        missing = httpx.get(f"{base}/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    finally:
        server.stop()


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Service]]:
    """A real `run_forever` (1 s polls over a fake source, SQLite) with its listener on a
    free loopback port; slow clients get 1 s to send a request."""
    monkeypatch.setattr(health, "REQUEST_SECONDS", 1.0)
    port = free_port()
    settings = Settings(store={"url": f"sqlite:///{tmp_path / 'h.db'}"},  # type: ignore[arg-type]
                        daemon={"listen": f"127.0.0.1:{port}"},  # type: ignore[arg-type]
                        chains=[{"name": "ethereum", "family": "evm", "chain_id": 1,  # type: ignore[list-item]
                                 "confirmations": 0, "poll_seconds": 1,
                                 "sources": [{"kind": "jsonrpc",
                                              "url": "http://127.0.0.1:1/"}]}])
    adapter = FakeAdapter(head_block=_head())
    service = Service(settings, open_store(settings.store.url), lambda _c, _s: adapter)
    stop = threading.Event()
    runner = threading.Thread(target=run_forever, args=(service, stop), daemon=True)
    runner.start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base, service
    finally:
        stop.set()
        runner.join(timeout=20)


def _head():  # type: ignore[no-untyped-def]
    from chains.types import ChainHead
    return ChainHead(100, "0x" + "ab" * 32, int(time.time()))


def _checkpoints(service: Service) -> int:
    last = service.store.last_checkpoint("ethereum")
    return 0 if last is None or last.id is None else last.id


def test_slow_loris_and_a_connection_flood_neither_starve_healthz_nor_reconciliation(
        daemon: tuple[str, Service]) -> None:
    """300 idle connections and 100 clients dripping a request byte by byte: /healthz
    still answers within a second each time, cycles keep committing, the process's
    threads stay bounded, and the server closes the slow clients after its deadline."""
    base, service = daemon
    host, port = base.removeprefix("http://").split(":")
    threads_before = threading.active_count()
    with ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection((host, int(port)), timeout=5))
                for _ in range(300)]
        drips = [stack.enter_context(socket.create_connection((host, int(port)), timeout=5))
                 for _ in range(100)]
        before = _checkpoints(service)
        started = time.monotonic()
        for step in range(6):  # ~3 s of dripping, 2 bytes a second per client
            for sock in drips:
                with suppress(OSError):
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: "[step:step + 1])
            began = time.monotonic()
            answer = httpx.get(f"{base}/healthz", timeout=5)
            assert answer.status_code in (200, 503) and time.monotonic() - began < 1.0
            time.sleep(0.5)
        assert threading.active_count() - threads_before < 20
        time.sleep(max(0.0, 4.0 - (time.monotonic() - started)))
        assert _checkpoints(service) > before  # reconciliation went on meanwhile
        closed = sum(1 for sock in [*idle, *drips] if _closed_by_peer(sock))
        assert closed == len(idle) + len(drips)


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_accepted_connections_send_without_waiting_for_acks() -> None:
    """Every accepted connection has TCP_NODELAY: uvicorn writes a response's headers and
    body separately, and with Nagle's algorithm on the body waited for the client's
    delayed ACK, ~40 ms on every keep-alive request (found by the console benchmark)."""
    server = HealthServer("127.0.0.1:0", lambda: [status("a", "compliant")], Metrics()).start()
    try:
        with httpx.Client(base_url=f"http://{server.address}", timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            state = server._server.server_state
            options = [c.transport.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in state.connections]
            assert options and all(options), options
            started = time.perf_counter()
            for _ in range(20):
                client.get("/healthz")
            assert (time.perf_counter() - started) / 20 < 0.035  # not 40 ms a request
    finally:
        server.stop()
