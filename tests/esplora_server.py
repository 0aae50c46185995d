"""A small Esplora REST server over the real regtest litecoind of tests/litecoind.py.

Loaded as a plugin from tests/conftest.py. It serves, on 127.0.0.1 and a free port,
the subset of the Esplora API that segwatch reads, from the node's own RPC answers:

    /blocks/tip/hash  /blocks/tip/height  /block-height/:h  /block/:hash  /address/:a

`/address/:a` sums every confirmed output paid to the address (`funded_txo_sum`) and
every one of them spent since (`spent_txo_sum`) from an index the server builds block
by block with `getblock <hash> 2`, the way electrs does; amounts go from the node's
exact decimals to satoshis with `coins_to_sats`, never through a float. The mempool
is not indexed (`mempool_stats` is all zero). A path may carry an `/api` prefix.

Faults for retry tests: `fail_with(429, times=2, retry_after="1")` answers the next
two requests with HTTP 429 and that Retry-After header; `times=None` fails for ever.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from chains.utxo.core_rpc import coins_to_sats
from tests.litecoind import LitecoinNode, NodeRpcError

_PREFIX = r"^(?:/api)?"


@dataclass
class _Fault:
    status: int
    remaining: int | None
    retry_after: str | None


@dataclass
class AddressIndex:
    """Per-address funded and spent sums over the node's active chain, built incrementally."""

    hashes: list[str] = field(default_factory=list)
    outputs: dict[tuple[str, int], tuple[str | None, int]] = field(default_factory=dict)
    funded: dict[str, list[int]] = field(default_factory=dict)  # address -> [count, sats]
    spent: dict[str, list[int]] = field(default_factory=dict)

    def sync(self, node: LitecoinNode) -> None:
        """Index every block up to the node's tip; start over if the chain reorganized."""
        tip = int(node.call("getblockcount"))
        if self.hashes and (len(self.hashes) - 1 > tip or
                            node.call("getblockhash", len(self.hashes) - 1) != self.hashes[-1]):
            self._reset()  # a reorg: rebuild from genesis
        for height in range(len(self.hashes), tip + 1):
            block_hash = str(node.call("getblockhash", height))
            self._add_block(node.call("getblock", block_hash, 2))
            self.hashes.append(block_hash)

    def _reset(self) -> None:
        self.hashes.clear()
        self.outputs.clear()
        self.funded.clear()
        self.spent.clear()

    def _add_block(self, block: dict[str, Any]) -> None:
        for tx in block["tx"]:
            for txin in tx["vin"]:
                if "txid" in txin:
                    address, sats = self.outputs[(txin["txid"], txin["vout"])]
                    if address is not None:
                        _bump(self.spent, address, sats)
            for out in tx["vout"]:
                address = _output_address(out["scriptPubKey"])
                sats = coins_to_sats(out["value"], "litecoind", "vout.value")
                self.outputs[(tx["txid"], out["n"])] = (address, sats)
                if address is not None:
                    _bump(self.funded, address, sats)

    def stats(self, address: str) -> dict[str, int]:
        """The Esplora `chain_stats` of `address`."""
        funded_count, funded_sum = self.funded.get(address, [0, 0])
        spent_count, spent_sum = self.spent.get(address, [0, 0])
        return {"funded_txo_count": funded_count, "funded_txo_sum": funded_sum,
                "spent_txo_count": spent_count, "spent_txo_sum": spent_sum,
                "tx_count": funded_count + spent_count}


def _bump(totals: dict[str, list[int]], address: str, sats: int) -> None:
    entry = totals.setdefault(address, [0, 0])
    entry[0] += 1
    entry[1] += sats


def _output_address(script: dict[str, Any]) -> str | None:
    if isinstance(script.get("address"), str):
        return str(script["address"])
    addresses = script.get("addresses")
    return str(addresses[0]) if isinstance(addresses, list) and len(addresses) == 1 else None


