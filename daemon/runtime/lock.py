"""One daemon per SQLite store: an exclusive lock on a file beside the database.

SQLite has one writer at a time and no leases; a second `segwatch run` (or a `run --once`)
on the same file would only fight the first one, cycling the same chains twice.
PostgreSQL stores share work through leases instead.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

from daemon.errors import ConfigError


@contextmanager
def single_daemon(store_url: str, command: str = "run") -> Iterator[None]:
    """Hold the store's daemon lock for the block while `command` runs; a no-op for
    non-SQLite stores.

    Raises ConfigError when another daemon (or `run --once`) holds it.
    """
    url = make_url(store_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    path = f"{os.path.abspath(database)}.daemon.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another segwatch daemon is already running on the SQLite store "
                              f"{database}; SQLite allows one daemon at a time, `{command}` "
                              "included (stop the daemon first, or use PostgreSQL to run "
                              "several)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock
