"""Benchmark: segwatch's UTXO balance reads (core-rpc, esplora) against naive per-address loops.

Part 1, core-rpc. Starts its own regtest litecoind (`start_litecoind` of
tests/litecoind.py), creates N addresses in a `bench` wallet (3 of 5 bech32, 1 legacy,
1 p2sh-segwit), pays three in four of them from the miner wallet with `sendmany`
(every tenth paid address twice, so that it holds two outputs; the rest stay empty),
mines one block, then reads every address's balance at the node's tip twice:
(a) `CoreRpcAdapter.balances` on a fresh adapter (one `validateaddress` batch, then
one `scantxoutset` per 1,000 `addr(...)` descriptors), and once more on the same
adapter, which now knows the scripts (as on a daemon's later cycles); the median of
`--repeat` runs is shown; (b) one `scantxoutset start ["addr(a)"]` call per address,
one after the other, over one keep-alive httpx connection: what a per-address client
does. The targets are judged on the fresh adapter's read.

Part 2, esplora. A loopback Esplora server in this process (ThreadingHTTPServer on
127.0.0.1) serves `/blocks/tip/hash`, `/blocks/tip/height`, `/block-height/:h`,
`/block/:hash` and `/address/:a` in Esplora's JSON shape; every request sleeps
`--latency-ms`, and the server counts the requests in flight at once. Its data is
synthetic around real values: the first M of the part-1 addresses (valid
litecoin-regtest addresses), the node's real tip and genesis, and per address
`chain_stats` whose funded minus spent sums equal the balance the node holds (the
spent sums are made up). Then (a) `EsploraAdapter.balances` at each `--concurrency`
(median of `--repeat` runs; the server's maximum in-flight count must never exceed it),
(b) a plain loop of `GET /address/:a`, one request after the other.

Every method must read exactly the balances the script paid; any difference, or more
requests in flight than the adapter's concurrency, exits 1. Everything runs on
127.0.0.1, every loop is bounded in count and by `--time-limit`, and the node is
stopped at the end, also on error.

    .venv/bin/python tests/bench/bench_utxo.py [--addresses 2000] [--esplora-addresses 500]
        [--latency-ms 20] [--concurrency 8,16] [--repeat 3] [--time-limit 900] [--check]

`--check` also exits 1 when a target is missed (core-rpc >= 20x, esplora >= 8x at
every concurrency measured).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from chains.jsonrpc import JsonRpcClient, RetryPolicy, RpcError  # noqa: E402 - needs sys.path
from chains.types import Address, AssetRef, BalanceObservation, ChainHead  # noqa: E402
from chains.utxo.core_rpc import CoreRpcAdapter, coins_to_sats  # noqa: E402
from chains.utxo.esplora import EsploraAdapter  # noqa: E402
from tests.litecoind import MINER, LitecoinNode, find_litecoind, start_litecoind  # noqa: E402

NETWORK = "litecoin-regtest"
LTC = AssetRef("LTC", 8)
TARGET_CORE = 20.0
TARGET_ESPLORA = 8.0
ADDRESS_KINDS = ("bech32", "bech32", "bech32", "legacy", "p2sh-segwit")
WALLET_BATCH = 500
"""getnewaddress calls per JSON-RPC batch while creating the addresses."""
OUTPUTS_PER_SEND = 250
"""Outputs per `sendmany` transaction while funding."""
HTTP_TIMEOUT = 60.0
SCAN_TIMEOUT = 120.0
Balances = dict[Address, int]


class Deadline:
    """The script's overall time budget; every loop checks it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def check(self, what: str) -> None:
        """Raise TimeoutError once the budget is spent."""
        if time.monotonic() > self._end:
            raise TimeoutError(f"time limit of {self.seconds:g} s reached during {what}")


def coins(sats: int) -> str:
    """Return `sats` as an exact decimal string of coins (`0.00100037`)."""
    return f"{Decimal(sats).scaleb(-8):f}"


# -- part 1: regtest litecoind and core-rpc -----------------------------------------------

