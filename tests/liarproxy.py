"""A lying JSON-RPC source: a loopback proxy in front of a real anvil whose lie is switchable.

`LiarProxy(upstream)` listens on 127.0.0.1 (a free port) and forwards every POSTed
JSON-RPC call (single or batch) to `upstream` with httpx. Set `proxy.lie` (None: honest)
to one of LIES, with `target` (a wallet) and `height` (a block) where the lie needs them:

    far_head     eth_blockNumber and the "latest" block claim height 10**12 (own hash)
    ahead_head   the same, AHEAD (10**6) blocks beyond the real head (a height in range)
    future_head  the "latest" block is one block ahead and stamped a day in the future
    balance      `target` is reported fully funded (FUNDED wei): in eth_getBalance and in
                 the Multicall3 aggregate3 eth_call result (its getEthBalance item)
    swap_hash    the block at `height` (every block asked for by number, not "latest",
                 when `height` < 0) carries another hash; reads pinned to the real hash
                 are still answered by the node
    withhold     block `height` is served without its transactions, logs or traces
    huge         eth_getBalance answers a 4,000-digit hex quantity
    zero_parent  every block above `height` asked for by number carries an all-zero
                 parentHash (as Hardhat's EDR node served after `hardhat_mine`)
    refuse       eth_getBalance answers a JSON-RPC error about the request (REFUSAL, as
                 ganache 7 refuses block-hash parameters): no failover can help
    flood        every answer is a 100 MB body, streamed in 1 MiB chunks, no Content-Length
    drip         every answer trickles out at one byte a second (at most DRIP_SECONDS)

`lies` counts the answers it rewrote, `requests` the calls it saw. Every loop is bounded
in count and time; a client that gives up ends the stream.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from chains.evm.multicall import selector
from tests.httpserve import LoopbackServer, QuietHandler, answer

LIES = ("far_head", "ahead_head", "future_head", "balance", "swap_hash", "withhold", "huge", "flood",
        "drip", "refuse", "zero_parent")
REFUSAL = {"code": -32700, "message": 'Cannot wrap a "object" as a "QUANTITY" [/bold] [red]'}
"""The refusal's text carries Rich markup, which must be shown as written."""
FAR_HEAD = 10**12
AHEAD = 10**6
"""How far `ahead_head` claims: a height still in range, so head agreement must refuse it."""
FUNDED = 10 * 10**18
HUGE = "0x" + "f" * 4000
FLOOD_BYTES = 100 * 1024 * 1024
DRIP_SECONDS = 20
"""A drip stops after this many seconds (the client's deadline is far shorter)."""
_CHUNK = b" " * (1024 * 1024)
_TRUTH = object()


