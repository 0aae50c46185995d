"""A small Esplora REST server over the real regtest litecoind of tests/litecoind.py.

Loaded as a plugin from tests/conftest.py. It serves, on 127.0.0.1 and a free port,
the subset of the Esplora API that segwatch reads, from the node's own RPC answers:

    /blocks/tip/hash  /blocks/tip/height  /blocks[/:start_height]  /block-height/:h
    /block/:hash  /address/:a  /address/:a/txs  /address/:a/txs/chain[/:last_seen_txid]

The server indexes the node's active chain block by block with `getblock <hash> 2`,
the way electrs does (one index per node, shared by the servers over it): every output (its script, address and satoshis), so that each
input's `prevout` is resolved, and each address's transactions in chain order. From
that index come `/address/:a` (`chain_stats` funded and spent sums, `tx_count` the
distinct transactions) and the address histories, which page like Esplora's:
`/address/:a/txs` lists up to 50 mempool transactions (newest first), then the newest
25 confirmed ones; `/txs/chain/:last_seen_txid` the next 25 confirmed ones after that
transaction. Mempool transactions come from `getrawmempool` + `getrawtransaction`,
their prevouts from the index or from their mempool parents. Amounts go from the
node's exact decimals to satoshis with `coins_to_sats`, never through a float. A path
may carry an `/api` prefix; faults match paths without it.

Fault injection for tests:
- `fail_with(429, times=2, retry_after="1", path="/address/")` answers the next two
  requests whose path matches `path` with HTTP 429 and that Retry-After header;
  `times=None` fails for ever.
- `edit_next(path, edit)` passes the JSON of the next matching answer through `edit`
  (which may also act on the node, e.g. reorganize the chain) and serves its result;
  `truncate_next(path)` serves the first half of the next matching body.
- `path` is a regular expression matched at the start of the path without `/api`
  (`"/address/"` matches every address request, `f"/address/{a}$"` only that one).
- `latency` (seconds) delays every answer, outside the server's lock, so concurrent
  requests overlap; `max_in_flight` is the most requests that were open at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import pytest

from chains.utxo.core_rpc import coins_to_sats
from tests.httpserve import LoopbackServer, QuietHandler, answer
from tests.litecoind import LitecoinNode, NodeRpcError

_PREFIX = r"^(?:/api)?"
HISTORY_PAGE = 25
"""Confirmed transactions per address-history page."""
MEMPOOL_LIMIT = 50
"""Mempool transactions listed first by `/address/:a/txs`."""
BLOCKS_PAGE = 10
"""Blocks per `/blocks/:start_height` answer."""
COINBASE_VOUT = 0xFFFF_FFFF
_TYPES = {"pubkeyhash": "p2pkh", "scripthash": "p2sh", "witness_v0_keyhash": "v0_p2wpkh",
          "witness_v0_scripthash": "v0_p2wsh", "witness_v1_taproot": "v1_p2tr",
          "nulldata": "op_return", "pubkey": "p2pk", "multisig": "multisig"}
"""Core's scriptPubKey types → Esplora's `scriptpubkey_type`."""

Json = dict[str, Any]
Answer = tuple[int, str, str]


@dataclass
class _Fault:
    path: str
    remaining: int | None
    status: int | None = None
    retry_after: str | None = None
    rewrite: Callable[[str], str] | None = None


def esplora_output(out: Json) -> Json:
    """A `getblock`/`getrawtransaction` output as an Esplora `vout` item (also a prevout)."""
    script = out["scriptPubKey"]
    item: Json = {"scriptpubkey": script["hex"], "scriptpubkey_asm": script.get("asm", ""),
                  "scriptpubkey_type": _TYPES.get(script.get("type", ""), "unknown"),
                  "value": coins_to_sats(out["value"], "litecoind", "vout.value")}
    address = _output_address(script)
    if address is not None:
        item["scriptpubkey_address"] = address
    return item


def esplora_tx(tx: Json, outputs: list[Json], prevout: Callable[[str, int], Json | None],
               status: Json) -> Json:
    """A verbose node transaction as Esplora's tx JSON, its `outputs` already converted."""
    vin: list[Json] = []
    for txin in tx["vin"]:
        if "coinbase" in txin:
            vin.append({"txid": "0" * 64, "vout": COINBASE_VOUT, "prevout": None,
                        "scriptsig": txin["coinbase"], "is_coinbase": True,
                        "sequence": txin["sequence"]})
        else:
            vin.append({"txid": txin["txid"], "vout": txin["vout"],
                        "prevout": prevout(txin["txid"], txin["vout"]),
                        "scriptsig": txin.get("scriptSig", {}).get("hex", ""),
                        "witness": txin.get("txinwitness", []), "is_coinbase": False,
                        "sequence": txin["sequence"]})
    body: Json = {"txid": tx["txid"], "version": tx["version"], "locktime": tx["locktime"],
                  "vin": vin, "vout": outputs, "size": tx["size"], "weight": tx["weight"],
                  "status": status}
    prevouts = [i["prevout"] for i in vin if not i["is_coinbase"]]
    if all(p is not None for p in prevouts):
        paid = sum(p["value"] for p in prevouts)
        body["fee"] = paid - sum(o["value"] for o in outputs) if prevouts else 0
    return body


