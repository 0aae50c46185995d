"""A JSON-RPC replay node: serves recorded blocks and receipts on loopback, as a real
source would, for chains no local node can run (OP-stack, Arbitrum).

`ReplayNode(chain_id, blocks, receipts, balances)` answers, single or batched:
`eth_chainId`, `eth_blockNumber`, `eth_getBlockByNumber` (by number or "latest", full
transactions or hashes), `eth_getTransactionReceipt`, `eth_getBalance` (by number or
EIP-1898 block hash, from `balances[(address, height)]`, default 0), `eth_getLogs`
(the recorded receipts' logs, filtered by range, block hash and topics), `eth_call` of an
ERC-20 `balanceOf` (from `tokens[(contract, address, height)]`, lowercase), `eth_getCode`
("0x": no Multicall3). Anything else (trace APIs included) is "method not found", as on
a node without them. `calls` counts what was asked.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from tests.httpserve import LoopbackServer, QuietHandler, answer

MAX_BODY = 16 * 1024 * 1024
BALANCE_OF = "0x70a08231"


class NodeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ReplayNode(LoopbackServer):
    """Serves `blocks` (height -> eth_getBlockByNumber(n, true) result), `receipts`
    (tx hash -> receipt) and `balances` ((lowercase address, height) -> wei)."""

    def __init__(self, chain_id: int, blocks: Mapping[int, Any], receipts: Mapping[str, Any],
                 balances: Mapping[tuple[str, int], int],
                 tokens: Mapping[tuple[str, str, int], int] | None = None) -> None:
        self.chain_id = chain_id
        self.tokens = dict(tokens or {})
        self.blocks = dict(blocks)
        self.receipts = {h.lower(): r for h, r in receipts.items()}
        self.balances = dict(balances)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), name="replaynode")

    def handle(self, body: Any) -> Any:
        if isinstance(body, list):
            return [self._one(item) for item in body]
        return self._one(body)

    def _one(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return {"jsonrpc": "2.0", "id": None,
                    "error": {"code": -32600, "message": "invalid request"}}
        method, params = str(item.get("method")), item.get("params") or []
        with self._lock:
            self.calls[method] += 1
        methods: dict[str, Callable[..., Any]] = {
            "eth_chainId": lambda: hex(self.chain_id),
            "eth_blockNumber": lambda: hex(max(self.blocks)),
            "eth_getBlockByNumber": self._block,
            "eth_getTransactionReceipt": lambda h: self.receipts.get(str(h).lower()),
            "eth_getBalance": self._balance,
            "eth_getLogs": self._logs,
            "eth_getCode": lambda address, at: "0x",
            "eth_call": self._call,
        }
        try:
            if method not in methods:
                raise NodeError(-32601, f"the method {method} does not exist/is not available")
            reply: dict[str, Any] = {"result": methods[method](*params)}
        except NodeError as exc:
            reply = {"error": {"code": exc.code, "message": exc.message}}
        return {"jsonrpc": "2.0", "id": item.get("id"), **reply}

    def _height(self, tag: Any) -> int:
        if tag == "latest":
            return max(self.blocks)
        if isinstance(tag, dict) and "blockHash" in tag:
            for height, block in self.blocks.items():
                if block["hash"].lower() == str(tag["blockHash"]).lower():
                    return height
            raise NodeError(-32001, f"block {tag['blockHash']} not found")
        return int(str(tag), 16)

    def _block(self, tag: Any, full: bool) -> Any:
        block = self.blocks.get(self._height(tag))
        if block is None or full:
            return block
        return {**block, "transactions": [t["hash"] for t in block["transactions"]]}

    def _balance(self, address: str, tag: Any) -> str:
        return hex(self.balances.get((address.lower(), self._height(tag)), 0))

    def _call(self, call: dict[str, Any], tag: Any) -> str:
        data = str(call.get("data") or call.get("input") or "")
        if not data.startswith(BALANCE_OF) or len(data) != 2 + 8 + 64:
            raise NodeError(3, "execution reverted")
        holder = "0x" + data[-40:].lower()
        key = (str(call.get("to")).lower(), holder, self._height(tag))
        return "0x" + f"{self.tokens.get(key, 0):064x}"

    def _logs(self, query: dict[str, Any]) -> list[Any]:
        logs = [log for r in self.receipts.values() for log in r.get("logs", [])]
        if "blockHash" in query:
            logs = [log for log in logs if log["blockHash"] == query["blockHash"]]
        else:
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            logs = [log for log in logs if first <= int(log["blockNumber"], 16) <= last]
        wanted = query.get("topics") or []
        return [log for log in logs
                if all(w is None or (i < len(log["topics"]) and log["topics"][i].lower() in
                                     [x.lower() for x in (w if isinstance(w, list) else [w])])
                       for i, w in enumerate(wanted))]


def _handler_for(node: ReplayNode) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                answer(self, 400, b"not json", {"Content-Type": "text/plain"})
                return
            content = json.dumps(node.handle(body)).encode()
            answer(self, 200, content, {"Content-Type": "application/json"})

    return Handler
