"""A loopback JSON-RPC proxy that injects source faults on a seeded schedule.

`FaultProxy(upstream, seed=..., rate=..., timeout=...)` listens on 127.0.0.1 (a free
port) and forwards every POSTed JSON-RPC body to `upstream` (an anvil node) with httpx.
For each request, in arrival order, it draws from `random.Random(seed)` whether to
inject a fault (probability `rate`, `batch_rate` for a JSON-RPC batch) and takes the
next fault from a shuffled deck (one deck for single calls, one for batches) holding
every kind as often as its weight, reshuffled when used up: any run with a deck's worth
of faults has seen every kind. The kinds:

    latency     forward after a pause of `latency` seconds (drawn in that range)
    stall       hold the request for `timeout + 0.5` s, then close without answering
                (the client's timeout fires first)
    http_500, http_502, http_503
                answer that status with an HTML error page, without forwarding
    http_429    answer 429 with `Retry-After: 1`, without forwarding
    drop        forward, then close the connection without answering (FIN or RST)
    cut         forward, send the headers and part of the body, close (the
                Content-Length promised more)
    truncate    forward, answer 200 with a prefix of the JSON (well framed, invalid JSON)
    rpc_error_single  (a single call) answer 200 with one JSON-RPC error object, with
                the request's id or id null
    rpc_error_items   (a batch) answer 200 with an array of one error object per item
    rpc_error_batch   (a batch) answer 200 with one error object (id null) for all
    rpc_error_some    (a batch) forward, then replace some items' results with errors
    garbage     answer 200 with what is not a JSON-RPC response: an HTML or text page,
                an empty or binary body, JSON of the wrong shape, arrays nested deeper
                than any parser's recursion limit

Faults can also be forced, ahead of the schedule: `force("http_503", times=2,
method="eth_getLogs")`; forcing also offers `wrong_chain` (an `eth_chainId` answer
for another chain) and `stale_head` (the `latest` block answered by the block
`stale_lag` below it, as a node that stopped syncing would). `quiet()` pauses the
schedule (forced faults still apply).

`injected` counts what was injected by kind, `variants` some kinds in detail
(`drop:fin`/`drop:rst`, `rpc_error_single:null-id`, `garbage:<index in GARBAGE>`),
`passed` the requests forwarded untouched. Injected JSON-RPC errors never use a code
or text that means "method not found" or "execution reverted": those are answers about
the request, not failures of the source.

With several requests in flight (a scan reads blocks, logs and traces at once) the
order in which they draw from the schedule, hence which one gets which fault, may
vary between runs; the sequence of draws is fixed by the seed.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.httpserve import LoopbackServer, QuietHandler, send_head
from tests.httpserve import answer as _answer

TRANSPORT = ("latency", "stall", "http_500", "http_502", "http_503", "http_429", "drop", "cut",
             "truncate", "garbage")
"""Kinds that fit a single call and a batch alike."""
SINGLE = (*TRANSPORT, "rpc_error_single")
BATCH = (*TRANSPORT, "rpc_error_items", "rpc_error_batch", "rpc_error_some")
KINDS = (*TRANSPORT, "rpc_error_single", "rpc_error_items", "rpc_error_batch",
         "rpc_error_some")
"""Every kind the schedule injects."""
DEFAULT_WEIGHTS: Mapping[str, int] = {
    "latency": 3, "stall": 1, "http_500": 1, "http_502": 1, "http_503": 1, "http_429": 2,
    "drop": 2, "cut": 1, "truncate": 2, "garbage": 3, "rpc_error_single": 4,
    "rpc_error_items": 2, "rpc_error_batch": 2, "rpc_error_some": 2,
}

RPC_ERRORS = (
    (-32000, "header not found"),
    (-32005, "limit exceeded"),
    (-32603, "internal error"),
    (-32000, "execution aborted (timeout = 5s)"),
    (429, "Too Many Requests"),
    (-32007, "request rate exceeded: 100/second"),
    (-32002, "request timed out"),
    (-32000, "upstream unavailable, please retry"),
)
"""(code, message) pairs production providers answer with HTTP 200."""

GARBAGE = (
    (b"<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>", "text/html"),
    (b"upstream connect error or disconnect/reset before headers", "text/plain"),
    (b"", "application/json"),
    (b"\x00\xff\xfe\x81 not json", "application/octet-stream"),
    (b"null", "application/json"),
    (b"{}", "application/json"),
    (b"[]", "application/json"),
    (b'"OK"', "application/json"),
    (b"42", "application/json"),
    (b'{"jsonrpc":"2.0"}', "application/json"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),
)
"""Bodies served with HTTP 200 that are not a JSON-RPC answer."""

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                          "content-encoding"})


@dataclass
class _Forced:
    kind: str
    remaining: int
    method: str | None


@dataclass(frozen=True)
class _Request:
    body: bytes
    parsed: Any
    methods: tuple[str, ...]

    @property
    def is_batch(self) -> bool:
        return isinstance(self.parsed, list)

    @property
    def ids(self) -> list[Any]:
        items = self.parsed if isinstance(self.parsed, list) else [self.parsed]
        return [item.get("id") if isinstance(item, dict) else None for item in items]


class FaultProxy(LoopbackServer):
    """The proxy server; start() it (or use it as a context manager), stop() it after."""

    def __init__(self, upstream: str, *, seed: int, rate: float, timeout: float,
                 batch_rate: float | None = None, weights: Mapping[str, int] | None = None,
                 latency: tuple[float, float] = (0.02, 0.15), stale_lag: int = 5) -> None:
        self.rates = {False: rate, True: rate if batch_rate is None else batch_rate}
        if not all(0 <= r <= 1 for r in self.rates.values()):
            raise ValueError("rates must be within 0..1")
        self.upstream = upstream
        self.seed = seed
        self.stall_seconds = timeout + 0.5
        self.latency = latency
        self.stale_lag = stale_lag
        self.enabled = True
        self.injected: Counter[str] = Counter()
        self.variants: Counter[str] = Counter()
        self.passed = 0
        self.requests = 0
        self._weights = dict(weights if weights is not None else DEFAULT_WEIGHTS)
        unknown = set(self._weights) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self._decks: dict[bool, list[str]] = {False: [], True: []}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._forced: list[_Forced] = []
        self._client = httpx.Client(timeout=10.0)
        super().__init__(_handler_for(self), name=f"faultproxy-{seed}", server_class=_Server)

    def stop(self) -> None:
        """Stop serving (a stalled handler thread ends on its own, within its stall)."""
        super().stop()
        self._client.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Forward every request untouched inside the block (the schedule does not draw)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def force(self, kind: str, times: int = 1, method: str | None = None) -> None:
        """Inject `kind` into the next `times` requests (that call `method`, if given),
        ahead of the random schedule. Kinds: KINDS, `wrong_chain` and `stale_head`."""
        if kind not in (*KINDS, "wrong_chain", "stale_head"):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._forced.append(_Forced(kind, times, method))

    def summary(self) -> dict[str, int]:
        """Requests seen, forwarded untouched, and injected by kind."""
        with self._lock:
            return {"requests": self.requests, "passed": self.passed, **self.injected}

    # -- serving -----------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        request = _parse(body)
        kind = self._draw(request)
        if kind is None:
            self._count(None)
            status, content, headers = self._forward(body)
            _answer(handler, status, content, headers)
            return
        inject = {"latency": self._inject_latency, "stall": self._inject_stall,
                  "drop": self._inject_drop, "cut": self._inject_cut,
                  "truncate": self._inject_truncate, "garbage": self._inject_garbage,
                  "rpc_error_single": self._inject_single, "rpc_error_items": self._inject_items,
                  "rpc_error_batch": self._inject_batch, "rpc_error_some": self._inject_some,
                  "wrong_chain": self._inject_wrong, "stale_head": self._inject_stale}
        inject.get(kind, self._inject_http)(handler, request, kind)

    def _draw(self, request: _Request) -> str | None:
        with self._lock:
            self.requests += 1
            for forced in self._forced:
                if forced.remaining > 0 and (forced.method is None
                                             or forced.method in request.methods):
                    forced.remaining -= 1
                    return forced.kind
            batch = request.is_batch
            if not self.enabled or self._rng.random() >= self.rates[batch]:
                return None
            deck = self._decks[batch]
            if not deck:
                deck += [k for k in (BATCH if batch else SINGLE)
                         for _ in range(self._weights.get(k, 0))]
                self._rng.shuffle(deck)
            return deck.pop() if deck else None

    def _count(self, kind: str | None, variant: str | None = None) -> None:
        with self._lock:
            if kind is None:
                self.passed += 1
                return
            self.injected[kind] += 1
            if variant:
                self.variants[f"{kind}:{variant}"] += 1

    def _uniform(self, low: float, high: float) -> float:
        with self._lock:
            return self._rng.uniform(low, high)

    def _pick(self, count: int) -> int:
        with self._lock:
            return self._rng.randrange(count)

    def _forward(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        try:
            response = self._client.post(self.upstream, content=body,
                                         headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            return 502, f"proxy: upstream failed: {type(exc).__name__}".encode(), {}
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
        return response.status_code, response.content, headers

    # -- the faults --------------------------------------------------------------------
    def _inject_latency(self, handler: BaseHTTPRequestHandler, request: _Request,
                        kind: str) -> None:
        self._count(kind)
        time.sleep(self._uniform(*self.latency))
        status, content, headers = self._forward(request.body)
        _answer(handler, status, content, headers)

    def _inject_stall(self, handler: BaseHTTPRequestHandler, request: _Request,
                      kind: str) -> None:
        self._count(kind)
        time.sleep(self.stall_seconds)
        _close(handler, reset=False)

    def _inject_http(self, handler: BaseHTTPRequestHandler, request: _Request,
                     kind: str) -> None:
        self._count(kind)
        status = int(kind.removeprefix("http_"))
        headers = {"Content-Type": "text/html"}
        if status == 429:
            headers["Retry-After"] = "1"
        page = f"<html><body><h1>{status}</h1>injected</body></html>".encode()
        _answer(handler, status, page, headers)

    def _inject_drop(self, handler: BaseHTTPRequestHandler, request: _Request,
                     kind: str) -> None:
        reset = self._pick(2) == 0
        self._count(kind, "rst" if reset else "fin")
        self._forward(request.body)
        _close(handler, reset=reset)

    def _inject_cut(self, handler: BaseHTTPRequestHandler, request: _Request,
                    kind: str) -> None:
        self._count(kind)
        status, content, headers = self._forward(request.body)
        send_head(handler, status, headers, len(content))
        handler.wfile.write(content[: self._pick(max(1, len(content)))])
        handler.wfile.flush()
        _close(handler, reset=False)

    def _inject_truncate(self, handler: BaseHTTPRequestHandler, request: _Request,
                         kind: str) -> None:
        status, content, headers = self._forward(request.body)
        text = content.rstrip()
        if status != 200 or len(text) < 2:
            self._count(None)
            _answer(handler, status, content, headers)
            return
        self._count(kind)
        # A proper prefix of a JSON object or array is never valid JSON.
        _answer(handler, 200, text[: 1 + self._pick(len(text) - 1)], headers)

    def _inject_single(self, handler: BaseHTTPRequestHandler, request: _Request,
                       kind: str) -> None:
        request_id = request.ids[0] if self._pick(4) else None
        self._count(kind, "id" if request_id is not None else "null-id")
        _answer_json(handler, self._error(request_id))

    def _inject_items(self, handler: BaseHTTPRequestHandler, request: _Request,
                      kind: str) -> None:
        self._count(kind)
        _answer_json(handler, [self._error(i) for i in request.ids])

    def _inject_batch(self, handler: BaseHTTPRequestHandler, request: _Request,
                      kind: str) -> None:
        self._count(kind)
        _answer_json(handler, self._error(None))

    def _inject_some(self, handler: BaseHTTPRequestHandler, request: _Request,
                     kind: str) -> None:
        status, content, headers = self._forward(request.body)
        try:
            items = json.loads(content)
        except ValueError:
            items = None
        if status != 200 or not isinstance(items, list) or not items:
            self._count(None)
            _answer(handler, status, content, headers)
            return
        self._count(kind)
        for _ in range(1 + self._pick(len(items))):
            at = self._pick(len(items))
            item = items[at]
            items[at] = self._error(item.get("id") if isinstance(item, dict) else None)
        _answer_json(handler, items)

    def _error(self, request_id: Any) -> dict[str, Any]:
        code, message = RPC_ERRORS[self._pick(len(RPC_ERRORS))]
        return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}

    def _inject_garbage(self, handler: BaseHTTPRequestHandler, request: _Request,
                        kind: str) -> None:
        at = self._pick(len(GARBAGE))
        body, content_type = GARBAGE[at]
        self._count(kind, str(at))
        _answer(handler, 200, body, {"Content-Type": content_type})

    def _inject_wrong(self, handler: BaseHTTPRequestHandler, request: _Request,
                      kind: str) -> None:
        status, content, headers = self._forward(request.body)
        try:
            answer = json.loads(content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("result"), str):
            self._count(None)
            _answer(handler, status, content, headers)
            return
        self._count(kind)
        answer["result"] = hex(int(answer["result"], 16) + 1)
        _answer_json(handler, answer)

    def _inject_stale(self, handler: BaseHTTPRequestHandler, request: _Request,
                      kind: str) -> None:
        call = request.parsed
        params = call.get("params") if isinstance(call, dict) else None
        if not isinstance(params, list) or not params or params[0] != "latest":
            self._count(None)
            status, content, headers = self._forward(request.body)
            _answer(handler, status, content, headers)
            return
        _, tip, _ = self._forward(json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode())
        height = max(0, int(json.loads(tip)["result"], 16) - self.stale_lag)
        self._count(kind)
        stale = {**call, "params": [hex(height), *params[1:]]}
        status, content, headers = self._forward(json.dumps(stale).encode())
        _answer(handler, status, content, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on a stalled or cut answer is expected: stay quiet."""


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        disable_nagle_algorithm = True  # headers and body leave in two writes

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            proxy.handle(self, self.rfile.read(length))

    return Handler


def _parse(body: bytes) -> _Request:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    items = parsed if isinstance(parsed, list) else [parsed]
    methods = tuple(str(item.get("method")) for item in items if isinstance(item, dict))
    return _Request(body, parsed, methods)


def _answer_json(handler: BaseHTTPRequestHandler, value: Any) -> None:
    _answer(handler, 200, json.dumps(value).encode(), {"Content-Type": "application/json"})


def _close(handler: BaseHTTPRequestHandler, *, reset: bool) -> None:
    """Close the client's connection now: with a FIN, or (`reset`) with an RST."""
    handler.close_connection = True
    try:
        if reset:
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
        else:
            handler.connection.shutdown(socket.SHUT_RDWR)
        handler.connection.close()
    except OSError:
        pass
