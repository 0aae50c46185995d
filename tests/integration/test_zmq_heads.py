"""Issue 18 item 4 (Core): `hashblock` notifications over ZMQ wake a core-rpc chain.

The publisher here is a libzmq PUB socket on loopback sending Core's message shape (the
topic `hashblock`, the 32-byte block hash, a 4-byte little-endian sequence): Debian's
litecoind is built without ZMQ (`-zmqpubhashblock` is not among its options), so no real
node can publish on this machine. What is real: libzmq on both ends, the watcher's
thread, its reconnection and its watchdog."""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from daemon.bootstrap import build_service
from daemon.inputs.config import Settings
from daemon.runtime.heads import BlockHashWatcher
from daemon.store.db import make_engine, upgrade
from tests.litecoind import LitecoinNode
from tests.principals import FEEDER
from tests.waiting import daemon_running, free_port, wait_for


class Publisher:
    """Core's `hashblock` publisher, emulated: `block()` publishes one notification."""

    def __init__(self, port: int = 0) -> None:
        self.socket = zmq.Context.instance().socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        if port:
            self.socket.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        else:
            self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.sequence = 0

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def block(self) -> None:
        self.send([b"hashblock", os.urandom(32), self.sequence.to_bytes(4, "little")])
        self.sequence += 1

    def send(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def close(self) -> None:
        self.socket.close(linger=0)


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    made = Publisher()
    yield made
    made.close()


def publish_until(publisher: Publisher, condition: Callable[[], bool],
                  seconds: float = 10.0) -> bool:
    """Publish blocks until `condition` holds: a SUB socket receives only what is
    published after its subscription reached the publisher (ZMQ's slow joiner)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        publisher.block()
        if wait_for(condition, 0.1):
            return True
    return condition()


def settle(seen: list[int], quiet: float = 0.3) -> int:
    """Wait until no notification has come for `quiet` seconds (a publish may still be in
    flight when a condition first holds); return how many came."""
    count = -1
    for _ in range(50):
        if count == len(seen):
            break
        count = len(seen)
        time.sleep(quiet)
    return count


class Clock:
    """The watchdog's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def watch(url: str, clock: Callable[[], float] = time.monotonic
          ) -> tuple[BlockHashWatcher, list[int]]:
    heights: list[int] = []
    return BlockHashWatcher("litecoin", "core-rpc", url, heights.append, stall_seconds=30,
                            clock=clock).start(), heights


def test_each_hashblock_wakes_the_chain(publisher: Publisher) -> None:
    """Every `hashblock` is a wake-up; having no height, it carries the last polled one
    (0 before the first poll), which is what the watchdog measures against."""
    watcher, heights = watch(publisher.url)
    try:
        assert publish_until(publisher, lambda: len(heights) >= 1)
        count = settle(heights)
        assert set(heights) == {0} and watcher.notified_height is None
        watcher.polled(7)
        for _ in range(3):
            publisher.block()
        assert wait_for(lambda: len(heights) >= count + 3)
        assert heights[-1] == 7 and watcher.notified_height == 7
        assert watcher.subscriptions == 1
    finally:
        watcher.stop()
    assert not watcher._thread.is_alive()


def test_a_malformed_notification_ends_the_subscription_and_it_is_made_again(
        publisher: Publisher) -> None:
    """A `hashblock` whose hash is not 32 bytes (a hostile or broken publisher) wakes
    nothing; the socket is replaced and later blocks are notified. An oversized frame is
    refused by libzmq itself (MAXMSGSIZE: it drops the connection, and libzmq 4.3 does not
    reconnect after that protocol error): nothing wakes, the stream is silent, and the
    watchdog replaces it once the polled head has moved on for its quiet window."""
    clock = Clock()
    watcher, heights = watch(publisher.url, clock)
    try:
        assert publish_until(publisher, lambda: len(heights) >= 1)
        count = settle(heights)
        publisher.send([b"hashblock", b"\x00" * 31, b"\x00" * 4])
        assert wait_for(lambda: watcher.subscriptions == 2)
        assert len(heights) == count
        watcher.polled(20)
        assert publish_until(publisher, lambda: watcher.notified_height == 20)
        count = settle(heights)
        publisher.send([b"hashblock", b"\x00" * 100_000, b"\x00" * 4])
        time.sleep(0.3)
        publisher.block()
        assert settle(heights) == count
        clock.now += 31
        watcher.polled(22)
        assert watcher.stalls == 1
        assert wait_for(lambda: watcher.subscriptions == 3)
        assert publish_until(publisher, lambda: len(heights) > count)
    finally:
        watcher.stop()


