"""Benchmark: segwatch's block-range scan against a naive web3.py block loop.

Starts its own anvil, deploys a TestToken and a Forwarder, creates W watched wallets
plus 300 unwatched ones, funds them, then produces B blocks holding a realistic mix of
transactions (automine off; each block's `eth_sendTransaction`s go in one JSON-RPC
batch, then `evm_mine`): ETH payments, ERC-20 `transfer`s and mints, Forwarder
payments whose ETH reaches the recipient only by an internal call, and empty blocks.

Then it scans the B blocks for the watched wallets twice: (a) `EvmAdapter.scan` (one
call; the median of `--repeat` runs is shown), (b) a web3.py loop of
`get_block(n, full_transactions=True)` plus `get_logs` of the Transfer topic per
block, matched against the watched set in Python. The loop does *less* work than
segwatch: no receipts (success, fees) and no traces (internal transfers).

Both results are checked against the transfers the script itself sent: every
(tx, kind, from, to, amount) the loop finds must be in segwatch's result, and each
method must find exactly the expected native/token (and, for segwatch, internal)
transfers. Exits 1 on any mismatch.

    .venv/bin/python tests/bench/bench_scan.py [--blocks 2000] [--wallets 200] [--check]

`--check` also exits 1 when the speed-up target (>= 10x) is missed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from web3 import HTTPProvider, Web3

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from chains.evm.adapter import EvmAdapter  # noqa: E402 - needs the repo on sys.path
from chains.evm.devnet import (  # noqa: E402
    DEV_ACCOUNT,
    AnvilNode,
    call_data,
    deploy_contract,
    deploy_test_token,
    find_anvil,
    mint_many,
    random_wallets,
    set_balances,
    start_anvil,
)
from chains.evm.scan import TRANSFER_TOPIC  # noqa: E402
from chains.types import Address, ScanResult  # noqa: E402

TARGET_SPEEDUP = 10.0
UNWATCHED = 300
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
GWEI = 10**9
Found = tuple[str, str, str, str, int]
"""One transfer as both methods can report it: (tx hash, kind, from, to, amount)."""


@dataclass
class Chain:
    """What the seeding produced: the block range and the transfers it must contain."""

    token: Address
    forwarder: Address
    watched: list[Address]
    start: int
    end: int
    transactions: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    expected: set[Found] = field(default_factory=set)


class Seeder:
    """Builds the block range: one JSON-RPC batch of transactions per block, then mine."""

    def __init__(self, node: AnvilNode, chain: Chain, unwatched: list[Address],
                 rng: random.Random) -> None:
        self.node = node
        self.chain = chain
        self.watched = chain.watched
        self.watch = set(chain.watched)
        self.unwatched = unwatched
        self.rng = rng
        self.nonces: dict[str, int] = {}
        self.sent: list[tuple[str, int]] = []  # (tx hash, block it must land in)

    def party(self) -> Address:
        """A sender or recipient: a watched wallet 35% of the time."""
        pool = self.watched if self.rng.random() < 0.35 else self.unwatched
        return self.rng.choice(pool)

    def two_parties(self) -> tuple[Address, Address]:
        while True:
            sender, recipient = self.party(), self.party()
            if sender != recipient:
                return sender, recipient

    def tx(self, sender: str, to: str, value: int, data: bytes, gas: int) -> dict[str, Any]:
        nonce = self.nonces.get(sender, 0)
        self.nonces[sender] = nonce + 1
        return {"from": sender, "to": to, "value": hex(value), "data": "0x" + data.hex(),
                "gas": hex(gas), "nonce": hex(nonce), "maxFeePerGas": hex(50 * GWEI),
                "maxPriorityFeePerGas": hex(self.rng.randint(1, 3) * GWEI)}

    def transactions(self) -> list[tuple[dict[str, Any], list[tuple[str, str, str, int]]]]:
        """One block's transactions, each with the watched transfers it makes."""
        roll = self.rng.random()
        count = 0 if roll < 0.10 else self.rng.randint(8, 12) if roll < 0.15 else \
            self.rng.randint(2, 6)
        out: list[tuple[dict[str, Any], list[tuple[str, str, str, int]]]] = []
        for _ in range(count):
            kind = self.rng.choices(["eth", "token", "mint", "forward"], [40, 38, 10, 12])[0]
            if kind == "eth":
                sender, recipient = self.two_parties()
                value = self.rng.randint(1, 10**18)
                out.append((self.tx(sender, recipient, value, b"", 21_000),
                            [("native", sender, recipient, value)]))
            elif kind == "token":
                sender, recipient = self.two_parties()
                amount = self.rng.randint(1, 10**8)
                data = call_data("transfer(address,uint256)", ["address", "uint256"],
                                 [recipient, amount])
                out.append((self.tx(sender, self.chain.token, 0, data, 120_000),
                            [("token", sender, recipient, amount)]))
            elif kind == "mint":
                recipient = self.party()
                amount = self.rng.randint(1, 10**9)
                data = call_data("mint(address,uint256)", ["address", "uint256"],
                                 [recipient, amount])
                out.append((self.tx(DEV_ACCOUNT, self.chain.token, 0, data, 150_000),
                            [("token", ZERO_ADDRESS, recipient, amount)]))
            else:
                sender, recipient = self.two_parties()
                value = self.rng.randint(1, 10**17)
                data = call_data("forward(address)", ["address"], [recipient])
                out.append((self.tx(sender, self.chain.forwarder, value, data, 100_000),
                            [("native", sender, self.chain.forwarder, value),
                             ("internal", self.chain.forwarder, recipient, value)]))
            self.chain.kinds[kind] += 1
        return out

    def block(self, height: int) -> None:
        txs = self.transactions()
        if txs:
            hashes = self.node.rpc.batch([("eth_sendTransaction", [tx]) for tx, _ in txs])
            for tx_hash, (_, transfers) in zip(hashes, txs, strict=True):
                if not isinstance(tx_hash, str):
                    raise RuntimeError(f"eth_sendTransaction failed: {tx_hash}")
                self.sent.append((tx_hash, height))
                for kind, sender, recipient, amount in transfers:
                    if sender in self.watch or recipient in self.watch:
                        self.chain.expected.add((tx_hash.lower(), kind, sender, recipient,
                                                 amount))
        self.node.call("evm_mine")

    def check_receipts(self) -> None:
        """Every transaction succeeded, in the block it was meant for."""
        receipts = self.node.rpc.batch(
            [("eth_getTransactionReceipt", [tx_hash]) for tx_hash, _ in self.sent])
        for (tx_hash, height), receipt in zip(self.sent, receipts, strict=True):
            if not isinstance(receipt, dict) or receipt.get("status") != "0x1":
                raise RuntimeError(f"seed transaction {tx_hash} failed: {receipt}")
            if int(receipt["blockNumber"], 16) != height:
                raise RuntimeError(f"seed transaction {tx_hash} landed in block "
                                   f"{int(receipt['blockNumber'], 16)}, not {height}")


