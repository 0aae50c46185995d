"""A clock that tests and benchmarks move by hand (`Service(..., clock=...)`)."""

from __future__ import annotations

from datetime import UTC, datetime


class ManualClock:
    """Starts at the real time; `now` moves only when the caller moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now
