"""Benchmark: what reconciling items (SPEC §8) cost a `segwatch run --once` cycle.

Seeds N wallets (native + one ERC-20 each) on a local anvil and a matching ledger cut
at the newest block (with 3 deliberate shortfalls), runs one cycle (it starts the
transfer scan), then mints tokens to T wallets after the cut-off — T deposits in
transit — and runs one cycle that scans them. Then, side by side in the same run:

- steady cycles (no new block) with the T deposits in transit (booked = ledger, the
  items explain the difference: only the 3 shortfalls are found);
- steady cycles after books cut after the deposits that book them (0 items).

Each cycle is the real CLI in its own process: wall time and peak RSS via wait4, the
in-process duration from its JSON. Usage:

    .venv/bin/python tests/bench/bench_transit.py --wallets 100000 --in-transit 10000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from bench_cycle import SHORT, _display, feeder_token, run_cli  # noqa: E402

from chains.evm.devnet import (  # noqa: E402
    AnvilNode,
    deploy_test_token,
    find_anvil,
    install_multicall,
    mint_many,
    random_wallets,
    set_balances,
    start_anvil,
)
from chains.types import Address  # noqa: E402

DEPOSIT = 7 * 10**6


def write_ledger(path: Path, wallets: list[Address], booked: set[Address]) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        for i, w in enumerate(wallets):
            eth = 10**15 + i + (1 if i < SHORT else 0)
            usdc = 10**6 + i + (DEPOSIT if w in booked else 0)
            out.writerow(["devnet", w, "segregated", f"c{i}", "ETH", _display(eth, 18)])
            out.writerow(["devnet", w, "segregated", f"c{i}", "USDC", _display(usdc, 6)])


def cut_here(node: AnvilNode) -> str:
    """The newest block's time as a cut-off; the next block comes a second later."""
    head = int(node.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    node.call("evm_setNextBlockTimestamp", [head + 1])
    return datetime.fromtimestamp(head, UTC).isoformat()


def steady(runs: int, work: Path, env: dict[str, str]) -> list[tuple[float, float, int, int]]:
    """`runs` cycles with no new block: (wall s, in-process s, peak RSS KiB, findings)."""
    out = []
    for _ in range(runs):
        code, text, wall, rss = run_cli(["run", "--once", "--json"], work, env)
        (cycle,) = json.loads(text)
        assert code == 1 and len(cycle["findings"]) == SHORT, (code, cycle["findings"][:5])
        out.append((wall, cycle["duration_seconds"], rss, len(cycle["findings"])))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wallets", type=int, default=100_000)
    parser.add_argument("--in-transit", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install`")
        return 2
    node = start_anvil(binary, "--gas-limit", "100000000")
    work = Path(tempfile.mkdtemp(prefix="segwatch-bench-transit-"))
    try:
        wallets = random_wallets(args.wallets)
        token = deploy_test_token(node, "Bench USD", "USDC", 6)
        install_multicall(node)
        for start in range(0, len(wallets), 5000):
            chunk = wallets[start:start + 5000]
            set_balances(node, {w: 10**15 + i for i, w in enumerate(chunk, start)})
        mint_many(node, token, wallets, [10**6 + i for i in range(len(wallets))])
        config = work / "segwatch.toml"
        config.write_text(f"""
[store]
url = "sqlite:///{work / 'bench.db'}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
sources = [{{ kind = "jsonrpc", url = "{node.url}" }}]
tokens = [{{ symbol = "USDC", contract = "{token}", decimals = 6 }}]
""")
        env = {**os.environ, "SEGWATCH_CONFIG": str(config)}
        books = {**env, "SEGWATCH_TOKEN": feeder_token(f"sqlite:///{work / 'bench.db'}")}
        ledger = work / "ledger.csv"
        write_ledger(ledger, wallets, set())
        code, *_ = run_cli(["ledger", "import", str(ledger), "--as-of", cut_here(node)],
                           work, books)
        assert code == 0, "ledger import failed"
        steady(1, work, env)  # starts the transfer scan at this block
        receivers = wallets[SHORT:SHORT + args.in_transit]
        t0 = time.perf_counter()
        mint_many(node, token, receivers, [DEPOSIT] * len(receivers))
        print(f"{len(receivers):,} deposits after the cut-off in "
              f"{time.perf_counter() - t0:.1f} s")
        code, text, scan_wall, _ = run_cli(["run", "--once", "--json"], work, env)
        (scanned,) = json.loads(text)
        assert code == 1 and len(scanned["findings"]) == SHORT, scanned["findings"][:5]
        with_items = steady(args.runs, work, env)
        write_ledger(ledger, wallets, set(receivers))
        code, *_ = run_cli(["ledger", "import", str(ledger), "--as-of", cut_here(node)],
                           work, books)
        assert code == 0, "second ledger import failed"
        without = steady(args.runs, work, env)
    finally:
        node.stop()

    def med(rows: list[tuple[float, float, int, int]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    print(f"\nthe cycle that scanned the {len(receivers):,} deposits: {scan_wall:.1f} s wall, "
          f"{scanned['duration_seconds']:.1f} s in-process")
    print(f"\n| {args.wallets:,} wallets, steady `run --once` (median of {args.runs}) | "
          f"wall | in-process | peak RSS |\n|---|---:|---:|---:|")
    for name, rows in ((f"{len(receivers):,} deposits in transit", with_items),
                       ("0 in transit (books cut after them)", without)):
        print(f"| {name} | {med(rows, 0):.2f} s | {med(rows, 1):.2f} s | "
              f"{med(rows, 2) / 1024:.0f} MiB |")
    print(f"| ratio | {med(with_items, 0) / med(without, 0):.2f}x | "
          f"{med(with_items, 1) / med(without, 1):.2f}x | "
          f"{med(with_items, 2) / med(without, 2):.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
