"""Benchmark: steady-state cycles with incremental reads against full reads, on anvil.

Seeds N wallets (native + one ERC-20 each, by state loaded into anvil, no million
transactions) and books matching them, then runs one service over the chain through a
counting proxy (what a provider would bill: HTTP requests and JSON-RPC calls, the calls
inside batches counted one by one). Each step touches `--touched` wallets with token
mints (three mintBatch transactions, three blocks), advances the service's clock by
`--block-seconds`, and runs one cycle, alternating a full read (`full_recheck_seconds =
0`, the naive baseline) with an incremental one (the rotating slice of a
`--period`-second recheck). Prints per-cycle medians side by side and the provider cost
per hour at one cycle per block. Usage:

    .venv/bin/python tests/bench/bench_incremental.py --wallets 100000 --touched 1000
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

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
from daemon.service import CycleResult, Service  # noqa: E402
from tests.bench.evm_books import seed_wallets, write_books  # noqa: E402
from tests.clock import ManualClock  # noqa: E402

FEEDER = Principal("bench-feeder", frozenset({"feeder"}), "bench")


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.calls = 0
        self.methods: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def take(self) -> tuple[int, int]:
        with self.lock:
            taken = (self.requests, self.calls)
            self.requests = self.calls = 0
            return taken


def counting_proxy(upstream: str, counter: Counter) -> tuple[http.server.ThreadingHTTPServer,
                                                             str]:
    """A loopback proxy that counts HTTP requests and JSON-RPC calls."""
    client = httpx.Client(timeout=120)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            payload = json.loads(body)
            with counter.lock:
                counter.requests += 1
                counter.calls += len(payload) if isinstance(payload, list) else 1
                counter.methods.update(c.get("method", "?") for c in
                                       (payload if isinstance(payload, list) else [payload]))
            answer = client.post(upstream, content=body,
                                 headers={"Content-Type": "application/json"})
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wallets", type=int, default=100_000)
    parser.add_argument("--touched", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=6, help="cycles of each kind")
    parser.add_argument("--block-seconds", type=float, default=12.0)
    parser.add_argument("--period", type=float, default=3600.0)
    args = parser.parse_args()
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install`")
        return 2
    node = start_anvil(binary, "--gas-limit", "1000000000")
    work = Path(tempfile.mkdtemp(prefix="segwatch-bench-incremental-"))
    counter = Counter()
    proxy, proxy_url = counting_proxy(node.url, counter)
    try:
        wallets = random_wallets(args.wallets)
        token = deploy_test_token(node, "Bench USD", "USDC", 6)
        install_multicall(node)
        t0 = time.perf_counter()
        seed_wallets(node, token, wallets)
        print(f"seeded {len(wallets):,} wallets in {time.perf_counter() - t0:.1f} s")
        ledger = work / "ledger.csv"
        write_books(ledger, wallets)
        clock = ManualClock()
        chain: dict[str, Any] = {
            "name": "devnet", "family": "evm", "chain_id": 31337, "confirmations": 0,
            "full_recheck_seconds": args.period, "max_head_age_seconds": 10**7,
            "sources": [{"kind": "jsonrpc", "url": proxy_url, "timeout_seconds": 120,
                         "deadline_seconds": 300}],
            "tokens": [{"symbol": "USDC", "contract": token, "decimals": 6}]}
        settings = Settings(store={"url": f"sqlite:///{work / 'bench.db'}"},  # type: ignore[arg-type]
                            chains=[chain])  # type: ignore[list-item]
        service = Service(settings, open_store(settings.store.url), Adapters(), clock=clock)
        t0 = time.perf_counter()
        service.import_ledger(ledger, dry_run=False, actor=FEEDER)
        print(f"ledger imported in {time.perf_counter() - t0:.1f} s")
        incremental = service.settings.chains[0]
        full = incremental.model_copy(update={"full_recheck_seconds": 0.0})
        rng = random.Random(11)

        def cycle(settings_: Any) -> tuple[CycleResult, float, int, int]:
            counter.take()
            started = time.perf_counter()
            result = service.run_cycle(settings_)
            seconds = time.perf_counter() - started
            assert result.error is None and result.scan_error is None, result
            return (result, seconds, *counter.take())

        first, first_s, first_req, first_calls = cycle(incremental)
        counter.methods.clear()
        print(f"first cycle (a full read): {first_s:.1f} s, {first_req} HTTP requests, "
              f"{first_calls} JSON-RPC calls, {first.wallets_read:,} wallets read")
        rows: dict[str, list[tuple[float, int, int, int]]] = {"full": [], "incremental": []}
        for step in range(2 * args.steps):
            mode = "full" if step % 2 == 0 else "incremental"
            touched = rng.sample(wallets, args.touched)
            counter.take()
            mint_many(node, token, touched, [1] * len(touched), chunk=400)
            clock.now += timedelta(seconds=args.block_seconds)
            result, seconds, requests, calls = cycle(full if mode == "full" else incremental)
            assert (mode == "full") == bool(result.full_read), result.full_read
            rows[mode].append((seconds, requests, calls, result.wallets_read))
            print(f"  {mode:11} cycle: {seconds:6.2f} s, {requests:4} requests, "
                  f"{calls:5} calls, {result.wallets_read:,} wallets read, "
                  f"{len(result.findings)} findings; calls by method: "
                  f"{dict(counter.methods.most_common(6))}")
            counter.methods.clear()
        per_hour = 3600 / args.block_seconds
        print(f"\n{len(wallets):,} wallets x (ETH + USDC), {args.touched:,} touched per cycle, "
              f"one cycle per {args.block_seconds:g} s block, recheck period "
              f"{args.period:g} s (medians of {args.steps} cycles each)\n")
        print("| reads | cycle | HTTP requests / cycle | JSON-RPC calls / cycle | wallets read "
              "| requests / hour | calls / hour |\n|---|---|---|---|---|---|---|")
        medians = {}
        for mode, samples in rows.items():
            seconds, requests, calls, read = (statistics.median(c) for c in zip(*samples,
                                                                              strict=True))
            medians[mode] = (seconds, requests, calls)
            print(f"| {mode} | {seconds:.2f} s | {requests:.0f} | {calls:.0f} | {read:,.0f} | "
                  f"{requests * per_hour:,.0f} | {calls * per_hour:,.0f} |")
        (fs, fr, fc), (is_, ir, ic) = medians["full"], medians["incremental"]
        print(f"\nincremental vs full: {fs / is_:.1f}x faster, {fr / max(ir, 1):.1f}x fewer "
              f"requests, {fc / max(ic, 1):.1f}x fewer calls; peak RSS of this process "
              f"(anvil excluded) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
              " MiB")
    finally:
        proxy.shutdown()
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
