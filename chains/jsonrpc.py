"""Synchronous, batched JSON-RPC 2.0 over one `httpx.Client`.

Shared by the EVM adapter and Bitcoin Core-compatible RPC sources. Every failure of
the transport or of the server as a whole becomes `SourceUnavailable` naming the
source by its configured *name* (never its URL); an error for one item of a batch is
returned as an `RpcError` value. Configured headers (API keys) go with every request
and never into a message. Bodies are read within `max_response_bytes` and an overall
per-request `deadline` (see `chains.http`); either refusal is a source error.

Providers cap batch sizes in different ways (HTTP 413 or 400, one error object in
place of the array, or silently fewer answers than requests). The client halves its
batch size on any of these, retries what is left, and keeps the smaller size.

Providers also throttle with HTTP 200 and a JSON-RPC error body (Alchemy's code 429,
Infura's "request rate limited", QuickNode's "request limit reached"). A body that is
only such errors (one object, or an array of nothing else) is treated like HTTP 429:
retried with backoff, then `SourceUnavailable`, so the caller fails over instead of
shrinking batches or taking it for an answer about the request. One throttled item
among answers comes back as an `RpcError` whose `rate_limited` is true.
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any, TypeAlias

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from chains.errors import SourceUnavailable
from chains.http import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    BodyRefused,
    bounded_transport,
    describe_http_error,
    host_name,
    merged_headers,
    send_bounded,
)
from chains.urls import url_secrets

Params: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Positional or named JSON-RPC parameters."""

Request: TypeAlias = tuple[str, Params]
"""One JSON-RPC call: (method, params)."""


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error object the server returned for one request."""

    code: int
    message: str
    data: Any = None

    def __str__(self) -> str:
        return f"rpc error {self.code}: {self.message}"

    @property
    def rate_limited(self) -> bool:
        """Whether the error says the source is throttling the client: a failure of the
        source (worth another source), not an answer about the request."""
        text = self.message.lower()
        return self.code == 429 or any(hint in text for hint in _RATE_LIMIT_HINTS)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how fast to retry a request that failed transiently."""

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0


class RpcErrorResponse(SourceUnavailable):
    """The server answered a single call with a JSON-RPC error object."""

    def __init__(self, source: str, error: RpcError) -> None:
        super().__init__(source, str(error))
        self.error = error


