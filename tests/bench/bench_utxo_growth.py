"""Benchmark: Core-RPC cycles as the UTXO set grows, full reads (`scantxoutset`) against
incremental cycles (balances from tracked outputs), on a regtest litecoind.

Starts its own node, makes `--watched` random P2WPKH addresses (each paid one output),
then grows the UTXO set with `sendmany` transactions of `--per-tx` outputs to random
addresses nobody watches. At each size of `--sizes` (outputs created so far), it runs
one untimed cycle (its scan reads the growth's blocks), then pays `--touched` watched
wallets, mines a block and runs one full cycle
(`full_recheck_seconds = 0`: one `scantxoutset` per 1,000 addresses, each walking the
whole UTXO set) and one incremental cycle (the same service: no `scantxoutset`), timing
both. The point is a curve: the full cycle grows with the UTXO set, the incremental one
should stay flat. Usage:

    .venv/bin/python tests/bench/bench_utxo_growth.py --watched 100000 \\
        --sizes 200000,1000000,2000000
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bitcoinlib.encoding import pubkeyhash_to_addr_bech32

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from daemon.auth.policy import Principal  # noqa: E402
from daemon.bootstrap import Adapters, open_store  # noqa: E402
from daemon.inputs.config import Settings  # noqa: E402
from daemon.service import CycleResult, Service  # noqa: E402
from tests.clock import ManualClock  # noqa: E402
from tests.litecoind import MINER, LitecoinNode, require_litecoind, start_litecoind  # noqa: E402

FEEDER = Principal("bench-feeder", frozenset({"feeder"}), "bench")
DUST = Decimal("0.0001")


def random_addresses(count: int) -> list[str]:
    return [pubkeyhash_to_addr_bech32(os.urandom(20), prefix="rltc", witver=0)
            for _ in range(count)]


def pay(node: LitecoinNode, addresses: list[str], per_tx: int) -> int:
    """Pay each address one DUST output, `per_tx` outputs per transaction; mine."""
    for start in range(0, len(addresses), per_tx):
        outputs = {a: str(DUST) for a in addresses[start:start + per_tx]}
        node.call("sendmany", "", outputs, wallet=MINER)
        if (start // per_tx) % 5 == 4:
            node.mine(1)
    node.mine(1)
    return len(addresses)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watched", type=int, default=100_000)
    parser.add_argument("--sizes", default="200000,1000000,2000000")
    parser.add_argument("--per-tx", type=int, default=2_000)
    parser.add_argument("--touched", type=int, default=100)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    node = start_litecoind(require_litecoind(), ["-vbparams=mweb:-2:0", "-dbcache=1000",
                                                 "-maxtxfee=10"])
    work = Path(tempfile.mkdtemp(prefix="segwatch-bench-utxo-"))
    try:
        node.mine(400)  # spendable coinbase for the dust
        watched = random_addresses(args.watched)
        started = time.perf_counter()
        created = pay(node, watched, args.per_tx)
        print(f"paid {len(watched):,} watched addresses in {time.perf_counter() - started:.0f} s")
        ledger = work / "ledger.csv"
        with ledger.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
            for i, a in enumerate(watched):
                out.writerow(["litecoin", a, "segregated", f"c{i}", "LTC", str(DUST)])
        clock = ManualClock()
        chain: dict[str, Any] = {
            "name": "litecoin", "family": "utxo", "network": "litecoin-regtest",
            "confirmations": 0, "full_recheck_seconds": 3600,
            "sources": [{"kind": "core-rpc", "url": node.url, "timeout_seconds": 600,
                         "deadline_seconds": 1200, "max_response_bytes": 2**30}]}
        settings = Settings(store={"url": f"sqlite:///{work / 'bench.db'}"},  # type: ignore[arg-type]
                            chains=[chain])  # type: ignore[list-item]
        service = Service(settings, open_store(settings.store.url), Adapters(), clock=clock)
        service.import_ledger(ledger, dry_run=False, actor=FEEDER)
        incremental = service.settings.chains[0]
        full = incremental.model_copy(update={"full_recheck_seconds": 0.0})

        def cycle(settings_: Any) -> tuple[CycleResult, float]:
            clock.now += timedelta(seconds=60)
            t0 = time.perf_counter()
            result = service.run_cycle(settings_)
            assert result.error is None and result.scan_error is None, result
            return result, time.perf_counter() - t0

        _, seed_s = cycle(incremental)
        print(f"first cycle (seeds the tracked outputs): {seed_s:.1f} s")
        rows = []
        touched_at = 0
        for size in sizes:
            started = time.perf_counter()
            created += pay(node, random_addresses(max(0, size - created)), args.per_tx)
            print(f"UTXO set grown to {created:,} outputs created "
                  f"({time.perf_counter() - started:.0f} s)")
            _, catch_up = cycle(incremental)  # scans the growth's blocks: not timed below
            print(f"  catch-up cycle (scans the new blocks): {catch_up:.1f} s")
            for mode in ("full", "incremental"):
                touched = watched[touched_at:touched_at + args.touched]
                touched_at += args.touched
                pay(node, touched, args.per_tx)
                result, seconds = cycle(full if mode == "full" else incremental)
                assert (mode == "full") == bool(result.full_read), result.full_read
                rows.append((created, mode, seconds, result.wallets_read,
                             result.rpc_requests, len(result.findings)))
                print(f"  {mode:11} cycle: {seconds:7.2f} s, {result.wallets_read:,} wallets "
                      f"read, {result.rpc_requests} requests, {len(result.findings)} findings")
        print(f"\n{args.watched:,} watched addresses, {args.touched} paid before each cycle\n")
        print("| outputs created | full cycle (scantxoutset) | incremental cycle | ratio |\n"
              "|---|---|---|---|")
        for size in sorted({r[0] for r in rows}):
            f = next(r for r in rows if r[0] == size and r[1] == "full")
            i = next(r for r in rows if r[0] == size and r[1] == "incremental")
            print(f"| {size:,} | {f[2]:.2f} s ({f[4]} requests) | {i[2]:.2f} s "
                  f"({i[4]} requests) | {f[2] / i[2]:.0f}x |")
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
