"""Bounded HTTP reads shared by every source client (JSON-RPC and Esplora).

A source is untrusted input: its body is read as a stream, refused as soon as it passes
`max_response_bytes` (by its Content-Length when it sends one, else by counting), and
an overall per-request `deadline` is checked against a monotonic clock after every
chunk, so a server that drips one byte a second (each within httpx's read timeout)
cannot hold a cycle for longer than the deadline. Both refusals are raised as
`BodyRefused`, which the clients turn into a source error (failed over, counted).

Also here: the default source name (the URL's host), used when none is configured.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

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
    response = client.send(request, stream=True)
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
        response.close()


def _check_clock(started: float, deadline: float) -> None:
    if time.monotonic() - started > deadline:
        raise BodyRefused(f"response not complete within the deadline of {deadline:g} s")


def merged_headers(headers: Mapping[str, str] | None, extra: Mapping[str, str]) -> dict[str, str]:
    """The configured `headers` (API keys) plus the client's own `extra` ones."""
    return {**(headers or {}), **extra}