def make_addresses(node: LitecoinNode, count: int, deadline: Deadline) -> list[Address]:
    """Create `count` addresses of mixed kinds in a fresh `bench` wallet."""
    wallet = node.create_wallet("bench")
    client = JsonRpcClient(f"{node.url}/wallet/{wallet}", timeout=HTTP_TIMEOUT,
                           max_batch=WALLET_BATCH, retry=RetryPolicy(attempts=1))
    addresses: list[Address] = []
    try:
        for start in range(0, count, WALLET_BATCH):
            deadline.check("address creation")
            calls = [("getnewaddress", ["", ADDRESS_KINDS[i % len(ADDRESS_KINDS)]])
                     for i in range(start, min(count, start + WALLET_BATCH))]
            for answer in client.batch(calls):
                if isinstance(answer, RpcError) or not isinstance(answer, str):
                    raise RuntimeError(f"getnewaddress failed: {answer}")
                addresses.append(Address(answer))
    finally:
        client.close()
    if len(set(addresses)) != count:
        raise RuntimeError("the wallet handed out a duplicate address")
    return addresses


def fund(node: LitecoinNode, addresses: list[Address],
         deadline: Deadline) -> tuple[Balances, int]:
    """Pay 3 of 4 addresses (every tenth paid one twice), mine; return the expected sats
    per address and the number of outputs paid."""
    first: list[tuple[Address, int]] = []
    second: list[tuple[Address, int]] = []
    for i, address in enumerate(addresses):
        if i % 4 == 3:
            continue  # stays empty
        first.append((address, 100_000 + 37 * i))
        if i % 10 == 0:
            second.append((address, 50_000 + 11 * i))
    expected = dict.fromkeys(addresses, 0)
    for payments in (first, second):  # one address may appear only once per sendmany
        for start in range(0, len(payments), OUTPUTS_PER_SEND):
            deadline.check("funding")
            chunk = payments[start:start + OUTPUTS_PER_SEND]
            node.call("sendmany", "", {a: coins(sats) for a, sats in chunk}, wallet=MINER)
            for address, sats in chunk:
                expected[address] += sats
    node.mine(1)
    if node.call("getmempoolinfo")["size"] != 0:
        raise RuntimeError("funding transactions left in the mempool after mining")
    return expected, len(first) + len(second)


@dataclass
class Measured:
    """One method's wall time, HTTP requests and balances read."""

    seconds: float
    requests: int
    balances: Balances
    heights: set[int] = field(default_factory=set)
    max_in_flight: int = 0


def core_adapter(url: str, addresses: list[Address], block: ChainHead) -> list[Measured]:
    """Read twice with one fresh CoreRpcAdapter: first as on a daemon's first cycle
    (`validateaddress` of every address included), then again as on later cycles (the
    adapter remembers the scripts and the block header)."""
    reads = []
    with CoreRpcAdapter(url, network=NETWORK, scan_timeout=SCAN_TIMEOUT) as adapter:
        for _ in range(2):
            made = adapter.requests_made
            started = time.perf_counter()
            observations = adapter.balances(addresses, [LTC], block)
            elapsed = time.perf_counter() - started
            reads.append(Measured(elapsed, adapter.requests_made - made, _amounts(observations),
                                  {o.block.height for o in observations}))
    return reads


def core_naive(url: str, addresses: list[Address], deadline: Deadline) -> Measured:
    """One `scantxoutset` JSON-RPC call per address, sequential, on a keep-alive connection."""
    result: Balances = {}
    heights: set[int] = set()
    with httpx.Client(timeout=SCAN_TIMEOUT) as http:
        started = time.perf_counter()
        for index, address in enumerate(addresses):
            deadline.check("the naive scantxoutset loop")
            body = {"jsonrpc": "1.0", "id": index, "method": "scantxoutset",
                    "params": ["start", [f"addr({address})"]]}
            response = http.post(url, json=body)
            answer = json.loads(response.content, parse_float=Decimal)
            scan = answer.get("result")
            if (response.status_code != 200 or answer.get("error")
                    or not isinstance(scan, dict) or scan.get("success") is not True):
                raise RuntimeError(f"naive scantxoutset failed: {response.text[:200]}")
            result[address] = coins_to_sats(scan["total_amount"], "naive", "total_amount")
            heights.add(int(scan["height"]))
        elapsed = time.perf_counter() - started
    return Measured(elapsed, len(addresses), result, heights)


def _amounts(observations: Sequence[BalanceObservation]) -> Balances:
    errors = [o for o in observations if o.error is not None or o.amount is None]
    if errors:
        raise RuntimeError(f"{len(errors)} read errors, first: {errors[0].error}")
    return {o.address: int(o.amount or 0) for o in observations}


# -- part 2: loopback esplora ---------------------------------------------------------------

