"""The Esplora adapter's request pacing and the answers it tells apart (no adapter state).

`Pace` spaces request starts across the adapter's worker threads, so that a public
instance's quota (`rate_limit`) holds however many requests are in flight; `NotFound`
(HTTP 404) and `BadRequest` (HTTP 400) are the answers the adapter tells apart from
other failures (a block not there yet, an address of another network), each carrying
the first line of the server's reason (`short_text`). The adapter itself (HTTP, retries,
concurrency) is chains.utxo.esplora.
"""

from __future__ import annotations

import threading
from time import monotonic, sleep


class NotFound(Exception):
    """HTTP 404: the block or address does not exist (yet)."""


class BadRequest(Exception):
    """HTTP 400: the server rejects the path's argument (e.g. a foreign address)."""


class Pace:
    """Spaces request starts at least 1/`per_second` seconds apart, across threads: a
    public instance's quota (None: no limit)."""

    def __init__(self, per_second: float | None) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError("rate_limit must be above 0")
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            sleep(start - now)


def short_text(text: str) -> str:
    return text.strip().splitlines()[0][:120] if text.strip() else "no reason given"