def touched(tx: Json) -> list[str]:
    """The addresses an Esplora tx pays or spends from, each once, in first-seen order."""
    found = [i["prevout"].get("scriptpubkey_address") for i in tx["vin"] if i["prevout"]]
    found += [o.get("scriptpubkey_address") for o in tx["vout"]]
    return [a for a in dict.fromkeys(found) if a is not None]


@dataclass
class ChainIndex:
    """The node's active chain as Esplora indexes it, built incrementally."""

    hashes: list[str] = field(default_factory=list)
    outputs: dict[tuple[str, int], Json] = field(default_factory=dict)
    txs: dict[str, Json] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # oldest first
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
        for table in (self.hashes, self.outputs, self.txs, self.history, self.funded,
                      self.spent):
            table.clear()

    def _add_block(self, block: Json) -> None:
        status = {"confirmed": True, "block_height": block["height"],
                  "block_hash": block["hash"], "block_time": block["time"]}
        for tx in block["tx"]:
            outputs = [esplora_output(out) for out in tx["vout"]]
            body = esplora_tx(tx, outputs, lambda txid, n: self.outputs[(txid, n)], status)
            for txin in body["vin"]:
                address = (txin["prevout"] or {}).get("scriptpubkey_address")
                if address is not None:
                    _bump(self.spent, address, txin["prevout"]["value"])
            for n, out in enumerate(outputs):
                self.outputs[(tx["txid"], n)] = out
                if "scriptpubkey_address" in out:
                    _bump(self.funded, out["scriptpubkey_address"], out["value"])
            self.txs[tx["txid"]] = body
            for address in touched(body):
                self.history.setdefault(address, []).append(tx["txid"])

    def stats(self, address: str) -> dict[str, int]:
        """The Esplora `chain_stats` of `address`."""
        funded_count, funded_sum = self.funded.get(address, [0, 0])
        spent_count, spent_sum = self.spent.get(address, [0, 0])
        return {"funded_txo_count": funded_count, "funded_txo_sum": funded_sum,
                "spent_txo_count": spent_count, "spent_txo_sum": spent_sum,
                "tx_count": len(self.history.get(address, []))}

    def confirmed(self, address: str, after: str | None = None) -> list[Json]:
        """The next page of `address`'s confirmed txs, newest first: the newest ones, or
        those older than `after` (none when `after` is not in the history, as electrs)."""
        newest_first = self.history.get(address, [])[::-1]
        if after is not None:
            if after not in newest_first:
                return []
            newest_first = newest_first[newest_first.index(after) + 1:]
        return [self.txs[txid] for txid in newest_first[:HISTORY_PAGE]]


def _bump(totals: dict[str, list[int]], address: str, sats: int) -> None:
    entry = totals.setdefault(address, [0, 0])
    entry[0] += 1
    entry[1] += sats


def _output_address(script: Json) -> str | None:
    if isinstance(script.get("address"), str):
        return str(script["address"])
    addresses = script.get("addresses")
    return str(addresses[0]) if isinstance(addresses, list) and len(addresses) == 1 else None


class Mempool:
    """The node's mempool as Esplora txs, newest first (raw transactions are cached)."""

    def __init__(self) -> None:
        self._raw: dict[str, Json] = {}

    def read(self, node: LitecoinNode, index: ChainIndex) -> list[Json]:
        entries: dict[str, Json] = node.call("getrawmempool", True)
        for txid in entries.keys() - self._raw.keys():
            try:
                self._raw[txid] = node.call("getrawtransaction", txid, True)
            except NodeRpcError:  # left the mempool meanwhile
                continue
        for gone in self._raw.keys() - entries.keys():
            del self._raw[gone]
        outputs = {txid: [esplora_output(o) for o in tx["vout"]] for txid, tx in self._raw.items()}

        def prevout(txid: str, n: int) -> Json | None:
            return outputs[txid][n] if txid in outputs else index.outputs.get((txid, n))

        order = sorted(self._raw, key=lambda txid: (-int(entries[txid]["time"]), txid))
        return [esplora_tx(self._raw[txid], outputs[txid], prevout, {"confirmed": False})
                for txid in order]