class Transient(SourceUnavailable):
    """A failure worth retrying: transport errors, 429, 5xx, unreadable bodies;
    `retry_after` is the server's Retry-After in seconds, when it sent one."""

    def __init__(self, source: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(source, reason)
        self.retry_after = retry_after


_Transient = Transient

RETRY_AFTER_CAP = 30.0
"""The longest `Retry-After` (seconds) honoured; a longer one is waited for this long."""


def retry_after_seconds(header: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if
    absent or unreadable. A wait time, not an amount."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class BackoffOrRetryAfter:
    """tenacity wait: exponential backoff, or the server's Retry-After (capped) when it is
    longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait)

    def __call__(self, state: RetryCallState) -> float:
        backoff = float(self._backoff(state))
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, Transient) and failure.retry_after is not None:
            return max(backoff, min(failure.retry_after, RETRY_AFTER_CAP))
        return backoff


class _Refused(Exception):
    """The server refused a batch as a whole; a smaller one may pass."""


_MISSING: Any = object()
_REFUSED_STATUSES = frozenset({400, 413})
_RATE_LIMIT_HINTS = ("rate limit", "too many requests", "request rate", "request limit",
                     "request count exceeded", "compute units per second")


class JsonRpcClient:
    """A JSON-RPC 2.0 client for one endpoint. Not thread-safe; close it when done."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        max_batch: int = 500,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        parse_float: Callable[[str], Any] | None = None,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        """`parse_float` decodes the JSON numbers with a fraction (e.g. `decimal.Decimal`,
        for nodes that send amounts as decimal numbers); default: Python floats. `name`
        labels the source in every message (default: the URL's host); `headers` are sent
        with every request and never shown."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_response_bytes < 1 or deadline <= 0:
            raise ValueError("max_response_bytes and deadline must be positive")
        self._url = url
        self._source = name or host_name(url)
        self._secrets = url_secrets(url) + [v for v in (headers or {}).values() if v]
        self._headers = merged_headers(headers, {"Content-Type": "application/json"})
        self._max_bytes = max_response_bytes
        self._deadline = deadline
        self._retry = retry or RetryPolicy()
        self._http = httpx.Client(
            timeout=timeout, transport=transport or bounded_transport(verify=tls_context()))
        self._parse_float = parse_float
        self._ids = itertools.count(1)
        self.batch_size = max_batch
        self.requests_made = 0
        self._count_lock = threading.Lock()  # a scan sends requests from two threads

    @property
    def source(self) -> str:
        """The source's name, safe to log (never its URL)."""
        return self._source

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()

    def __enter__(self) -> JsonRpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, method: str, params: Params = ()) -> Any:
        """Return the `result` of one call.

        Raises RpcErrorResponse (a SourceUnavailable) when the server answers with an
        error object, SourceUnavailable on any transport or protocol failure.
        """
        request_id = next(self._ids)
        body = self._post(_envelope(request_id, method, params))
        if not isinstance(body, dict) or body.get("id") != request_id:
            raise SourceUnavailable(self._source, "response does not answer the request id")
        return self._result_or_raise(body)

    def batch(self, requests: Sequence[Request]) -> list[Any]:
        """Return one result per request, in request order; an item's error is an RpcError.

        Sends as few HTTP requests as the provider accepts. Raises SourceUnavailable when
        the source fails as a whole or does not answer a request even one at a time.
        """
        results: list[Any] = [_MISSING] * len(requests)
        pending: deque[int] = deque(range(len(requests)))
        while pending:
            take = min(self.batch_size, len(pending))
            chunk = [pending.popleft() for _ in range(take)]
            try:
                answered = self._exchange([requests[i] for i in chunk])
            except _Refused as refused:
                self._shrink(len(chunk), str(refused))
                pending.extendleft(reversed(chunk))
                continue
            missing = [index for pos, index in enumerate(chunk) if pos not in answered]
            for pos, value in answered.items():
                results[chunk[pos]] = value
            if missing:
                self._shrink(len(chunk), "fewer responses than requests")
                pending.extendleft(reversed(missing))
        return results

    def _exchange(self, requests: list[Request]) -> dict[int, Any]:
        """Send one batch; return {position in `requests`: result or RpcError}.

        Raises _Refused when the server rejects the batch as a whole.
        """
        ids = [next(self._ids) for _ in requests]
        payload = [
            _envelope(i, method, params) for i, (method, params) in zip(ids, requests, strict=True)
        ]
        body = self._post(payload)
        if isinstance(body, dict):
            if len(requests) > 1:
                raise _Refused(_describe_error_body(body))
            if body.get("id") != ids[0]:
                self._result_or_raise(body)
            body = [body]
        if not isinstance(body, list):
            raise SourceUnavailable(self._source, "batch response is not a JSON array")
        position = {request_id: pos for pos, request_id in enumerate(ids)}
        answered: dict[int, Any] = {}
        for item in body:
            item_id = item.get("id") if isinstance(item, dict) else None
            pos = position.get(item_id) if isinstance(item_id, int) else None
            if pos is not None and pos not in answered:
                answered[pos] = self._item_value(item)
        return answered

    def _shrink(self, tried: int, reason: str) -> None:
        """Halve the batch size after a refusal. Raises SourceUnavailable at size one."""
        if tried <= 1:
            raise SourceUnavailable(self._source, f"request not answered: {reason}")
        self.batch_size = max(1, tried // 2)

    def _post(self, payload: Any) -> Any:
        """POST `payload` with bounded retries; return the decoded JSON body.

        Raises _Refused (HTTP 400/413), SourceUnavailable on everything else that fails.
        """
        policy = self._retry
        retrying = Retrying(
            stop=stop_after_attempt(max(1, policy.attempts)),
            wait=BackoffOrRetryAfter(policy),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        content = json.dumps(payload, separators=(",", ":")).encode()
        return retrying(self._post_once, content, isinstance(payload, list))

    def _post_once(self, content: bytes, is_batch: bool) -> Any:
        """One HTTP round trip. Raises _Transient, _Refused or SourceUnavailable."""
        with self._count_lock:
            self.requests_made += 1
        try:
            request = self._http.build_request("POST", self._url, content=content,
                                               headers=self._headers)
            response = send_bounded(self._http, request, max_bytes=self._max_bytes,
                                    deadline=self._deadline)
        except BodyRefused as exc:  # not retried: the same source would do it again
            raise SourceUnavailable(self._source, str(exc)) from None
        except httpx.HTTPError as exc:
            raise _Transient(self._source, self._describe(exc)) from None
        status = response.status_code
        if status in _REFUSED_STATUSES and is_batch:
            raise _Refused(f"HTTP {status}")
        if status == 429 or status >= 500:
            raise _Transient(self._source, f"HTTP {status}",
                             retry_after_seconds(response.headers.get("Retry-After")))
        if status >= 300:
            raise SourceUnavailable(self._source, f"HTTP {status}")
        try:
            body = json.loads(response.content, parse_float=self._parse_float)
        except ValueError:
            raise _Transient(self._source, "response body is not valid JSON") from None
        except RecursionError:  # garbage such as "[[[[..." nested past the parser's limit
            raise _Transient(self._source, "response body is nested too deeply") from None
        throttled = _throttled(body)
        if throttled is not None:
            raise _Transient(self._source, f"rate limited: {throttled}")
        return body

    def _item_value(self, item: dict[str, Any]) -> Any:
        """Return the item's result or RpcError. Raises SourceUnavailable if it has neither."""
        error = item.get("error")
        if error is not None:
            return _to_rpc_error(error)
        if "result" not in item:
            raise SourceUnavailable(self._source, "response has neither result nor error")
        return item["result"]

    def _result_or_raise(self, body: dict[str, Any]) -> Any:
        """Return the body's result. Raises RpcErrorResponse or SourceUnavailable."""
        value = self._item_value(body)
        if isinstance(value, RpcError):
            raise RpcErrorResponse(self._source, value)
        return value

    def _describe(self, exc: Exception) -> str:
        return describe_http_error(exc, self._secrets, self._http)


@cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every client shares (httpx's defaults). Building them loads the CA
    bundle, ~50 ms of CPU, and the daemon creates a client per source per cycle."""
    return httpx.create_ssl_context()


def _envelope(request_id: int, method: str, params: Params) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def _to_rpc_error(error: Any) -> RpcError:
    if not isinstance(error, dict):
        return RpcError(code=0, message=str(error)[:200])
    code = error.get("code")
    return RpcError(
        code=code if isinstance(code, int) else 0,
        message=str(error.get("message", ""))[:500],
        data=error.get("data"),
    )


def _throttled(body: Any) -> RpcError | None:
    """The rate-limit error of a body made only of rate-limit errors, else None."""
    items = body if isinstance(body, list) else [body]
    errors = [_to_rpc_error(item["error"]) for item in items
              if isinstance(item, dict) and item.get("error") is not None]
    if errors and len(errors) == len(items) and all(e.rate_limited for e in errors):
        return errors[0]
    return None


def _describe_error_body(body: dict[str, Any]) -> str:
    error = body.get("error")
    return str(_to_rpc_error(error)) if error is not None else "single object for a batch"

