"""Issue 18 item 4, push-driven heads against a real anvil (its WebSocket endpoint on the
same port): newHeads notifications arrive; a dropped connection is re-subscribed; a
subscription that silently stops (a proxy that keeps the connection but forwards
nothing, as load balancers do) is replaced by the watchdog; and in the daemon a new head
brings the chain's cycle forward, so an outflow is found long before the next poll."""

from __future__ import annotations

import contextlib
import csv
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.evm.devnet import AnvilNode, impersonate, install_multicall, set_balances
from daemon.bootstrap import build_service
from daemon.inputs.config import Settings
from daemon.runtime.heads import HeadWatcher
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER
from tests.waiting import daemon_running, free_port, wait_for

pytestmark = pytest.mark.anvil

ALICE = "0x1000000000000000000000000000000000000001"
OUTSIDE = "0x2000000000000000000000000000000000000001"
ETH = 10**18


class Proxy:
    """A loopback TCP proxy to `target` that can drop every connection (`drop`) or keep
    them open while forwarding nothing more to the client (`stall`); connections made
    after either are served normally."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            stalled = threading.Event()
            with self.lock:
                self.pairs.append((client, upstream, stalled))
            threading.Thread(target=self._pipe, args=(client, upstream, None),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, stalled),
                             daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket,
              stalled: threading.Event | None) -> None:
        try:
            source.settimeout(None)
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if stalled is not None and stalled.is_set():
                    continue  # swallowed: the client hears nothing more
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream, _ in pairs:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def stall(self) -> None:
        with self.lock:
            for _, _, stalled in self.pairs:
                stalled.set()

    def close(self) -> None:
        self.closed.set()
        self.drop()
        self.server.close()


@pytest.fixture
def proxy(anvil_node: AnvilNode) -> Iterator[Proxy]:
    host, port = anvil_node.url.removeprefix("http://").rstrip("/").split(":")
    made = Proxy((host, int(port)))
    yield made
    made.close()


def watch(url: str, stall_seconds: float = 30.0) -> tuple[HeadWatcher, list[int]]:
    heights: list[int] = []
    return HeadWatcher("devnet", "anvil", url, heights.append,
                       stall_seconds=stall_seconds).start(), heights


def test_new_heads_are_notified(anvil_node: AnvilNode) -> None:
    """Each mined block is one notification, with its number."""
    watcher, heights = watch(anvil_node.url.replace("http://", "ws://"))
    try:
        assert wait_for(lambda: watcher.subscriptions == 1)
        first = anvil_node.block_number() + 1
        anvil_node.mine(3)
        assert wait_for(lambda: len(heights) >= 3)
        assert heights[:3] == [first, first + 1, first + 2]
    finally:
        watcher.stop()


def test_a_dropped_connection_is_resubscribed(anvil_node: AnvilNode, proxy: Proxy) -> None:
    """The proxy drops the connection: the watcher reconnects, subscribes again, and the
    next blocks are notified."""
    watcher, heights = watch(proxy.url)
    try:
        assert wait_for(lambda: watcher.subscriptions == 1)
        proxy.drop()
        assert wait_for(lambda: watcher.subscriptions == 2)
        anvil_node.mine(1)
        target = anvil_node.block_number()
        assert wait_for(lambda: target in heights)
    finally:
        watcher.stop()


def test_a_silent_subscription_is_replaced_by_the_watchdog(anvil_node: AnvilNode,
                                                           proxy: Proxy) -> None:
    """The proxy keeps the connection but forwards nothing more: no error, no
    notification. While the polled head moves on (the cycles still poll), the watchdog
    replaces the subscription after its quiet window, and notifications resume."""
    watcher, heights = watch(proxy.url, stall_seconds=0.5)
    try:
        assert wait_for(lambda: watcher.subscriptions == 1)
        anvil_node.mine(1)
        assert wait_for(lambda: len(heights) == 1)
        proxy.stall()
        anvil_node.mine(3)
        time.sleep(0.8)
        assert len(heights) == 1  # silent: the stream told nothing
        watcher.polled(anvil_node.block_number())  # what the next poll saw
        assert watcher.stalls == 1
        assert wait_for(lambda: watcher.subscriptions == 2)
        anvil_node.mine(1)
        target = anvil_node.block_number()
        assert wait_for(lambda: target in heights)
        watcher.polled(target)  # caught up: no second replacement
        assert watcher.stalls == 1
    finally:
        watcher.stop()


def test_a_new_head_wakes_the_daemon_before_its_next_poll(anvil_node: AnvilNode,
                                                          store_url: str,
                                                          tmp_path: Path) -> None:
    """The chain polls every 60 s; with `ws_url`, the block carrying an unauthorized
    outflow is reconciled within seconds of being mined."""
    install_multicall(anvil_node)
    impersonate(anvil_node, ALICE)
    set_balances(anvil_node, {ALICE: 10 * ETH})
    anvil_node.mine(1)
    ws = anvil_node.url.replace("http://", "ws://")
    settings = Settings(store={"url": store_url},  # type: ignore[arg-type]
                        daemon={"listen": f"127.0.0.1:{free_port()}"},  # type: ignore[arg-type]
                        chains=[{"name": "devnet", "family": "evm",  # type: ignore[list-item]
                                 "chain_id": 31337, "confirmations": 0, "poll_seconds": 60,
                                 "sources": [{"kind": "jsonrpc", "url": anvil_node.url,
                                              "ws_url": ws}]}])
    upgrade(make_engine(store_url))
    service = build_service(settings)
    ledger = tmp_path / "ledger.csv"
    with ledger.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        out.writerow(["devnet", ALICE, "segregated", "alice", "ETH", "10"])
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    with daemon_running(service):
        assert wait_for(lambda: service.store.scan_state("devnet") is not None, 20)
        assert wait_for(lambda: service.store.last_checkpoint("devnet") is not None, 20)
        mined = time.monotonic()
        anvil_node.transact(OUTSIDE, value=ETH, sender=ALICE)
        found = wait_for(lambda: any(r.row.type == "unauthorized_outflow"
                                     for r in service.discrepancies(status="open")), 20)
        assert found and time.monotonic() - mined < 15  # the next poll was 60 s away