class EsploraServer(LoopbackServer):
    """The server, its node, and the faults to inject; `url` is its base URL."""

    def __init__(self, node: LitecoinNode) -> None:
        self.node = node
        self.paths: list[str] = []
        self.latency = 0.0
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: list[_Fault] = []
        self._index, self._lock = _shared_index(node)
        self._mempool = Mempool()
        self._routes: list[tuple[re.Pattern[str], Callable[..., Answer]]] = [
            (re.compile(_PREFIX + r"/blocks/tip/hash$"), self._tip_hash),
            (re.compile(_PREFIX + r"/blocks/tip/height$"), self._tip_height),
            (re.compile(_PREFIX + r"/blocks(?:/(\d+))?$"), self._blocks),
            (re.compile(_PREFIX + r"/block-height/(\d+)$"), self._block_height),
            (re.compile(_PREFIX + r"/block/([0-9a-fA-F]{64})$"), self._block),
            (re.compile(_PREFIX + r"/address/([A-Za-z0-9]+)$"), self._address),
            (re.compile(_PREFIX + r"/address/([A-Za-z0-9]+)/txs$"), self._address_txs),
            (re.compile(_PREFIX + r"/address/([A-Za-z0-9]+)/txs/chain(?:/([0-9a-fA-F]{64}))?$"),
             self._address_chain_txs),
        ]
        super().__init__(_handler_for(self), name="esplora")

    # -- faults ------------------------------------------------------------------------

    def fail_with(self, status: int, times: int | None = 1,
                  retry_after: str | None = None, path: str = "") -> None:
        """Answer the next `times` requests (every one if None) whose path matches `path`
        with `status`."""
        with self._lock:
            self._faults.append(_Fault(path, times, status, retry_after))

    def edit_next(self, path: str, edit: Callable[[Any], Any], times: int | None = 1) -> None:
        """Serve `edit(answer)` instead of the JSON answer of the next `times` requests
        whose path matches `path`. `edit` runs under the server's lock."""
        def rewrite(body: str) -> str:
            return json.dumps(edit(json.loads(body)))
        with self._lock:
            self._faults.append(_Fault(path, times, rewrite=rewrite))

    def truncate_next(self, path: str, times: int | None = 1) -> None:
        """Serve the first half of the body (invalid JSON) of the next `times` successful
        answers whose path matches `path`."""
        with self._lock:
            self._faults.append(_Fault(path, times, rewrite=lambda body: body[:len(body) // 2]))

    def requested(self, path: str) -> list[str]:
        """The requested paths (without an `/api` prefix) that match `path`."""
        with self._lock:
            return [p for p in map(_bare, self.paths) if re.match(path, p)]

    # -- serving -----------------------------------------------------------------------

    def handle(self, path: str) -> tuple[int, str, str, dict[str, str]]:
        """Answer a GET of `path`, after `latency`, counting the requests open at once."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            return self.respond(path)
        finally:
            with self._lock:
                self._in_flight -= 1

    def respond(self, path: str) -> tuple[int, str, str, dict[str, str]]:
        """Return (status, content type, body, extra headers) for a GET of `path`."""
        with self._lock:
            self.paths.append(path)
            fault = self._next_fault(_bare(path))
            if fault is not None and fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return fault.status, "text/plain", "injected failure", headers
            status, content_type, body = self._route(path)
            if fault is not None and fault.rewrite is not None and status == 200:
                body = fault.rewrite(body)
            return status, content_type, body, {}

    def _route(self, path: str) -> Answer:
        for pattern, route in self._routes:
            match = pattern.match(path)
            if match:
                return route(*match.groups())
        return 404, "text/plain", "Not Found"

    def _next_fault(self, path: str) -> _Fault | None:
        self._faults = [f for f in self._faults if f.remaining != 0]
        fault = next((f for f in self._faults if re.match(f.path, path)), None)
        if fault is not None and fault.remaining is not None:
            fault.remaining -= 1
        return fault

    # -- routes ------------------------------------------------------------------------

    def _tip_hash(self) -> Answer:
        return 200, "text/plain", str(self.node.call("getbestblockhash"))

    def _tip_height(self) -> Answer:
        return 200, "text/plain", str(self.node.call("getblockcount"))

    def _blocks(self, start_height: str | None) -> Answer:
        """Up to ten blocks, newest first, from `start_height` (else the tip) down."""
        try:
            block_hash = self.node.call("getblockhash", int(start_height)) if start_height \
                else self.node.call("getbestblockhash")
        except NodeRpcError:
            return 404, "text/plain", "Block not found"
        blocks: list[Json] = []
        while block_hash and len(blocks) < BLOCKS_PAGE:
            header = self.node.call("getblockheader", block_hash, True)
            blocks.append(_block_json(header))
            block_hash = header.get("previousblockhash")
        return 200, "application/json", json.dumps(blocks)

    def _block_height(self, height: str) -> Answer:
        try:
            return 200, "text/plain", str(self.node.call("getblockhash", int(height)))
        except NodeRpcError:
            return 404, "text/plain", "Block not found"

    def _block(self, block_hash: str) -> Answer:
        try:
            header = self.node.call("getblockheader", block_hash.lower(), True)
        except NodeRpcError:
            return 404, "text/plain", "Block not found"
        return 200, "application/json", json.dumps(_block_json(header))

    def _address(self, address: str) -> Answer:
        if not self._valid(address):
            return 400, "text/plain", "Invalid Litecoin address"
        self._index.sync(self.node)
        pending = [tx for tx in self._mempool.read(self.node, self._index)
                   if address in touched(tx)]
        body = {"address": address, "chain_stats": self._index.stats(address),
                "mempool_stats": _mempool_stats(address, pending)}
        return 200, "application/json", json.dumps(body)

    def _address_txs(self, address: str) -> Answer:
        if not self._valid(address):
            return 400, "text/plain", "Invalid Litecoin address"
        self._index.sync(self.node)
        pending = [tx for tx in self._mempool.read(self.node, self._index)
                   if address in touched(tx)]
        txs = pending[:MEMPOOL_LIMIT] + self._index.confirmed(address)
        return 200, "application/json", json.dumps(txs)

    def _address_chain_txs(self, address: str, last_seen: str | None) -> Answer:
        if not self._valid(address):
            return 400, "text/plain", "Invalid Litecoin address"
        self._index.sync(self.node)
        txs = self._index.confirmed(address, last_seen.lower() if last_seen else None)
        return 200, "application/json", json.dumps(txs)

    def _valid(self, address: str) -> bool:
        return self.node.call("validateaddress", address).get("isvalid") is True


_INDEXES: dict[int, tuple[ChainIndex, threading.Lock]] = {}


def _shared_index(node: LitecoinNode) -> tuple[ChainIndex, threading.Lock]:
    """The index of `node`'s chain and the lock that guards it, shared by every server
    over that node, so that each test's server does not index the chain again."""
    return _INDEXES.setdefault(node.rpc_port, (ChainIndex(), threading.Lock()))


def _bare(path: str) -> str:
    """`path` without an `/api` prefix."""
    return path[4:] if path.startswith("/api/") else path


def _block_json(header: Json) -> Json:
    return {"id": header["hash"], "height": header["height"], "version": header["version"],
            "timestamp": header["time"], "mediantime": header["mediantime"],
            "tx_count": header["nTx"], "merkle_root": header["merkleroot"],
            "previousblockhash": header.get("previousblockhash"),
            "nonce": header["nonce"], "bits": int(header["bits"], 16)}


def _mempool_stats(address: str, pending: list[Json]) -> dict[str, int]:
    funded = [o["value"] for tx in pending for o in tx["vout"]
              if o.get("scriptpubkey_address") == address]
    spent = [i["prevout"]["value"] for tx in pending for i in tx["vin"]
             if i["prevout"] and i["prevout"].get("scriptpubkey_address") == address]
    return {"funded_txo_count": len(funded), "funded_txo_sum": sum(funded),
            "spent_txo_count": len(spent), "spent_txo_sum": sum(spent),
            "tx_count": len(pending)}


def _handler_for(server: EsploraServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            status, content_type, body, headers = server.handle(urlsplit(self.path).path)
            answer(self, status, body.encode(), {"Content-Type": content_type, **headers})

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
