"""Benchmark: a first (full) cycle and steady-state (incremental) cycles at scale, on anvil,
each replica in its own process (tests/bench/scale_worker.py) so that its memory is its own.

Seeds N wallets (native and one ERC-20 balances loaded into anvil as state: no N
transactions), writes books that match (two lines per wallet), then for each layout:
- `sqlite`: one process, one shard, the embedded store;
- `pg4x2`: PostgreSQL, the chain split in 4 wallet shards leased by 2 replicas
  (daemon/runtime/leases.py), run side by side;
imports the books (timed: the ledger import figure), runs the first cycle (every wallet
read: the naive full read), then `--steps` steady cycles, each after `--touched` wallets
received a token mint (three mintBatch transactions); with `--restart`, new replica
processes then run one more steady cycle (loading the books and the newest stored
balances again, as after a restart or a lease moving). Prints, per layout, the cycle wall
time (replicas in parallel), the sum of the shards' cycle times, HTTP requests, wallets
read, and each replica's RSS and peak RSS. Usage:

    .venv/bin/python tests/bench/bench_scale.py --wallets 1000000 --layouts sqlite pg4x2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from chains.evm.devnet import (  # noqa: E402
    deploy_test_token,
    find_anvil,
    install_multicall,
    mint_many,
    random_wallets,
    start_anvil,
)
from daemon.auth.policy import Principal  # noqa: E402
from daemon.bootstrap import Adapters, open_store  # noqa: E402
from daemon.inputs.config import Settings  # noqa: E402
from daemon.service import Service  # noqa: E402
from daemon.store.db import make_engine, upgrade  # noqa: E402
from tests.bench.evm_books import seed_wallets, write_books  # noqa: E402

FEEDER = Principal("bench-feeder", frozenset({"feeder"}), "bench")
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LAYOUTS = {"sqlite": (1, 1), "pg4x2": (4, 2)}  # (shards, replicas)


class Replica:
    """A scale_worker.py process, driven line by line."""

    def __init__(self, settings: Path, leases: bool) -> None:
        command = [sys.executable, str(REPO / "tests/bench/scale_worker.py"),
                   "--settings", str(settings), *(["--leases"] if leases else [])]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.ready = self.read()

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"replica exited with {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, BrokenPipeError, ValueError):
            self.ask({"do": "exit"})
        self.process.wait(timeout=60)


def store_for(layout: str, work: Path) -> tuple[str, str | None]:
    """A fresh store URL for the layout, and the PostgreSQL database to drop after."""
    if layout == "sqlite":
        return f"sqlite:///{work / 'bench.db'}", None
    name = f"sw_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url, name


def drop_database(name: str) -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run_layout(layout: str, args: argparse.Namespace, node: Any, token: str,
               wallets: Sequence[str], ledger: Path, work: Path) -> dict[str, Any]:
    shard_count, replica_count = LAYOUTS[layout]
    url, database = store_for(layout, work)
    chain: dict[str, Any] = {
        "name": "devnet", "family": "evm", "chain_id": 31337, "confirmations": 0,
        "full_recheck_seconds": args.period, "max_head_age_seconds": 10**7,
        "shards": shard_count, "freshness_seconds": 3600,
        "sources": [{"kind": "jsonrpc", "url": node.url, "timeout_seconds": 300,
                     "deadline_seconds": 600}],
        "tokens": [{"symbol": "USDC", "contract": token, "decimals": 6}]}
    raw: dict[str, Any] = {"store": {"url": url}, "chains": [chain],
                           "daemon": {"lease_seconds": 3600}}
    settings_file = work / f"settings-{layout}.json"
    settings_file.write_text(json.dumps(raw))
    replicas: list[Replica] = []
    try:
        service = Service(Settings(**raw), open_store(url), Adapters())
        started = time.perf_counter()
        service.import_ledger(ledger, dry_run=False, actor=FEEDER)
        imported = time.perf_counter() - started
        service.store.engine.dispose()
        del service
        print(f"[{layout}] ledger of {2 * len(wallets):,} lines imported in {imported:.1f} s",
              flush=True)

        def spread() -> list[Replica]:
            """Start the replicas; tick their leases until the shards are spread evenly."""
            started = [Replica(settings_file, leases=replica_count > 1)
                       for _ in range(replica_count)]
            for _ in range(3 * replica_count):
                held = [r.ask({"do": "tick"})["held"] for r in started]
                if sorted(len(h) for h in held) == \
                        [shard_count // replica_count] * replica_count:
                    break
            print(f"[{layout}] shards held: {held}", flush=True)
            return started

        replicas = spread()
        print(f"[{layout}] RSS of each replica before its first cycle "
              f"(imports, no wallets): {[round(r.ready['rss_kib'] / 1024) for r in replicas]} "
              "MiB", flush=True)
        pool = ThreadPoolExecutor(replica_count)
        rng = random.Random(11)

        def step(label: str) -> dict[str, Any]:
            started = time.perf_counter()
            command = {"do": "cycle", "profile": label.split()[0]}  # "first" or "steady"
            answers = list(pool.map(lambda r: r.ask(command), replicas))
            wall = time.perf_counter() - started
            cycles = [c for a in answers for c in a["cycles"]]
            bad = [c for c in cycles if c["error"] or c["scan_error"]]
            if bad:
                raise RuntimeError(f"cycle failed: {bad}")
            row = {"wall": wall, "sum": sum(c["seconds"] for c in cycles),
                   "read": sum(c["wallets_read"] for c in cycles),
                   "requests": sum(c["requests"] for c in cycles),
                   "full": sorted({c["full_read"] or "" for c in cycles}),
                   "rss_mib": [a["rss_kib"] / 1024 for a in answers],
                   "peak_mib": [a["peak_kib"] / 1024 for a in answers],
                   "gc": sum(a.get("gc_seconds", 0.0) for a in answers),
                   "gc_full": sum(a.get("gc_full", 0) for a in answers)}
            print(f"[{layout}] {label}: wall {wall:.2f} s, cycles summed {row['sum']:.2f} s "
                  f"(garbage collector {row['gc']:.2f} s, {row['gc_full']} full passes), "
                  f"{row['requests']} HTTP requests, {row['read']:,} wallets read "
                  f"(full: {row['full']}), RSS MiB {[round(x) for x in row['rss_mib']]}, "
                  f"peak MiB {[round(x) for x in row['peak_mib']]}", flush=True)
            return row

        first = step("first cycle")
        steady = []
        for index in range(args.steps):
            mint_many(node, token, rng.sample(wallets, args.touched), [1] * args.touched,
                      chunk=400)
            steady.append(step(f"steady cycle {index + 1}"))
        base_mib = [r.ready["rss_kib"] / 1024 for r in replicas]
        restarted = None
        if args.restart:  # new processes: the books and the kept balances loaded again
            for replica in replicas:
                replica.stop()
            replicas[:] = spread()
            mint_many(node, token, rng.sample(wallets, args.touched), [1] * args.touched,
                      chunk=400)
            restarted = step("steady cycle after a restart")
        return {"layout": layout, "import": imported, "first": first, "steady": steady,
                "base_mib": base_mib, "restarted": restarted}
    finally:
        for replica in replicas:
            replica.stop()
        if database:
            drop_database(database)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wallets", type=int, default=1_000_000)
    parser.add_argument("--touched", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--period", type=float, default=3600.0)
    parser.add_argument("--restart", action="store_true",
                        help="then restart the replicas and time one more steady cycle")
    parser.add_argument("--layouts", nargs="+", default=["sqlite", "pg4x2"],
                        choices=sorted(LAYOUTS))
    args = parser.parse_args()
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install`")
        return 2
    # anvil keeps every block's state in memory by default: seeding a million accounts
    # over hundreds of blocks outgrew 20 GiB. The cycles need only the recent states (a
    # steady step mines 3 blocks): 8 are kept (64 held 13.7 GiB after seeding 500,000
    # wallets; at 50,000, 492 MiB with 64 against 157 MiB with 4)
    node = start_anvil(binary, "--gas-limit", "1000000000", "--prune-history", "8")
    work = Path(tempfile.mkdtemp(prefix="segwatch-bench-scale-"))
    try:
        wallets = random_wallets(args.wallets)
        token = deploy_test_token(node, "Bench USD", "USDC", 6)
        install_multicall(node)
        started = time.perf_counter()
        seed_wallets(node, token, wallets)
        print(f"seeded {len(wallets):,} wallets in {time.perf_counter() - started:.1f} s",
              flush=True)
        ledger = work / "ledger.csv"
        write_books(ledger, wallets)
        results = [run_layout(layout, args, node, token, wallets, ledger, work)
                   for layout in args.layouts]
    finally:
        node.stop()
    print(f"\n{args.wallets:,} wallets x (ETH + USDC), {args.touched:,} touched per steady "
          f"cycle, recheck period {args.period:g} s; steady = median of {args.steps}\n")
    print("| layout | ledger import | first cycle (full read) | its peak RSS per replica "
          "| steady cycle wall | steady summed over shards | HTTP requests / steady cycle "
          "| wallets read / steady cycle | steady RSS per replica | per wallet above the "
          "empty process |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        steady = r["steady"]
        wall = statistics.median(s["wall"] for s in steady)
        summed = statistics.median(s["sum"] for s in steady)
        requests = statistics.median(s["requests"] for s in steady)
        read = statistics.median(s["read"] for s in steady)
        rss = [round(x) for x in steady[-1]["rss_mib"]]
        per_wallet = sum(a - b for a, b in zip(steady[-1]["rss_mib"], r["base_mib"],
                                               strict=True)) * 2**20 / args.wallets
        print(f"| {r['layout']} | {r['import']:.1f} s | {r['first']['wall']:.1f} s | "
              f"{[round(x) for x in r['first']['peak_mib']]} MiB | {wall:.2f} s | "
              f"{summed:.2f} s | {requests:.0f} | {read:,.0f} | {rss} MiB | "
              f"{per_wallet:,.0f} bytes |")
    for r in results:
        if r["restarted"]:
            after = r["restarted"]
            print(f"\n{r['layout']}: the steady cycle after a restart of the replicas "
                  f"{after['wall']:.2f} s (summed {after['sum']:.2f} s), "
                  f"{after['read']:,} wallets read, peak MiB "
                  f"{[round(x) for x in after['peak_mib']]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