class EsploraServer:
    """The server, its node, and the faults to inject; `url` is its base URL."""

    def __init__(self, node: LitecoinNode) -> None:
        self.node = node
        self.paths: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._index = AddressIndex()
        self._routes: list[tuple[re.Pattern[str], Callable[..., tuple[int, str, str]]]] = [
            (re.compile(_PREFIX + r"/blocks/tip/hash$"), self._tip_hash),
            (re.compile(_PREFIX + r"/blocks/tip/height$"), self._tip_height),
            (re.compile(_PREFIX + r"/block-height/(\d+)$"), self._block_height),
            (re.compile(_PREFIX + r"/block/([0-9a-fA-F]{64})$"), self._block),
            (re.compile(_PREFIX + r"/address/([A-Za-z0-9]+)$"), self._address),
        ]
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="esplora",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> EsploraServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def fail_with(self, status: int, times: int | None = 1,
                  retry_after: str | None = None) -> None:
        """Answer the next `times` requests (every one if None) with `status`."""
        with self._lock:
            self._faults.append(_Fault(status, times, retry_after))

    def respond(self, path: str) -> tuple[int, str, str, dict[str, str]]:
        """Return (status, content type, body, extra headers) for a GET of `path`."""
        with self._lock:
            self.paths.append(path)
            fault = self._next_fault()
            if fault is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return fault.status, "text/plain", "injected failure", headers
            for pattern, route in self._routes:
                match = pattern.match(path)
                if match:
                    return (*route(*match.groups()), {})
        return 404, "text/plain", "Not Found", {}

    def _next_fault(self) -> _Fault | None:
        while self._faults and self._faults[0].remaining == 0:
            self._faults.pop(0)
        if not self._faults:
            return None
        fault = self._faults[0]
        if fault.remaining is not None:
            fault.remaining -= 1
        return fault

    def _tip_hash(self) -> tuple[int, str, str]:
        return 200, "text/plain", str(self.node.call("getbestblockhash"))

    def _tip_height(self) -> tuple[int, str, str]:
        return 200, "text/plain", str(self.node.call("getblockcount"))

    def _block_height(self, height: str) -> tuple[int, str, str]:
        try:
            return 200, "text/plain", str(self.node.call("getblockhash", int(height)))
        except NodeRpcError:
            return 404, "text/plain", "Block not found"

    def _block(self, block_hash: str) -> tuple[int, str, str]:
        try:
            header = self.node.call("getblockheader", block_hash.lower(), True)
        except NodeRpcError:
            return 404, "text/plain", "Block not found"
        body = {"id": header["hash"], "height": header["height"], "version": header["version"],
                "timestamp": header["time"], "mediantime": header["mediantime"],
                "tx_count": header["nTx"], "merkle_root": header["merkleroot"],
                "previousblockhash": header.get("previousblockhash"),
                "nonce": header["nonce"], "bits": int(header["bits"], 16)}
        return 200, "application/json", json.dumps(body)

    def _address(self, address: str) -> tuple[int, str, str]:
        if self.node.call("validateaddress", address).get("isvalid") is not True:
            return 400, "text/plain", "Invalid Litecoin address"
        self._index.sync(self.node)
        body = {"address": address, "chain_stats": self._index.stats(address),
                "mempool_stats": {"funded_txo_count": 0, "funded_txo_sum": 0,
                                  "spent_txo_count": 0, "spent_txo_sum": 0, "tx_count": 0}}
        return 200, "application/json", json.dumps(body)


def _handler_for(server: EsploraServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, content_type, body, headers = server.respond(urlsplit(self.path).path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def esplora_server(litecoind: LitecoinNode) -> Iterator[EsploraServer]:
    """A fresh Esplora server over the session's litecoind (no faults), stopped after."""
    server = EsploraServer(litecoind).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def esplora(esplora_server: EsploraServer) -> str:
    """The base URL of a fresh Esplora server over the session's litecoind."""
    return esplora_server.url
