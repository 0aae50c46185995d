"""Benchmark: segwatch's batched balance reads against a naive web3.py loop.

Starts its own anvil, deploys a TestToken and Multicall3 (at the canonical address),
funds N wallets with ETH and tokens, then reads every (wallet, asset) balance at one
pinned block twice: (a) `EvmAdapter.balances`, (b) `w3.eth.get_balance` plus
`token.functions.balanceOf(wallet).call()` per wallet. Prints a markdown table with
times, HTTP requests and reads per request, and fails if the results differ.

    .venv/bin/python tests/bench/bench_balances.py [--wallets 2000] [--repeat 3] [--check]

`--check` also exits 1 when a target is missed (speed-up >= 50x, >= 500 reads per request).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import requests
from web3 import HTTPProvider, Web3

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from chains.evm.adapter import EvmAdapter  # noqa: E402 - needs the repo on sys.path
from chains.types import Address, AssetRef, ChainHead  # noqa: E402

TARGET_SPEEDUP = 50.0
TARGET_READS_PER_REQUEST = 500.0
Balances = dict[tuple[str, str], int]


def load_helpers() -> ModuleType:
    """Return the devnet helpers module (start anvil, deploy, fund)."""
    import chains.evm.devnet

    return chains.evm.devnet


def setup_chain(helpers: ModuleType, node: Any, count: int) -> tuple[list[Address], AssetRef]:
    """Deploy token and Multicall3, fund `count` wallets; return wallets and the token."""
    token = helpers.deploy_test_token(node)
    helpers.install_multicall(node)
    wallets = helpers.random_wallets(count)
    helpers.set_balances(node, {w: 10**18 + 13 * i for i, w in enumerate(wallets)})
    helpers.mint_many(node, token, wallets, [10**6 * i + 7 for i in range(count)])
    return wallets, AssetRef("TUSD", 6, token)


def run_segwatch(
    url: str, wallets: list[Address], token: AssetRef, head: ChainHead
) -> tuple[float, int, Balances]:
    """Read with a fresh EvmAdapter; return (seconds, HTTP requests, balances)."""
    with EvmAdapter(url, expected_chain_id=None) as adapter:
        started = time.perf_counter()
        observations = adapter.balances(wallets, [AssetRef("ETH", 18), token], head)
        elapsed = time.perf_counter() - started
        made = adapter.requests_made
    if any(o.error or o.amount is None for o in observations):
        raise SystemExit("segwatch reported read errors")
    return elapsed, made, {(o.address, o.asset.symbol): int(o.amount or 0) for o in observations}


def run_naive(
    url: str, wallets: list[Address], token: AssetRef, head: ChainHead, abi: Any
) -> tuple[float, int, Balances]:
    """Read wallet by wallet with web3.py; return (seconds, HTTP requests, balances)."""
    session = requests.Session()
    methods: Counter[str] = Counter()

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        body = response.request.body
        payload = json.loads(body) if isinstance(body, str | bytes) else {}
        methods[str(payload.get("method"))] += 1

    session.hooks["response"].append(count)
    w3 = Web3(HTTPProvider(url, session=session))
    contract = w3.eth.contract(address=Web3.to_checksum_address(str(token.contract)), abi=abi)
    result: Balances = {}
    started = time.perf_counter()
    for wallet in wallets:
        address = Web3.to_checksum_address(wallet)
        result[(wallet, "ETH")] = int(w3.eth.get_balance(address, block_identifier=head.height))
        call = contract.functions.balanceOf(address)
        result[(wallet, "TUSD")] = int(call.call(block_identifier=head.height))
    elapsed = time.perf_counter() - started
    session.close()
    breakdown = ", ".join(f"{name} {n}" for name, n in methods.most_common())
    print(f"naive web3.py HTTP requests by method: {breakdown}")
    return elapsed, methods.total(), result


def report(
    reads: int, segwatch: tuple[float, int], naive: tuple[float, int]
) -> tuple[float, float]:
    """Print the markdown table; return (speed-up, segwatch reads per HTTP request)."""
    speedup = naive[0] / segwatch[0]
    per_request = reads / segwatch[1]
    print(f"\n{reads} balance reads (native + 1 ERC-20) at one pinned block\n")
    print("| method | time (s) | HTTP requests | reads / request |")
    print("|---|---:|---:|---:|")
    print(
        f"| segwatch EvmAdapter.balances | {segwatch[0]:.3f} | {segwatch[1]} | {per_request:.0f} |"
    )
    print(f"| naive web3.py loop | {naive[0]:.3f} | {naive[1]} | {reads / naive[1]:.1f} |")
    print(
        f"\nspeed-up: **{speedup:.0f}x** (target >= {TARGET_SPEEDUP:.0f}x); "
        f"reads per request {per_request:.0f} (target >= {TARGET_READS_PER_REQUEST:.0f})"
    )
    return speedup, per_request


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wallets", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="segwatch runs; the median is shown")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    helpers = load_helpers()
    binary = helpers.find_anvil()
    if binary is None:
        print("anvil not found (set SEGWATCH_ANVIL or install it in .tools)", file=sys.stderr)
        return 2
    node = helpers.start_anvil(binary)
    try:
        wallets, token = setup_chain(helpers, node, args.wallets)
        with EvmAdapter(node.url, expected_chain_id=None) as probe:
            head = probe.head()
        runs = [run_segwatch(node.url, wallets, token, head) for _ in range(args.repeat)]
        seconds = statistics.median(run[0] for run in runs)
        ours = runs[0][2]
        abi = helpers.load_artifact("TestToken")["abi"]
        naive_seconds, naive_requests, theirs = run_naive(node.url, wallets, token, head, abi)
    finally:
        node.stop()
    if ours != theirs:
        print("MISMATCH: segwatch and web3.py read different balances", file=sys.stderr)
        return 1
    print(f"results identical for all {len(ours)} (wallet, asset) pairs")
    speedup, per_request = report(len(ours), (seconds, runs[0][1]), (naive_seconds, naive_requests))
    missed = speedup < TARGET_SPEEDUP or per_request < TARGET_READS_PER_REQUEST
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
