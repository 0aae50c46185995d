"""Bounded HTTP reads shared by every source client (JSON-RPC and Esplora).

A source is untrusted input: its body is read as a stream, refused as soon as it passes
`max_response_bytes` (by its Content-Length when it sends one, else by counting), and
an overall per-request `deadline` is checked against a monotonic clock after every
chunk, so a server that drips one byte a second (each within httpx's read timeout)
cannot hold a cycle for longer than the deadline. With the clients' own transport
(`bounded_transport`) the deadline also covers connecting, the TLS handshake and the
response headers: every socket read and write waits at most the time left. Both
refusals are raised as `BodyRefused`, which the clients turn into a source error
(failed over, counted).

Also here: the default source name (the URL's host), used when none is configured.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""The largest response body a source may send (bytes, decoded)."""

DEFAULT_DEADLINE = 30.0
"""Seconds one HTTP request may take in all, however slowly its bytes arrive."""


class BodyRefused(Exception):
    """A response exceeded the size cap or the deadline; `args[0]` says which, in one line."""


@dataclass(frozen=True, slots=True)
class BoundedResponse:
    """A response read within the bounds: status, headers and the whole (decoded) body."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")


def host_name(url: str) -> str:
    """The URL's host (no port, user info, path or query): the default source name.
    Returns "source" when the URL has no readable host."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return host or "source"


def send_bounded(client: httpx.Client, request: httpx.Request, *, max_bytes: int,
                 deadline: float) -> BoundedResponse:
    """Send `request` and read its body within `max_bytes` and `deadline` seconds.

    Raises BodyRefused when the body is (or announces itself) larger than `max_bytes`, or
    when the whole exchange outlasts `deadline`; httpx.HTTPError as httpx does.
    """
    started = time.monotonic()
    previous = getattr(_request_deadline, "end", None), getattr(_request_deadline, "seconds", None)
    _request_deadline.end, _request_deadline.seconds = started + deadline, deadline
    try:
        response = client.send(request, stream=True)
    except BaseException:
        _request_deadline.end, _request_deadline.seconds = previous
        raise
    try:
        _check_clock(started, deadline)
        announced = response.headers.get("Content-Length")
        if announced is not None and announced.strip().isdigit() and int(announced) > max_bytes:
            raise BodyRefused(f"response body of {int(announced)} bytes exceeds the cap of "
                              f"{max_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > max_bytes:
                raise BodyRefused(f"response body exceeds the cap of {max_bytes} bytes")
            chunks.append(chunk)
            _check_clock(started, deadline)
        return BoundedResponse(response.status_code, response.headers, b"".join(chunks))
    finally:
        _request_deadline.end, _request_deadline.seconds = previous
        response.close()


def _check_clock(started: float, deadline: float) -> None:
    if time.monotonic() - started > deadline:
        raise BodyRefused(f"response not complete within the deadline of {deadline:g} s")


def describe_http_error(exc: Exception, secrets: Iterable[str], client: httpx.Client) -> str:
    """An HTTP failure as people read it: a timeout names how long was waited ("no answer
    within 10 s (ReadTimeout)"), not just the exception's class; anything else is its class
    and text, unless the text could carry a URL secret (then the class alone)."""
    if isinstance(exc, httpx.TimeoutException):
        timeout = client.timeout
        if isinstance(exc, httpx.ConnectTimeout):
            what, seconds = "no connection", timeout.connect
        elif isinstance(exc, httpx.PoolTimeout):
            what, seconds = "no free connection", timeout.pool
        else:
            what, seconds = "no answer", timeout.read
        if seconds is not None:
            return f"{what} within {seconds:g} s ({type(exc).__name__})"
    text = str(exc)
    if not text or "://" in text or any(secret in text for secret in secrets):
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def merged_headers(headers: Mapping[str, str] | None, extra: Mapping[str, str]) -> dict[str, str]:
    """The configured `headers` (API keys) plus the client's own `extra` ones."""
    return {**(headers or {}), **extra}


# -- the deadline below httpx: every socket wait is cut to the time left ---------------

_request_deadline = threading.local()
"""`end`: the monotonic time the current thread's request must be done by (or None);
`seconds`: that request's deadline, for messages."""


def bounded_transport(*, verify: ssl.SSLContext, limits: httpx.Limits | None = None
                      ) -> httpx.HTTPTransport:
    """An httpx transport whose connects, TLS handshakes and socket reads and writes wait
    at most the time left before the deadline `send_bounded` set for the request, so a
    server dripping its headers is cut off too. Raises BodyRefused past the deadline."""
    transport = httpx.HTTPTransport(verify=verify, limits=limits or httpx.Limits())
    # httpx offers no public hook for the network backend; its pool keeps it here.
    pool = transport._pool
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


def _time_left(timeout: float | None) -> float | None:
    """`timeout` cut to the current request's time left. Raises BodyRefused when none is."""
    end: float | None = getattr(_request_deadline, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        seconds = getattr(_request_deadline, "seconds", None)
        raise BodyRefused("response not complete within the request deadline"
                          + (f" of {seconds:g} s" if seconds is not None else ""))
    return left if timeout is None else min(timeout, left)


@contextmanager
def _deadline_timeouts() -> Iterator[None]:
    """A socket timeout that ran into the request deadline becomes BodyRefused (the
    deadline, not the per-wait timeout, is what the source broke)."""
    try:
        yield
    except httpcore.TimeoutException:
        _time_left(None)  # raises BodyRefused when the deadline has passed
        raise


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _deadline_timeouts():
            return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _deadline_timeouts():
            self._inner.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        with _deadline_timeouts():
            return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                         _time_left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        with _deadline_timeouts():
            return _DeadlineStream(self._inner.connect_tcp(host, port, _time_left(timeout),
                                                           local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _time_left(timeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
