"""Push-driven heads: a chain whose source has a `ws_url` is woken by `eth_subscribe
newHeads` notifications instead of waiting for its next poll.

Polling never stops: a notification only brings the chain's next cycle forward, and the
cycle scans from its cursor, so a lost notification costs latency, never a block. One
thread per subscribed source (`HeadWatcher`):
- connects, subscribes, and calls `on_head(height)` for each new head (bounded messages:
  at most MAX_MESSAGE_BYTES, JSON only; anything malformed ends the connection);
- re-connects and re-subscribes after a dropped connection, with a bounded backoff;
- a watchdog (`polled(height)`, fed by the cycles' polled heads): when the polled head has
  moved at least STALL_BLOCKS past the last notified one and no notification came for
  `stall_seconds`, the subscription is taken for silently stopped (load balancers do
  that) and is replaced — meanwhile the polls keep the chain going.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("segwatch")

MAX_MESSAGE_BYTES = 64 * 1024
"""A newHeads notification is a block header (~600 bytes); anything larger is refused."""
STALL_BLOCKS = 2
"""Polled heads this far past the last notified one (and quiet) mean a stalled stream."""
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits between reconnection attempts (the last one repeats)."""
OPEN_TIMEOUT = 10.0


class SubscriptionError(Exception):
    """The source refused or garbled the subscription."""


class HeadWatcher:
    """Follows one source's new heads over WebSocket (see the module docstring)."""

    def __init__(self, chain: str, source: str, ws_url: str,
                 on_head: Callable[[int], None], *, stall_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.chain, self.source, self._url = chain, source, ws_url
        self._on_head = on_head
        self._stall_seconds = stall_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socket: Any = None
        self._thread = threading.Thread(target=self._run, name=f"heads:{chain}", daemon=True)
        self.notified_height: int | None = None
        self.notified_at: float | None = None
        self.subscriptions = 0
        """How many times a subscription was made (re-subscriptions included)."""
        self.stalls = 0
        """How many times the watchdog replaced a silent subscription."""

    def start(self) -> HeadWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._close()
        self._thread.join(timeout=timeout)

    def polled(self, height: int) -> None:
        """The watchdog: a cycle polled `height`. When the stream is that far behind and has
        been quiet for `stall_seconds`, drop the connection (the thread re-subscribes)."""
        with self._lock:
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
        self._close()

    # -- the thread ------------------------------------------------------------------

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
            with self._lock:
                self.subscriptions += 1
                self.notified_at = self._clock()
            log.info("heads_subscribed", chain=self.chain, source=self.source)
            while not self._stop.is_set():
                message = _json(socket.recv())
                height = _head_height(message, subscription)
                if height is None:
                    continue
                with self._lock:
                    self.notified_height, self.notified_at = height, self._clock()
                self._on_head(height)

    def _close(self) -> None:
        with self._lock:
            socket, self._socket = self._socket, None
        if socket is not None:
            try:
                socket.close()
            except Exception as exc:  # already gone
                log.debug("heads_close_failed", error=type(exc).__name__)


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
