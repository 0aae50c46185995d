"""A lying JSON-RPC source: a loopback proxy in front of a real node that tells one lie.

`LiarProxy(upstream, lie, target=...)` forwards every JSON-RPC call (single or batch) to
`upstream` with httpx and rewrites the answers its lie is about:

    far_head     the newest block is claimed a million blocks ahead (its own hash)
    future_head  the newest block is stamped a day in the future (and one block ahead)
    balance      `target` is reported fully funded (eth_getBalance answers 10**19)
    swap_hash    every block asked for by number (not "latest") carries another hash
    withhold     block `height` is served without its transactions, receipts or traces
    huge         eth_getBalance answers a 4,000-digit quantity
    flood        every answer is a 100 MB body, streamed without a Content-Length
    drip         every answer trickles out at one byte a second

`lies` counts the answers it rewrote. Only loopback; every stream is bounded.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.httpserve import LoopbackServer, QuietHandler, answer

LIES = ("far_head", "future_head", "balance", "swap_hash", "withhold", "huge", "flood",
        "drip")
FLOOD_BYTES = 100 * 1024 * 1024
DRIP_SECONDS = 30
"""A drip stops after this many seconds (the client's deadline is shorter)."""


class LiarProxy(LoopbackServer):
    """Forwards JSON-RPC to `upstream`, telling `lie` (see the module docstring)."""

    def __init__(self, upstream: str, lie: str, *, target: str = "", height: int = -1) -> None:
        if lie not in LIES:
            raise ValueError(f"unknown lie {lie!r}")
        self.upstream, self.lie, self.target, self.height = upstream, lie, target.lower(), height
        self.lies = 0
        self._client = httpx.Client(timeout=10)
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if proxy.lie == "flood":
                    proxy.lies += 1
                    _flood(self)
                elif proxy.lie == "drip":
                    proxy.lies += 1
                    _drip(self, json.dumps(proxy.relay(body)).encode())
                else:
                    answer(self, 200, json.dumps(proxy.relay(body)).encode(),
                           {"Content-Type": "application/json"})

        super().__init__(Handler, name=f"liar-{lie}")

    def stop(self) -> None:
        super().stop()
        self._client.close()

    def relay(self, body: Any) -> Any:
        if isinstance(body, list):
            return [self.relay(item) for item in body]
        method, params = body.get("method"), body.get("params") or []
        reply = self._client.post(self.upstream, json=body).json()
        if "result" not in reply:
            return reply
        lied = self._tell(method, params, reply["result"])
        if lied is not _TRUTH:
            self.lies += 1
            reply = {**reply, "result": lied}
        return reply

    def _tell(self, method: str, params: list[Any], result: Any) -> Any:
        lie = self.lie
        latest = method == "eth_getBlockByNumber" and params and params[0] == "latest"
        if lie in ("far_head", "future_head") and isinstance(result, dict) and latest:
            ahead = 10**6 if lie == "far_head" else 1
            stamp = int(result["timestamp"], 16) + (86_400 if lie == "future_head" else 0)
            return {**result, "number": hex(int(result["number"], 16) + ahead),
                    "hash": "0x" + "ee" * 32, "timestamp": hex(stamp)}
        if lie == "far_head" and method == "eth_blockNumber":
            return hex(int(result, 16) + 10**6)
        if lie == "balance" and method == "eth_getBalance" and \
                str(params[0]).lower() == self.target:
            return hex(10 * 10**18)
        if lie == "swap_hash" and method == "eth_getBlockByNumber" and not latest and \
                isinstance(result, dict):
            return {**result, "hash": "0x" + "5a" * 32}
        if lie == "withhold":
            return self._withhold(method, params, result)
        if lie == "huge" and method == "eth_getBalance":
            return "0x" + "f" * 4000
        return _TRUTH

    def _withhold(self, method: str, params: list[Any], result: Any) -> Any:
        at = hex(self.height)
        if method == "eth_getBlockByNumber" and params and params[0] == at and \
                isinstance(result, dict):
            return {**result, "transactions": []}
        if method in ("debug_traceBlockByNumber", "trace_block") and params and \
                params[0] == at:
            return []
        if method == "eth_getLogs" and isinstance(result, list):
            kept = [log for log in result if log.get("blockNumber") != at]
            return kept if len(kept) != len(result) else _TRUTH
        return _TRUTH


_TRUTH = object()


def _flood(handler: QuietHandler) -> None:
    """A 100 MB answer in chunks, without a Content-Length (the client must count)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Connection", "close")
    handler.end_headers()
    chunk = b" " * (1024 * 1024)
    try:
        handler.wfile.write(b"[")
        for _ in range(FLOOD_BYTES // len(chunk)):
            handler.wfile.write(chunk)
    except OSError:
        pass  # the client gave up, as it should
    handler.close_connection = True


def _drip(handler: QuietHandler, content: bytes) -> None:
    """The true answer, one byte a second (for at most DRIP_SECONDS)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(content)))
    handler.end_headers()
    try:
        for index in range(min(len(content), DRIP_SECONDS)):
            handler.wfile.write(content[index:index + 1])
            handler.wfile.flush()
            time.sleep(1)
    except OSError:
        pass
    handler.close_connection = True
