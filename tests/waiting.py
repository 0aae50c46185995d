"""Helpers for tests that wait on threads and servers: a bounded wait for a condition,
a free loopback port, and the daemon's scheduler run in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from daemon.runtime.scheduler import run_forever
from daemon.service import Service


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Whether `condition` holds within `seconds` (checked every 20 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def daemon_running(service: Service, stop_seconds: float = 30.0) -> Iterator[None]:
    """The daemon (`run_forever`) in a thread for the block; stopped after it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(service, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=stop_seconds)