@dataclass
class EsploraState:
    """What the fake Esplora serves, its latency and its request counters."""

    tip: ChainHead
    genesis: str
    stats: dict[str, tuple[int, int]]  # address -> (funded sats, spent sats)
    latency: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    max_in_flight: int = 0
    served: int = 0

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.in_flight
            self.served = 0

    def counters(self) -> tuple[int, int]:
        """(requests served, maximum in flight) since the last reset."""
        with self.lock:
            return self.served, self.max_in_flight

    def enter(self) -> None:
        with self.lock:
            self.served += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Return (status, content type, body) for GET `path`."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] == ["api"]:
            parts = parts[1:]
        tip = self.tip
        if parts == ["blocks", "tip", "hash"]:
            return _text(tip.hash)
        if parts == ["blocks", "tip", "height"]:
            return _text(str(tip.height))
        if len(parts) == 2 and parts[0] == "block-height":
            found = {"0": self.genesis, str(tip.height): tip.hash}.get(parts[1])
            return _text(found) if found else (404, "text/plain", b"Block not found")
        if parts == ["block", tip.hash]:
            return _json({
                "id": tip.hash, "height": tip.height, "version": 536870912,
                "timestamp": tip.timestamp, "mediantime": tip.timestamp, "tx_count": 8,
                "size": 60_000, "weight": 240_000, "nonce": 0, "bits": 545259519,
                "difficulty": 4.6565423739069247e-10, "merkle_root": "00" * 32,
                "previousblockhash": "00" * 32,
            })
        if len(parts) == 2 and parts[0] == "address":
            if parts[1] not in self.stats:
                return 400, "text/plain", b"Invalid Bitcoin address"
            funded, spent = self.stats[parts[1]]
            outputs = 0 if funded == 0 else 1 + (spent > 0)
            return _json({
                "address": parts[1],
                "chain_stats": {"funded_txo_count": outputs, "funded_txo_sum": funded,
                                "spent_txo_count": int(spent > 0), "spent_txo_sum": spent,
                                "tx_count": outputs + (spent > 0)},
                "mempool_stats": {"funded_txo_count": 0, "funded_txo_sum": 0,
                                  "spent_txo_count": 0, "spent_txo_sum": 0, "tx_count": 0},
            })
        return 404, "text/plain", b"Not Found"


def _text(body: str) -> tuple[int, str, bytes]:
    return 200, "text/plain", body.encode()


def _json(body: dict[str, Any]) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(body).encode()


class EsploraServer(ThreadingHTTPServer):
    """Serves one EsploraState on 127.0.0.1 and a free port."""

    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops SYNs when many connect at once

    def __init__(self, state: EsploraState) -> None:
        super().__init__(("127.0.0.1", 0), _EsploraHandler)
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _EsploraHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Esplora behind a proxy
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, EsploraServer)
        state = server.state
        state.enter()
        try:
            time.sleep(state.latency)
            status, content_type, body = state.answer(urlsplit(self.path).path)
        finally:
            # Counted out before the answer is written: a client can send its next request
            # only after reading this one, so the count never overstates concurrency.
            state.leave()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def synthetic_stats(addresses: list[Address], expected: Balances) -> dict[str, tuple[int, int]]:
    """Per address (funded, spent) sums whose difference is its real balance."""
    stats = {}
    for i, address in enumerate(addresses):
        spent = 0 if i % 3 == 0 else 20_000 + 101 * i
        stats[str(address)] = (expected[address] + spent, spent)
    return stats


def esplora_adapter(server: EsploraServer, addresses: list[Address], concurrency: int,
                    block: ChainHead) -> Measured:
    """Read with a fresh EsploraAdapter; the server's counters cover exactly this call."""
    with EsploraAdapter(server.url, network=NETWORK, concurrency=concurrency,
                        timeout=HTTP_TIMEOUT) as adapter:
        server.state.reset()
        started = time.perf_counter()
        observations = adapter.balances(addresses, [LTC], block)
        elapsed = time.perf_counter() - started
        made = adapter.requests_made
        served, max_in_flight = server.state.counters()
    if served != made:
        raise RuntimeError(f"adapter counted {made} requests, the server served {served}")
    return Measured(elapsed, made, _amounts(observations),
                    {o.block.height for o in observations}, max_in_flight)


def esplora_naive(server: EsploraServer, addresses: list[Address],
                  deadline: Deadline) -> Measured:
    """GET /address/:a for one address after the other on a keep-alive connection."""
    result: Balances = {}
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        server.state.reset()
        started = time.perf_counter()
        for address in addresses:
            deadline.check("the naive esplora loop")
            response = http.get(f"{server.url}/address/{address}")
            response.raise_for_status()
            stats = response.json()["chain_stats"]
            result[address] = int(stats["funded_txo_sum"]) - int(stats["spent_txo_sum"])
        elapsed = time.perf_counter() - started
        served, max_in_flight = server.state.counters()
    return Measured(elapsed, served, result, set(), max_in_flight)


