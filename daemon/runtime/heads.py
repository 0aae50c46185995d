"""Push-driven heads: a chain whose source has a `ws_url` (jsonrpc: `eth_subscribe
newHeads`) or a `zmq_url` (core-rpc: Bitcoin/Litecoin Core's ZMQ `hashblock`
notifications) is woken by each new block instead of waiting for its next poll.

Polling never stops: a notification only brings the chain's next cycle forward, and the
cycle scans from its cursor, so a lost notification costs latency, never a block. One
thread per subscribed source (`HeadWatcher` over WebSocket, `BlockHashWatcher` over ZMQ):
- connects, subscribes, and calls `on_head(height)` for each new block (bounded messages,
  anything malformed ends the connection; a ZMQ `hashblock` carries no height: its
  watcher takes the last polled one, 0 before the first poll);
- re-connects and re-subscribes after a dropped connection, with a bounded backoff;
- a watchdog (`polled(height)`, fed by the cycles' polled heads): when the polled head has
  moved at least STALL_BLOCKS past the last notified one and no notification came for
  `stall_seconds`, the subscription is taken for silently stopped (load balancers do
  that; a ZMQ subscriber cannot tell a silent publisher from a quiet chain) and is
  replaced — meanwhile the polls keep the chain going.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Self

import structlog

log = structlog.get_logger("segwatch")

MAX_MESSAGE_BYTES = 64 * 1024
"""A newHeads notification is a block header (~600 bytes); anything larger is refused."""
MAX_ZMQ_FRAME_BYTES = 64
"""A `hashblock` message is three frames: the topic, a 32-byte hash, a 4-byte sequence;
libzmq drops a publisher that sends a larger frame."""
STALL_BLOCKS = 2
"""Polled heads this far past the last notified one (and quiet) mean a stalled stream."""
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits between reconnection attempts (the last one repeats)."""
OPEN_TIMEOUT = 10.0
POLL_SECONDS = 0.2
"""How often the ZMQ thread looks up from its socket (to stop, or to replace it)."""


class SubscriptionError(Exception):
    """The source refused or garbled the subscription."""


class _Follower(ABC):
    """The thread, backoff and watchdog shared by both transports; a transport supplies
    `_follow` (connect, subscribe, notify until stopped or dropped) and `_drop` (make the
    current `_follow` end)."""

    def __init__(self, chain: str, source: str, url: str,
                 on_head: Callable[[int], None], *, stall_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.chain, self.source, self._url = chain, source, url
        self._on_head = on_head
        self._stall_seconds = stall_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"heads:{chain}", daemon=True)
        self.notified_height: int | None = None
        self.notified_at: float | None = None
        self.polled_height: int | None = None
        self.subscriptions = 0
        """How many times a subscription was made (re-subscriptions included)."""
        self.stalls = 0
        """How many times the watchdog replaced a silent subscription."""

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._drop()
        self._thread.join(timeout=timeout)

    def polled(self, height: int) -> None:
        """The watchdog: a cycle polled `height`. When the stream is that far behind and has
        been quiet for `stall_seconds`, drop the connection (the thread re-subscribes)."""
        with self._lock:
            self.polled_height = height
            last, at = self.notified_height, self.notified_at
        if last is None or at is None or height - last < STALL_BLOCKS:
            return
        if self._clock() - at < self._stall_seconds:
            return
        log.warning("heads_stalled", chain=self.chain, source=self.source,
                    notified=last, polled=height)
        with self._lock:
            self.stalls += 1
            self.notified_at = self._clock()  # one replacement per stall window
        self._drop()

    def _subscribed(self) -> None:
        with self._lock:
            self.subscriptions += 1
            self.notified_at = self._clock()
        log.info("heads_subscribed", chain=self.chain, source=self.source)

    def _notified(self, height: int | None) -> None:
        """A new block, of `height` when known (the watchdog waits for a known one)."""
        with self._lock:
            self.notified_height, self.notified_at = height, self._clock()
        self._on_head(height if height is not None else 0)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._follow()
                attempt = 0
            except Exception as exc:  # dropped, refused, malformed: re-subscribe later
                if self._stop.is_set():
                    return
                wait = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                attempt += 1
                log.info("heads_reconnecting", chain=self.chain, source=self.source,
                         error=_describe(exc), wait=wait)
                self._stop.wait(wait)

    @abstractmethod
    def _follow(self) -> None:
        """Connect, subscribe, and notify until stopped; return or raise when dropped."""

    @abstractmethod
    def _drop(self) -> None:
        """Make the running `_follow` end soon (from any thread)."""


class HeadWatcher(_Follower):
    """Follows one jsonrpc source's new heads over WebSocket (see the module docstring)."""

    def __init__(self, chain: str, source: str, ws_url: str,
                 on_head: Callable[[int], None], *, stall_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(chain, source, ws_url, on_head, stall_seconds=stall_seconds,
                         clock=clock)
        self._socket: Any = None

    def _follow(self) -> None:
        from websockets.sync.client import connect

        with connect(self._url, open_timeout=OPEN_TIMEOUT, max_size=MAX_MESSAGE_BYTES,
                     compression=None) as socket:
            with self._lock:
                self._socket = socket
            if self._stop.is_set():
                return
            socket.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                    "params": ["newHeads"]}))
            reply = _json(socket.recv(timeout=OPEN_TIMEOUT))
            subscription = reply.get("result") if isinstance(reply, dict) else None
            if not isinstance(subscription, str) or not subscription:
                raise SubscriptionError(f"eth_subscribe refused: {str(reply)[:200]}")
            self._subscribed()
            while not self._stop.is_set():
                message = _json(socket.recv())
                height = _head_height(message, subscription)
                if height is not None:
                    self._notified(height)

    def _drop(self) -> None:
        with self._lock:
            socket, self._socket = self._socket, None
        if socket is not None:
            try:
                socket.close()
            except Exception as exc:  # already gone
                log.debug("heads_close_failed", error=type(exc).__name__)


class BlockHashWatcher(_Follower):
    """Follows one core-rpc source's `hashblock` notifications over ZMQ (Core's
    `-zmqpubhashblock=tcp://…`). A notification says only that a block arrived: its
    height is taken as the last polled one (the watchdog's measure) and the cycle it
    wakes finds the block itself. ZMQ sockets belong to one thread: `_drop` asks the
    thread to replace its socket, which it does within POLL_SECONDS."""

    def __init__(self, chain: str, source: str, zmq_url: str,
                 on_head: Callable[[int], None], *, stall_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(chain, source, zmq_url, on_head, stall_seconds=stall_seconds,
                         clock=clock)
        self._renew = threading.Event()

    def _follow(self) -> None:
        import zmq

        socket: Any = zmq.Context.instance().socket(zmq.SUB)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.MAXMSGSIZE, MAX_ZMQ_FRAME_BYTES)
            socket.setsockopt(zmq.RCVHWM, 1_000)
            socket.setsockopt(zmq.SUBSCRIBE, b"hashblock")
            socket.connect(self._url)
            self._renew.clear()
            self._subscribed()
            while not self._stop.is_set():
                if self._renew.is_set():
                    raise SubscriptionError("the watchdog replaced a silent subscription")
                if not socket.poll(int(POLL_SECONDS * 1000)):
                    continue
                frames = socket.recv_multipart(zmq.NOBLOCK)
                if not _is_hashblock(frames):
                    raise SubscriptionError("a message that is not a hashblock notification")
                with self._lock:
                    height = self.polled_height
                self._notified(height)
        finally:
            socket.close(linger=0)

    def _drop(self) -> None:
        self._renew.set()


def _is_hashblock(frames: list[bytes]) -> bool:
    """Core's `hashblock` message: the topic, the 32-byte block hash, a 4-byte sequence."""
    return (len(frames) == 3 and frames[0] == b"hashblock" and len(frames[1]) == 32
            and len(frames[2]) == 4)


def _json(message: str | bytes) -> Any:
    try:
        return json.loads(message)
    except ValueError:
        raise SubscriptionError("a message that is not JSON") from None


def _head_height(message: Any, subscription: str) -> int | None:
    """The block number of a newHeads notification of `subscription`; None for other
    messages. Raises SubscriptionError for a notification without a valid number."""
    if not isinstance(message, dict) or message.get("method") != "eth_subscription":
        return None
    params = message.get("params")
    if not isinstance(params, dict) or params.get("subscription") != subscription:
        return None
    result = params.get("result")
    number = result.get("number") if isinstance(result, dict) else None
    if not isinstance(number, str) or not number.startswith("0x") or len(number) > 18:
        raise SubscriptionError(f"a head without a block number: {str(result)[:120]}")
    try:
        return int(number, 16)
    except ValueError:
        raise SubscriptionError(f"a head without a block number: {number[:20]}") from None


def _describe(exc: Exception) -> str:
    """An error for the logs without the URL (it may carry an API key)."""
    text = str(exc)
    return type(exc).__name__ if "://" in text else f"{type(exc).__name__}: {text[:200]}"
