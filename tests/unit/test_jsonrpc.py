"""Unit tests of the batched JSON-RPC client, against httpx.MockTransport."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chains.errors import SourceUnavailable
from chains.jsonrpc import JsonRpcClient, RetryPolicy, RpcError, RpcErrorResponse

SECRET_URL = "https://alice:hunter2@rpc.example.com/v3/0123456789abcdef0123456789abcdef?key=s3cr3t"
SECRETS = ("hunter2", "alice", "0123456789abcdef0123456789abcdef", "s3cr3t")
NO_WAIT = RetryPolicy(attempts=3, initial_wait=0, max_wait=0)

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: Any) -> JsonRpcClient:
    kwargs.setdefault("retry", NO_WAIT)
    return JsonRpcClient(SECRET_URL, transport=httpx.MockTransport(handler), **kwargs)


def echo_item(item: dict[str, Any]) -> dict[str, Any]:
    """Answer a request with its own params, or an error for method 'fail'."""
    if item["method"] == "fail":
        return {"jsonrpc": "2.0", "id": item["id"], "error": {"code": -32000, "message": "boom"}}
    return {"jsonrpc": "2.0", "id": item["id"], "result": item["params"]}


def echo_server(cap: int | None = None, refusal: str = "413", shuffle: bool = False) -> Handler:
    """A server that echoes params; batches above `cap` are refused in style `refusal`."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if not isinstance(body, list):
            return httpx.Response(200, json=echo_item(body))
        if cap is not None and len(body) > cap:
            if refusal == "413":
                return httpx.Response(413, text="too large")
            if refusal == "object":
                error = {"code": -32600, "message": "batch too large"}
                return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": error})
            body = body[:cap]
        answers = [echo_item(item) for item in body]
        if shuffle:
            random.Random(len(answers)).shuffle(answers)
        return httpx.Response(200, json=answers)

    return handle


def assert_redacted(exc: BaseException) -> None:
    text = str(exc)
    assert "rpc.example.com" in text
    for secret in SECRETS:
        assert secret not in text


def test_call_returns_result() -> None:
    """call() returns the `result` member of the response."""
    client = make_client(echo_server())
    assert client.call("eth_chainId", [1, 2]) == [1, 2]
    assert client.requests_made == 1


def test_call_error_body_raises_source_unavailable_without_secrets() -> None:
    """A JSON-RPC error object answering a whole request raises SourceUnavailable, redacted."""
    client = make_client(echo_server())
    with pytest.raises(RpcErrorResponse) as caught:
        client.call("fail", [])
    assert isinstance(caught.value, SourceUnavailable)
    assert caught.value.error == RpcError(-32000, "boom")
    assert_redacted(caught.value)


def test_batch_preserves_request_order_when_responses_are_shuffled() -> None:
    """batch() matches responses by id and returns them in request order."""
    client = make_client(echo_server(shuffle=True))
    results = client.batch([("m", [i]) for i in range(50)])
    assert results == [[i] for i in range(50)]
    assert client.requests_made == 1


def test_batch_returns_item_errors_as_values() -> None:
    """An error for one batch item is returned as an RpcError; the others still succeed."""
    client = make_client(echo_server())
    results = client.batch([("m", [1]), ("fail", []), ("m", [3])])
    assert results == [[1], RpcError(-32000, "boom"), [3]]


def test_empty_batch_sends_nothing() -> None:
    """An empty batch returns [] without an HTTP request."""
    client = make_client(echo_server())
    assert client.batch([]) == []
    assert client.requests_made == 0


@pytest.mark.parametrize("refusal", ["413", "object", "truncate"])
def test_batch_cap_is_halved_and_remembered(refusal: str) -> None:
    """A provider refusing batches above a cap still answers every request, and the client
    keeps the smaller batch size for its next batch."""
    client = make_client(echo_server(cap=40, refusal=refusal), max_batch=500)
    results = client.batch([("m", [i]) for i in range(300)])
    assert results == [[i] for i in range(300)]
    assert client.batch_size <= 40
    before = client.requests_made
    client.batch([("m", [i]) for i in range(client.batch_size * 3)])
    assert client.requests_made - before == 3


def test_batch_splits_at_max_batch() -> None:
    """A batch larger than max_batch is sent in ceil(n / max_batch) HTTP requests."""
    client = make_client(echo_server(), max_batch=10)
    assert client.batch([("m", [i]) for i in range(25)]) == [[i] for i in range(25)]
    assert client.requests_made == 3


def test_single_request_refused_raises() -> None:
    """A provider that refuses even a one-request batch raises SourceUnavailable."""
    client = make_client(echo_server(cap=0, refusal="413"))
    with pytest.raises(SourceUnavailable) as caught:
        client.batch([("m", [1]), ("m", [2])])
    assert_redacted(caught.value)


def test_missing_id_raises() -> None:
    """A response that does not carry the request's id raises SourceUnavailable."""
    client = make_client(lambda r: httpx.Response(200, json=[{"id": 999, "result": 1}]))
    with pytest.raises(SourceUnavailable, match="not answered"):
        client.batch([("m", [])])


def test_item_without_result_or_error_raises() -> None:
    """A response item with neither result nor error raises SourceUnavailable."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json=[{"id": item["id"]} for item in json.loads(request.content)]
        )

    with pytest.raises(SourceUnavailable, match="neither result nor error"):
        make_client(handle).batch([("m", [])])


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_http_status_is_retried_then_raises(status: int) -> None:
    """HTTP 429 and 5xx are retried (3 attempts) and then raise SourceUnavailable."""
    client = make_client(lambda r: httpx.Response(status))
    with pytest.raises(SourceUnavailable, match=f"HTTP {status}") as caught:
        client.call("m", [])
    assert client.requests_made == 3
    assert_redacted(caught.value)


def test_transient_error_then_success() -> None:
    """A request that fails once with 503 and then succeeds returns the result."""
    statuses = iter([503, 200])

    def handle(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        if status != 200:
            return httpx.Response(status)
        return httpx.Response(200, json=echo_item(json.loads(request.content)))

    client = make_client(handle)
    assert client.call("m", [7]) == [7]
    assert client.requests_made == 2


def test_client_error_status_is_not_retried() -> None:
    """HTTP 401 raises SourceUnavailable at once, without a retry."""
    client = make_client(lambda r: httpx.Response(401))
    with pytest.raises(SourceUnavailable, match="HTTP 401"):
        client.call("m", [])
    assert client.requests_made == 1


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b'[{"jsonrpc":"2.0","id":1,"res', b""])
def test_non_json_or_truncated_body_raises(body: bytes) -> None:
    """A body that is not complete JSON raises SourceUnavailable."""
    client = make_client(lambda r: httpx.Response(200, content=body))
    with pytest.raises(SourceUnavailable, match="not valid JSON"):
        client.batch([("m", [])])


def test_transport_error_raises_redacted() -> None:
    """A connection failure raises SourceUnavailable whose message has no URL secret."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    client = make_client(handle)
    with pytest.raises(SourceUnavailable, match="ConnectError") as caught:
        client.call("m", [])
    assert_redacted(caught.value)
    assert client.requests_made == 3


def test_timeout_raises_source_unavailable() -> None:
    """A read timeout raises SourceUnavailable saying how long was waited (issue 17:
    not a bare `ReadTimeout`), and a connect timeout that no connection was made."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def no_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(SourceUnavailable, match=r"no answer within 10 s \(ReadTimeout\)"):
        make_client(handle).call("m", [])
    with pytest.raises(SourceUnavailable, match=r"no connection within 10 s"):
        make_client(no_connection).call("m", [])