# -- running and reporting --------------------------------------------------------------------

def median_run(repeat: int, deadline: Deadline, what: str, run: Callable[[], Measured]) -> Measured:
    """Run `repeat` times; return the run of median time (all runs must read the same)."""
    runs = []
    for _ in range(repeat):
        deadline.check(what)
        runs.append(run())
    return median_of(runs, what)


def median_of(runs: list[Measured], what: str) -> Measured:
    """Return the run of median time; all runs must have read the same balances."""
    if any(r.balances != runs[0].balances for r in runs):
        raise RuntimeError(f"{what}: repeated runs read different balances")
    by_time = sorted(runs, key=lambda r: r.seconds)
    chosen = by_time[(len(by_time) - 1) // 2]
    chosen.max_in_flight = max(r.max_in_flight for r in runs)
    print(f"{what}: runs " + ", ".join(f"{r.seconds:.3f} s" for r in runs))
    return chosen


def mismatches(name: str, got: Balances, expected: Balances) -> int:
    """Print and count the addresses where `got` differs from `expected`."""
    wrong = [a for a in expected if got.get(a) != expected[a]]
    if set(got) != set(expected):
        wrong.append(Address("<different address sets>"))
    for address in wrong[:5]:
        print(f"MISMATCH {name}: {address} read {got.get(address)}, expected "
              f"{expected.get(address)}", file=sys.stderr)
    return len(wrong)


def report_core(ours: Measured, warm: Measured, naive: Measured, funded: int, outputs: int,
                utxo_set: int) -> float:
    """Print the core-rpc table; return the speed-up of a fresh adapter's read."""
    count = len(ours.balances)
    ratio = naive.seconds / ours.seconds
    print(f"\n## core-rpc: {count} addresses ({funded} funded, {outputs} outputs paid to them; "
          f"UTXO set {utxo_set} outputs), regtest litecoind\n")
    print("| method | time (s) | HTTP requests | addresses / request | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("segwatch CoreRpcAdapter.balances, fresh adapter", ours),
                      ("same adapter, second read (scripts known)", warm),
                      ("naive: one scantxoutset per address, sequential", naive)):
        print(f"| {name} | {run.seconds:.3f} | {run.requests} | {count / run.requests:.0f} | "
              f"{naive.seconds / run.seconds:.1f}x |")
    verdict = "met" if ratio >= TARGET_CORE else "MISSED"
    print(f"\ncore-rpc speed-up (fresh adapter): **{ratio:.1f}x** "
          f"(target >= {TARGET_CORE:.0f}x: {verdict})")
    return ratio


def report_esplora(naive: Measured, ours: dict[int, Measured], latency: float) -> list[float]:
    """Print the esplora table; return the speed-up at each concurrency."""
    count = len(naive.balances)
    print(f"\n## esplora: {count} addresses, {latency * 1000:.0f} ms per request, "
          "loopback server\n")
    print("| method | concurrency | time (s) | HTTP requests | max in flight | "
          "speed-up | bound |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| naive GET loop, one after the other | 1 | {naive.seconds:.3f} | {naive.requests} "
          f"| {naive.max_in_flight} | 1.0x | |")
    ratios = []
    for concurrency, run in ours.items():
        ratio = naive.seconds / run.seconds
        ratios.append(ratio)
        # sequential latency floors: the adapter's tip, tip and block reads around
        # ceil(n / c) waves of address reads, against n reads in a row
        bound = count / (math.ceil(count / concurrency) + 3)
        print(f"| segwatch EsploraAdapter.balances | {concurrency} | {run.seconds:.3f} | "
              f"{run.requests} | {run.max_in_flight} | **{ratio:.1f}x** | {bound:.1f}x |")
    print("\n`bound`: the speed-up if every request took exactly the injected latency "
          "(n reads in a row vs. ceil(n / c) + 3 rounds).")
    for (concurrency, run), ratio in zip(ours.items(), ratios, strict=True):
        verdict = "met" if ratio >= TARGET_ESPLORA else "MISSED"
        print(f"esplora speed-up at concurrency {concurrency}: **{ratio:.1f}x** "
              f"(target >= {TARGET_ESPLORA:.0f}x: {verdict}); max in flight "
              f"{run.max_in_flight} <= {concurrency}")
    return ratios


def parse_concurrency(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--addresses", type=int, default=2000, help="core-rpc addresses")
    parser.add_argument("--esplora-addresses", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=20.0,
                        help="injected latency per esplora request")
    parser.add_argument("--concurrency", type=parse_concurrency, default=[8, 16],
                        help="EsploraAdapter concurrencies to measure (8 is segwatch's default)")
    parser.add_argument("--repeat", type=int, default=3, help="adapter runs; the median is shown")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds for everything")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if not 1 <= args.esplora_addresses <= args.addresses or args.repeat < 1:
        parser.error("need 1 <= --esplora-addresses <= --addresses and --repeat >= 1")
    binary = find_litecoind()
    if binary is None:
        print("litecoind not found (install it or set SEGWATCH_LITECOIND)", file=sys.stderr)
        return 2
    deadline = Deadline(args.time_limit)
    node = start_litecoind(binary)
    try:
        addresses = make_addresses(node, args.addresses, deadline)
        expected, outputs = fund(node, addresses, deadline)
        utxo_set = int(node.call("gettxoutsetinfo")["txouts"])
        with CoreRpcAdapter(node.url, network=NETWORK) as probe:
            if probe.chain_id() != NETWORK:
                raise RuntimeError(f"the node serves {probe.chain_id()}, not {NETWORK}")
            block = probe.head()
            genesis = probe.block_at(0).hash
        pairs = []
        for _ in range(args.repeat):
            deadline.check("the core-rpc adapter runs")
            pairs.append(core_adapter(node.url, addresses, block))
        ours = median_of([pair[0] for pair in pairs], "core-rpc adapter, fresh")
        warm = median_of([pair[1] for pair in pairs], "core-rpc adapter, second read")
        naive = core_naive(node.url, addresses, deadline)
        if node.height() != block.height:
            raise RuntimeError("the chain moved during the core-rpc measurement")
    finally:
        node.stop()
    print(f"core-rpc naive loop: {naive.seconds:.3f} s")

    sample = addresses[:args.esplora_addresses]
    sample_expected = {a: expected[a] for a in sample}
    state = EsploraState(block, genesis, synthetic_stats(sample, expected),
                         args.latency_ms / 1000.0)
    server = EsploraServer(state)
    thread = threading.Thread(target=server.serve_forever, name="esplora", daemon=True)
    thread.start()
    try:
        with EsploraAdapter(server.url, network=NETWORK) as probe_e:
            if probe_e.chain_id() != NETWORK or probe_e.head() != block:
                raise RuntimeError("the loopback esplora does not serve the node's chain")
        esplora_runs: dict[int, Measured] = {}
        for concurrency in args.concurrency:
            esplora_runs[concurrency] = median_run(
                args.repeat, deadline, f"esplora adapter, concurrency {concurrency}",
                partial(esplora_adapter, server, sample, concurrency, block))
        esplora_base = esplora_naive(server, sample, deadline)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    print(f"esplora naive loop: {esplora_base.seconds:.3f} s")

    wrong = mismatches("core-rpc adapter", ours.balances, expected)
    wrong += mismatches("core-rpc adapter, second read", warm.balances, expected)
    wrong += mismatches("core-rpc naive", naive.balances, expected)
    wrong += mismatches("esplora naive", esplora_base.balances, sample_expected)
    for c, run in esplora_runs.items():
        wrong += mismatches(f"esplora adapter c={c}", run.balances, sample_expected)
    if ours.heights | warm.heights | naive.heights != {block.height}:
        print(f"MISMATCH: core-rpc reads saw heights {ours.heights | naive.heights}",
              file=sys.stderr)
        wrong += 1
    crowded = [c for c, run in esplora_runs.items() if run.max_in_flight > c]
    for c in crowded:
        print(f"FAIL: {esplora_runs[c].max_in_flight} esplora requests in flight at "
              f"concurrency {c}", file=sys.stderr)
    if esplora_base.max_in_flight > 1:
        print("FAIL: the naive esplora loop had requests in flight at once", file=sys.stderr)
        crowded.append(1)
    funded = sum(1 for sats in expected.values() if sats)
    core_ratio = report_core(ours, warm, naive, funded, outputs, utxo_set)
    esplora_ratios = report_esplora(esplora_base, esplora_runs, state.latency)
    if wrong or crowded:
        return 1
    print(f"\nbalances identical: core-rpc adapter = naive = paid for all {len(expected)} "
          f"addresses; esplora adapter (every concurrency) = naive = synthetic for all "
          f"{len(sample)}")
    missed = core_ratio < TARGET_CORE or any(r < TARGET_ESPLORA for r in esplora_ratios)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