def test_a_silent_publisher_is_replaced_by_the_watchdog(publisher: Publisher) -> None:
    """The publisher goes quiet while the polled head moves on: after the quiet window
    (30 s of the watchdog's clock) the watchdog replaces the subscription, once per
    window, and when the publisher speaks again the blocks are notified."""
    clock = Clock()
    watcher, heights = watch(publisher.url, clock)
    try:
        watcher.polled(10)
        assert publish_until(publisher, lambda: watcher.notified_height == 10)
        settle(heights)
        watcher.polled(12)
        assert watcher.stalls == 0  # two blocks behind, but not quiet for long
        clock.now += 31
        watcher.polled(11)
        assert watcher.stalls == 0  # quiet, but one block past the last notification
        watcher.polled(12)
        assert watcher.stalls == 1
        watcher.polled(12)
        assert watcher.stalls == 1  # one replacement per quiet window
        assert wait_for(lambda: watcher.subscriptions == 2)
        assert publish_until(publisher, lambda: watcher.notified_height == 12)
    finally:
        watcher.stop()


def test_a_restarted_publisher_is_followed_again(publisher: Publisher) -> None:
    """The node restarts (its publisher closes and binds the same port again): libzmq
    reconnects the subscriber and the new node's blocks wake the chain."""
    watcher, heights = watch(publisher.url)
    try:
        assert publish_until(publisher, lambda: len(heights) >= 1)
        port = publisher.port
        publisher.close()
        time.sleep(0.2)
        again = Publisher(port)
        try:
            count = len(heights)
            assert publish_until(again, lambda: len(heights) > count)
        finally:
            again.close()
    finally:
        watcher.stop()


def test_stop_ends_the_thread_promptly_without_a_publisher() -> None:
    """Nothing listens at the address (ZMQ connects lazily): the watcher waits without
    error and `stop` ends its thread within a poll interval."""
    watcher, heights = watch("tcp://127.0.0.1:9")
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 2 and not watcher._thread.is_alive()
    assert heights == [] and watcher.subscriptions <= 1
    assert threading.active_count() >= 1


@pytest.mark.litecoind
def test_a_hashblock_wakes_the_daemon_before_its_next_poll(
        litecoind: LitecoinNode, publisher: Publisher, store_url: str, tmp_path: Path) -> None:
    """A core-rpc chain on a real litecoind polls every 60 s; with `zmq_url`, a block
    announced on the publisher is reconciled (checkpointed at its height) within seconds."""
    wallet = litecoind.create_wallet()
    address = litecoind.new_address(wallet)
    settings = Settings(store={"url": store_url},  # type: ignore[arg-type]
                        daemon={"listen": f"127.0.0.1:{free_port()}"},  # type: ignore[arg-type]
                        chains=[{"name": "litecoin", "family": "utxo",  # type: ignore[list-item]
                                 "network": "litecoin-regtest", "confirmations": 0,
                                 "poll_seconds": 60,
                                 "sources": [{"kind": "core-rpc", "url": litecoind.url,
                                              "zmq_url": publisher.url}]}])
    upgrade(make_engine(store_url))
    service = build_service(settings)
    ledger = tmp_path / "ledger.csv"
    with ledger.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        out.writerow(["litecoin", address, "segregated", "alice", "LTC", "0"])
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)

    def checkpointed() -> int:
        checkpoint = service.store.last_checkpoint("litecoin")
        return checkpoint.block_height if checkpoint is not None else -1
    with daemon_running(service):
        assert wait_for(lambda: checkpointed() >= 0, 30)
        litecoind.mine(1)
        height = litecoind.height()
        announced = time.monotonic()
        assert publish_until(publisher, lambda: checkpointed() >= height, 20)
        assert time.monotonic() - announced < 20  # the next poll was 60 s away