class LiarProxy(LoopbackServer):
    """Forwards JSON-RPC to `upstream`, telling `lie` (see the module docstring)."""

    def __init__(self, upstream: str, lie: str | None = None, *, target: str = "",
                 height: int = -1) -> None:
        self.upstream = upstream
        self.lie = lie
        self.target = target.lower()
        self.height = height
        self.lies = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=10.0)
        super().__init__(_handler_for(self), name="liarproxy")

    @property
    def lie(self) -> str | None:
        return self._lie

    @lie.setter
    def lie(self, lie: str | None) -> None:
        if lie is not None and lie not in LIES:
            raise ValueError(f"unknown lie {lie!r}")
        self._lie = lie

    def stop(self) -> None:
        super().stop()
        self._client.close()

    def _told(self) -> None:
        with self._lock:
            self.lies += 1

    def serve(self, handler: QuietHandler, body: bytes) -> None:
        with self._lock:
            self.requests += 1
        if self.lie == "flood":
            self._told()
            _flood(handler)
            return
        try:
            call = json.loads(body)
        except ValueError:
            answer(handler, 400, b"not json", {"Content-Type": "text/plain"})
            return
        content = json.dumps(self.relay(call)).encode()
        if self.lie == "drip":
            self._told()
            _drip(handler, content)
            return
        answer(handler, 200, content, {"Content-Type": "application/json"})

    def relay(self, call: Any) -> Any:
        """The upstream's answer to `call` (a batch item by item), with the lie told."""
        if isinstance(call, list):
            return [self.relay(item) for item in call]
        if self.lie == "refuse" and isinstance(call, dict) and \
                call.get("method") == "eth_getBalance":
            self._told()
            return {"jsonrpc": "2.0", "id": call.get("id"), "error": REFUSAL}
        reply = self._client.post(self.upstream, json=call).json()
        if not isinstance(call, dict) or not isinstance(reply, dict) or "result" not in reply:
            return reply
        params = call.get("params") or []
        lied = self._tell(str(call.get("method")), params, reply["result"])
        if lied is _TRUTH:
            return reply
        self._told()
        return {**reply, "result": lied}

    def _tell(self, method: str, params: list[Any], result: Any) -> Any:
        lie = self.lie
        latest = method == "eth_getBlockByNumber" and bool(params) and params[0] == "latest"
        if lie == "far_head" and method == "eth_blockNumber":
            return hex(FAR_HEAD)
        if lie == "ahead_head" and method == "eth_blockNumber" and isinstance(result, str):
            return hex(int(result, 16) + AHEAD)
        if lie in ("far_head", "ahead_head", "future_head") and latest and \
                isinstance(result, dict):
            stamp = int(result["timestamp"], 16) + (86_400 if lie == "future_head" else 0)
            real = int(result["number"], 16)
            number = {"far_head": FAR_HEAD, "ahead_head": real + AHEAD}.get(lie, real + 1)
            return {**result, "number": hex(number), "hash": "0x" + "ee" * 32,
                    "timestamp": hex(stamp)}
        if lie == "balance":
            return self._funded(method, params, result)
        if lie == "swap_hash" and method == "eth_getBlockByNumber" and params and \
                not latest and (self.height < 0 or params[0] == hex(self.height)) and \
                isinstance(result, dict):
            return {**result, "hash": "0x" + "5a" * 32}
        if lie == "withhold":
            return self._withhold(method, params, result)
        if lie == "zero_parent" and method == "eth_getBlockByNumber" and params and \
                not latest and isinstance(result, dict) and \
                int(result["number"], 16) > self.height:
            return {**result, "parentHash": "0x" + "00" * 32}
        if lie == "huge" and method == "eth_getBalance":
            return HUGE
        return _TRUTH

    def _funded(self, method: str, params: list[Any], result: Any) -> Any:
        """eth_getBalance or an aggregate3 result with `target` shown as FUNDED."""
        if method == "eth_getBalance" and params and str(params[0]).lower() == self.target:
            return hex(FUNDED)
        if method != "eth_call" or not params or not isinstance(params[0], dict) or \
                not isinstance(result, str):
            return _TRUTH
        data = bytes.fromhex(str(params[0].get("data", "0x"))[2:])
        if data[:4] != selector("aggregate3"):
            return _TRUTH
        (calls,) = abi_decode(["(address,bool,bytes)[]"], data[4:])
        (items,) = abi_decode(["(bool,bytes)[]"], bytes.fromhex(result[2:]))
        balance_of_eth = selector("getEthBalance")
        changed = False
        out = []
        for (_, _, call_data), (ok, returned) in zip(calls, items, strict=True):
            if call_data[:4] == balance_of_eth and \
                    "0x" + call_data[-20:].hex() == self.target:
                returned, changed = FUNDED.to_bytes(32, "big"), True
            out.append((ok, returned))
        if not changed:
            return _TRUTH
        return "0x" + abi_encode(["(bool,bytes)[]"], [out]).hex()

    def _withhold(self, method: str, params: list[Any], result: Any) -> Any:
        """Block `height` without its transactions, logs or traces."""
        at = hex(self.height)
        if method == "eth_getBlockByNumber" and params and params[0] == at and \
                isinstance(result, dict):
            return {**result, "transactions": []}
        if method in ("debug_traceBlockByNumber", "trace_block") and params and \
                params[0] == at:
            return []
        if method == "eth_getLogs" and isinstance(result, list):
            kept = [log for log in result
                    if not isinstance(log, dict) or log.get("blockNumber") != at]
            return kept if len(kept) != len(result) else _TRUTH
        return _TRUTH


def _handler_for(proxy: LiarProxy) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), 16 * 1024 * 1024)
            proxy.serve(self, self.rfile.read(length))

    return Handler


def _flood(handler: QuietHandler) -> None:
    """A 100 MB answer in 1 MiB chunks without a Content-Length (the client must count);
    nothing larger than one chunk is held in memory."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    try:
        handler.wfile.write(b'{"jsonrpc":"2.0","id":1,"result":"')
        for _ in range(FLOOD_BYTES // len(_CHUNK)):
            handler.wfile.write(_CHUNK)
    except OSError:
        pass  # the client gave up, as it should


def _drip(handler: QuietHandler, content: bytes) -> None:
    """The true answer, one byte a second, for at most DRIP_SECONDS."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(content)))
    handler.end_headers()
    handler.close_connection = True
    try:
        for index in range(min(len(content), DRIP_SECONDS)):
            handler.wfile.write(content[index:index + 1])
            handler.wfile.flush()
            time.sleep(1)
    except OSError:
        pass
