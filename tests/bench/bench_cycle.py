"""Benchmark: one full `segwatch run --once` cycle over many wallets on a local anvil.

Seeds N wallets (native + one ERC-20 each) and a matching sub-ledger with a few
deliberate shortfalls, imports it, then runs the real CLI in a subprocess and
reports wall time, HTTP requests (from the cycle's own report), balance reads per
request, and the peak RSS of the cycle process. Usage:

    .venv/bin/python tests/bench/bench_cycle.py --wallets 100000
    .venv/bin/python tests/bench/bench_cycle.py --wallets 5000 --no-multicall --naive-sample 5000

`--no-multicall` configures the chain without Multicall3 (plain batched reads, pinned
by number or by hash as the source's probe chooses) and says which pinning was used.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from chains.evm.devnet import (  # noqa: E402
    deploy_test_token,
    find_anvil,
    install_multicall,
    mint_many,
    random_wallets,
    set_balances,
    start_anvil,
)
from chains.types import Address, AssetRef  # noqa: E402

SHORT = 3  # wallets seeded below their allocation: the cycle must find exactly these


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, float, int]:
    """Run segwatch; return exit code, stdout, wall seconds and peak RSS in KiB."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, time.perf_counter() - started, usage.ru_maxrss


def feeder_token(store_url: str) -> str:
    """A token for a `books` user with the feeder role, made directly in the store
    (imports need an authenticated feeder since identity came in)."""
    from datetime import UTC, datetime

    from daemon.store.db import make_engine, upgrade
    from daemon.store.identity import Identities

    engine = make_engine(store_url)
    upgrade(engine)
    now = datetime.now(UTC)
    identities = Identities(engine)
    identities.add_user("books", ["feeder"], None, "local", "bench", now)
    token = identities.create_token("books", None, None, "bench", now)[1]
    engine.dispose()
    return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wallets", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=1_000,
                        help="wallets the naive web3.py loop reads in the same run")
    parser.add_argument("--no-multicall", action="store_true",
                        help="configure the chain without Multicall3 (the fallback path)")
    args = parser.parse_args()
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install`")
        return 2
    node = start_anvil(binary, "--gas-limit", "100000000")
    work = Path(tempfile.mkdtemp(prefix="segwatch-bench-"))
    try:
        wallets = random_wallets(args.wallets)
        token = deploy_test_token(node, "Bench USD", "USDC", 6)
        install_multicall(node)
        t0 = time.perf_counter()
        for start in range(0, len(wallets), 5000):
            chunk = wallets[start:start + 5000]
            set_balances(node, {w: 10**15 + i for i, w in enumerate(chunk, start)})
        mint_many(node, token, wallets, [10**6 + i for i in range(len(wallets))])
        print(f"seeded {len(wallets)} wallets in {time.perf_counter() - t0:.1f} s")
        config = work / "segwatch.toml"
        config.write_text(f"""
[store]
url = "sqlite:///{work / 'bench.db'}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
{'multicall = ""' if args.no_multicall else ''}
sources = [{{ kind = "jsonrpc", url = "{node.url}" }}]
tokens = [{{ symbol = "USDC", contract = "{token}", decimals = 6 }}]
""")
        ledger = work / "ledger.csv"
        with ledger.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
            for i, w in enumerate(wallets):
                eth = 10**15 + i + (1 if i < SHORT else 0)
                out.writerow(["devnet", w, "segregated", f"c{i}", "ETH", _display(eth, 18)])
                out.writerow(["devnet", w, "segregated", f"c{i}", "USDC", _display(10**6 + i, 6)])
        env = {**os.environ, "SEGWATCH_CONFIG": str(config)}
        books = {**env, "SEGWATCH_TOKEN": feeder_token(f"sqlite:///{work / 'bench.db'}")}
        code, _, import_s, import_rss = run_cli(["ledger", "import", str(ledger)], work, books)
        assert code == 0, "ledger import failed"
        code, out_text, cycle_s, cycle_rss = run_cli(["run", "--once", "--json"], work, env)
        (cycle,) = json.loads(out_text)
        reads = 2 * len(wallets)
        requests = cycle.get("rpc_requests") or 0
        assert code == 1 and len(cycle["findings"]) == SHORT, (code, len(cycle["findings"]))
        print(f"\n| wallets | ledger import | cycle wall | cycle in-process | HTTP requests | "
              f"reads/request | peak RSS (cycle) |\n|---|---|---|---|---|---|---|\n"
              f"| {len(wallets):,} | {import_s:.1f} s | {cycle_s:.1f} s | "
              f"{cycle['duration_seconds']:.1f} s | {requests} | "
              f"{reads / max(requests, 1):,.0f} | {cycle_rss / 1024:.0f} MiB |")
        print(f"(ledger import peak RSS {import_rss / 1024:.0f} MiB; findings "
              f"{len(cycle['findings'])} = the {SHORT} deliberate shortfalls)")
        if args.no_multicall:
            print(f"(no Multicall3; the source's probe chose pinning by {pinning(node.url)})")
        naive_baseline(node.url, wallets[:args.naive_sample], token, len(wallets), cycle_s)
    finally:
        node.stop()
    return 0


def pinning(url: str) -> str:
    """How a fresh adapter's probe pins reads on this node (as the cycle's did)."""
    from chains.evm.adapter import EvmAdapter

    with EvmAdapter(url, expected_chain_id=None, multicall_address=None) as adapter:
        head = adapter.head()
        adapter.balances([Address("0x" + "00" * 19 + "01")], [AssetRef("ETH", 18)], head)
        return str(adapter.pinning)


def naive_baseline(url: str, sample: list[Address], token: str, total: int,
                   cycle_s: float) -> None:
    """Time the naive web3.py loop on `sample` wallets at the same block and print the
    extrapolation to `total` wallets next to the measured cycle."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_balances import run_naive

    from chains.evm.adapter import EvmAdapter
    from chains.evm.devnet import load_artifact

    with EvmAdapter(url, expected_chain_id=None) as probe:
        head = probe.head()
    abi = load_artifact("TestToken")["abi"]
    seconds, requests, _ = run_naive(url, sample, AssetRef("USDC", 6, Address(token)), head, abi)
    projected = seconds * total / len(sample)
    print(f"\nnaive web3.py loop, same run: {len(sample):,} wallets in {seconds:.1f} s, "
          f"{requests:,} HTTP requests; extrapolated to {total:,} wallets: {projected:,.0f} s "
          f"({requests * total // len(sample):,} requests) -> segwatch cycle is "
          f"{projected / cycle_s:,.0f}x faster (ratio of measured cycle to extrapolated loop)")


def _display(units: int, decimals: int) -> str:
    whole, frac = divmod(units, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")


if __name__ == "__main__":
    raise SystemExit(main())
