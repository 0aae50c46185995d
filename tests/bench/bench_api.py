"""Benchmark: the HTTP API under 20 concurrent clients with 10,000 open findings, and a
reconciliation cycle's time with and without that load, side by side.

Seeds N empty wallets on a local anvil and a ledger booking 1 ETH in each (N shortfalls),
runs one cycle, starts `segwatch serve` in its own process, then drives
`GET /api/v1/status` and `GET /api/v1/discrepancies?status=open&limit=100&offset=…`
(a page of 100 at a random offset) from C concurrent clients for S seconds each, with a
viewer's bearer token. Then it times `segwatch run --once` (the cycle's own duration)
idle, and again while the clients load the list endpoint. Usage:

    .venv/bin/python tests/bench/bench_api.py --wallets 10000 --clients 20 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from chains.evm.devnet import (  # noqa: E402
    find_anvil,
    free_port,
    install_multicall,
    random_wallets,
    start_anvil,
)

TARGETS_MS = {"status": 200.0, "discrepancies": 500.0}


def cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=1800)


def token_for(cwd: Path, name: str, role: str) -> str:
    """A token for a new user `name` with `role`, made directly in the store."""
    from daemon.inputs.config import load_settings
    from daemon.store.db import make_engine, upgrade
    from daemon.store.identity import Identities

    engine = make_engine(load_settings(cwd / "segwatch.toml").store.url.replace(
        "sqlite:///", f"sqlite:///{cwd}/"))
    upgrade(engine)
    identities = Identities(engine)
    now = datetime.now(UTC)
    identities.add_user(name, [role], None, "local", "bench", now)
    token = identities.create_token(name, None, None, "bench", now)[1]
    engine.dispose()
    return token


async def load(url: str, token: str, path: str, clients: int, seconds: float,
               pages: int, stop: threading.Event | None = None) -> tuple[list[float], int]:
    """C clients, each sending requests one after another for `seconds` (or until `stop`
    is set); return every latency (ms) and the count of non-200 answers."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline and not (stop and stop.is_set()):
            params: dict[str, str | int] | None = {"status": "open", "limit": 100,
                      "offset": random.randrange(pages) * 100} if "discrep" in path else None
            started = time.perf_counter()
            answer = await http.get(path, params=params)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += answer.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies, errors


def report(name: str, latencies: list[float], errors: int, seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    rps = len(ordered) / seconds
    target = TARGETS_MS[name]
    print(f"{name}: {len(ordered)} requests, {rps:.0f} req/s, p50 {p50:.1f} ms, "
          f"p95 {p95:.1f} ms (target <= {target:.0f} ms: "
          f"{'met' if p95 <= target else 'MISSED'}, p95/target {p95 / target:.2f}), "
          f"{errors} non-200")
    return {"p50": p50, "p95": p95, "rps": rps}


def store_costs(cwd: Path, pages: int, runs: int = 10) -> None:
    """In process, the store work behind each endpoint, naive vs segwatch, same store:
    status from every open row loaded (the code before this change) vs one aggregate
    query; a page of 100 sliced from every open row vs LIMIT/OFFSET."""
    from daemon.bootstrap import open_store
    from daemon.store.models import OPEN_STATUSES

    store = open_store(f"sqlite:///{cwd}/segwatch.db")
    now = datetime.now(UTC)

    def timed(work: Any) -> float:
        started = time.perf_counter()
        for n in range(runs):
            work(n)
        return (time.perf_counter() - started) / runs * 1000

    naive_status = timed(lambda _n: [r.row.cure_deadline < now
                                     for r in store.discrepancies(status=OPEN_STATUSES)])
    fast_status = timed(lambda _n: store.open_summary(now))
    naive_page = timed(lambda n: store.discrepancies(status=["open"])[
        (n * 37 % pages) * 100:(n * 37 % pages) * 100 + 100])
    fast_page = timed(lambda n: store.discrepancies(status=["open"], limit=100,
                                                    offset=(n * 37 % pages) * 100))
    print(f"store, status: naive (every open row loaded) {naive_status:.1f} ms, segwatch "
          f"(aggregate query) {fast_status:.1f} ms: {naive_status / fast_status:.0f}x")
    print(f"store, page of 100: naive (all rows, sliced) {naive_page:.1f} ms, segwatch "
          f"(LIMIT/OFFSET) {fast_page:.1f} ms: {naive_page / fast_page:.0f}x")
    store.engine.dispose()


def cycle_seconds(cwd: Path, env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        done = cli(["--log-format", "json", "run", "--once", "--json"], cwd, env)
        (result,) = json.loads(done.stdout)
        times.append(float(result["duration_seconds"]))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args()
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install`")
        return 2
    node = start_anvil(binary)
    server = None
    try:
        install_multicall(node)
        cwd = Path(tempfile.mkdtemp(prefix="segwatch-bench-api-"))
        listen = f"127.0.0.1:{free_port()}"
        (cwd / "segwatch.toml").write_text(f"""
[store]
url = "sqlite:///segwatch.db"
[daemon]
listen = "{listen}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
sources = [{{ kind = "jsonrpc", url = "{node.url}" }}]
""")
        wallets = random_wallets(args.wallets)
        rows = [f"devnet,{w},segregated,client-{i},ETH,1" for i, w in enumerate(wallets)]
        (cwd / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n" +
                                        "\n".join(rows) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
        feeder = token_for(cwd, "books", "feeder")
        viewer = token_for(cwd, "val", "viewer")
        imported = cli(["ledger", "import", "ledger.csv"], cwd,
                       {**env, "SEGWATCH_TOKEN": feeder})
        assert imported.returncode == 0, imported.stderr
        first = cli(["run", "--once", "--json"], cwd, env)
        assert len(json.loads(first.stdout)[0]["findings"]) == args.wallets, first.stderr[-500:]
        print(f"seeded: {args.wallets} wallets, {args.wallets} open findings; "
              f"{args.clients} clients, {args.seconds:g} s per endpoint")
        server = subprocess.Popen([sys.executable, "-m", "daemon.cli", "serve"], cwd=cwd,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://{listen}/api/v1"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/status", timeout=2,
                             headers={"Authorization": f"Bearer {viewer}"}).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        pages = max(1, args.wallets // 100)
        store_costs(cwd, pages)
        for name, path in (("status", "/status"), ("discrepancies", "/discrepancies")):
            latencies, errors = asyncio.run(load(url, viewer, path, args.clients,
                                                 args.seconds, pages))
            report(name, latencies, errors, args.seconds)
        idle = cycle_seconds(cwd, env, args.cycles)
        stop = threading.Event()
        loaded: list[float] = []
        loader = threading.Thread(target=lambda: loaded.extend(asyncio.run(load(
            url, viewer, "/discrepancies", args.clients, 600, pages, stop))[0]))
        loader_started = time.perf_counter()
        loader.start()
        time.sleep(1.0)
        try:
            busy = cycle_seconds(cwd, env, args.cycles)
        finally:
            stop.set()
            loader.join(timeout=60)
        print(f"cycle of {args.wallets} wallets: idle median {statistics.median(idle):.2f} s "
              f"{[round(t, 2) for t in idle]}, under API load median "
              f"{statistics.median(busy):.2f} s {[round(t, 2) for t in busy]}: ratio "
              f"{statistics.median(busy) / statistics.median(idle):.2f} "
              f"(load ran {time.perf_counter() - loader_started:.0f} s, {len(loaded)} requests)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