def seed(node: AnvilNode, blocks: int, wallets: int, rng: random.Random) -> Chain:
    """Deploy, fund and build `blocks` blocks of traffic; return what they hold."""
    token = deploy_test_token(node)
    forwarder = deploy_contract(node, "Forwarder")
    watched = random_wallets(wallets, seed=7)
    unwatched = [w for w in random_wallets(UNWATCHED, seed=8) if w not in set(watched)]
    everyone = watched + unwatched
    set_balances(node, {w: 10**22 for w in everyone})
    mint_many(node, token, everyone, [10**15] * len(everyone))
    replies = node.rpc.batch([("anvil_impersonateAccount", [w]) for w in everyone])
    if any(reply is not None for reply in replies):
        raise RuntimeError(f"anvil_impersonateAccount failed: {replies[:3]}")
    start = node.block_number() + 1
    chain = Chain(token, forwarder, watched, start, start + blocks - 1)
    seeder = Seeder(node, chain, unwatched, rng)
    seeder.nonces[DEV_ACCOUNT] = int(node.call("eth_getTransactionCount",
                                               [DEV_ACCOUNT, "latest"]), 16)
    node.call("evm_setAutomine", [False])
    try:
        for height in range(chain.start, chain.end + 1):
            seeder.block(height)
    finally:
        node.call("evm_setAutomine", [True])
    if node.block_number() != chain.end:
        raise RuntimeError(f"head is {node.block_number()}, expected {chain.end}")
    seeder.check_receipts()
    chain.transactions = len(seeder.sent)
    return chain


def found_by_segwatch(result: ScanResult) -> set[Found]:
    return {((t.tx_hash or "").lower(), t.kind, str(t.sender), str(t.recipient), int(t.amount))
            for t in result.transfers}


def run_segwatch(url: str, chain: Chain) -> tuple[float, int, ScanResult]:
    """Scan with a fresh EvmAdapter; return (seconds, HTTP requests, result)."""
    with EvmAdapter(url, expected_chain_id=None) as adapter:
        started = time.perf_counter()
        result = adapter.scan(chain.watched, chain.start, chain.end)
        elapsed = time.perf_counter() - started
        return elapsed, adapter.requests_made, result


def run_naive(url: str, chain: Chain) -> tuple[float, int, set[Found], Counter[str]]:
    """The web3.py loop: full block + Transfer logs per block, matched in Python.

    Returns (seconds, HTTP requests, transfers found, requests by method).
    """
    session = requests.Session()
    methods: Counter[str] = Counter()

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        body = response.request.body
        payload = json.loads(body) if isinstance(body, str | bytes) else {}
        methods[str(payload.get("method"))] += 1

    session.hooks["response"].append(count)
    w3 = Web3(HTTPProvider(url, session=session))
    watch = set(chain.watched)
    found: set[Found] = set()
    started = time.perf_counter()
    for height in range(chain.start, chain.end + 1):
        block = w3.eth.get_block(height, full_transactions=True)
        for tx in block["transactions"]:
            sender, recipient = tx["from"], tx.get("to")
            if tx["value"] > 0 and (sender in watch or recipient in watch):
                found.add((tx["hash"].to_0x_hex().lower(), "native", sender, recipient or "",
                           int(tx["value"])))
        logs = w3.eth.get_logs({"fromBlock": height, "toBlock": height,
                                "topics": [TRANSFER_TOPIC]})
        for log in logs:
            topics = log["topics"]
            if len(topics) != 3:
                continue
            sender = Web3.to_checksum_address(topics[1][-20:])
            recipient = Web3.to_checksum_address(topics[2][-20:])
            if sender in watch or recipient in watch:
                found.add((log["transactionHash"].to_0x_hex().lower(), "token", sender,
                           recipient, int.from_bytes(log["data"], "big")))
    elapsed = time.perf_counter() - started
    session.close()
    return elapsed, methods.total(), found, methods


def kinds(found: Iterable[Found]) -> Counter[str]:
    return Counter(item[1] for item in found)


def verify(chain: Chain, ours: set[Found], theirs: set[Found]) -> bool:
    """Print per-kind counts and every discrepancy; return whether all checks pass."""
    expected = chain.expected
    naive_expected = {f for f in expected if f[1] != "internal"}
    checks = [
        ("naive loop ⊆ segwatch", theirs - ours),
        ("segwatch misses a sent transfer", expected - ours),
        ("segwatch reports a transfer that was not sent", ours - expected),
        ("naive loop misses a sent native/token transfer", naive_expected - theirs),
        ("naive loop reports a transfer that was not sent", theirs - naive_expected),
    ]
    for label, got in (("sent (ground truth)", expected), ("segwatch", ours),
                       ("naive web3.py loop", theirs)):
        counts = kinds(got)
        print(f"{label:>19}: {len(got):5d} watched transfers — "
              + ", ".join(f"{k} {counts[k]}" for k in ("native", "token", "internal")))
    ok = True
    for label, diff in checks:
        if diff:
            ok = False
            print(f"MISMATCH ({label}): {len(diff)}, e.g. {sorted(diff)[:3]}", file=sys.stderr)
    if ok:
        print("verified: naive ⊆ segwatch, and both equal the transfers sent "
              "(segwatch additionally finds the internal ones)")
    return ok


def report(blocks: int, ours: tuple[float, int, int], theirs: tuple[float, int, int]) -> float:
    """Print the markdown table; return the speed-up (naive time / segwatch time)."""
    speedup = theirs[0] / ours[0]
    print(f"\n{blocks} blocks scanned for watched-wallet transfers\n")
    print("| method | time (s) | HTTP requests | blocks/s | transfers found |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, made, found) in (
        ("segwatch `EvmAdapter.scan` (blocks + logs + receipts + traces)", ours),
        ("naive web3.py loop (get_block full + get_logs per block)", theirs),
    ):
        print(f"| {name} | {seconds:.3f} | {made:,} | {blocks / seconds:,.0f} | {found:,} |")
    met = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
    print(f"\nratio (naive time / segwatch time): **{speedup:.1f}x** "
          f"(target >= {TARGET_SPEEDUP:.0f}x — {met})")
    print("note: the naive loop does less work than segwatch — no receipts (success, fees) "
          "and no traces (internal transfers); it counts a native value without checking "
          "the transaction succeeded.")
    return speedup


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--wallets", type=int, default=200, help="watched wallets")
    parser.add_argument("--repeat", type=int, default=2, help="segwatch runs; median shown")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the traffic")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)
    binary = find_anvil()
    if binary is None:
        print("anvil not found (set SEGWATCH_ANVIL or run `make install`)", file=sys.stderr)
        return 2
    node = start_anvil(binary)
    try:
        started = time.perf_counter()
        chain = seed(node, args.blocks, args.wallets, random.Random(args.seed))
        mix = ", ".join(f"{k} {n}" for k, n in chain.kinds.most_common())
        print(f"seeded blocks {chain.start}..{chain.end}: {chain.transactions:,} transactions "
              f"({mix}) for {len(chain.watched)} watched + {UNWATCHED} unwatched wallets "
              f"in {time.perf_counter() - started:.1f} s")
        runs = [run_segwatch(node.url, chain) for _ in range(args.repeat)]
        seconds = statistics.median(run[0] for run in runs)
        made, result = runs[0][1], runs[0][2]
        print(f"segwatch runs: {', '.join(f'{r[0]:.3f} s' for r in runs)} "
              f"({made} HTTP requests each: {[r[1] for r in runs]}); traces via "
              f"{result.traces}, {len(result.fees):,} fee payments, "
              f"{result.rechecked_blocks} bloom re-checks")
        naive_s, naive_made, theirs, methods = run_naive(node.url, chain)
        print("naive web3.py HTTP requests by method: "
              + ", ".join(f"{name} {n:,}" for name, n in methods.most_common()))
    finally:
        node.stop()
    ours = found_by_segwatch(result)
    ok = verify(chain, ours, theirs) and all(found_by_segwatch(r[2]) == ours for r in runs)
    speedup = report(args.blocks, (seconds, made, len(ours)), (naive_s, naive_made, len(theirs)))
    if not ok:
        return 1
    return 1 if args.check and speedup < TARGET_SPEEDUP else 0


if __name__ == "__main__":
    sys.exit(main())
