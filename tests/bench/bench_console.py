"""Benchmark: the operator console's server render time and page weight (issue 15).

Builds a store with N wallets (ETH and one token each, one ledger snapshot imported
through the service, one real cycle through a fake adapter so every wallet has a balance
read) of which E are short: E open `balance_shortfall` exceptions. The console is served
by a real uvicorn listener on loopback and read by one httpx client with a signed-in
session, R requests per page after a warm-up:

- `/` the dashboard, `/exceptions` (first page), `/exceptions?sort=deadline&dir=asc&page=20`
  (a deep page), `/exceptions/{id}` (one exception).

Side by side in the same run, on the same listener and templates, a naive baseline:
the obvious implementation without the console's aggregate queries, mounted by this
script at `/naive/…`:

- dashboard: `Service.status()` uncached, every wallet's newest balance loaded
  (`Store.observed`) and summed in Python, every open exception loaded to count them by
  severity;
- exceptions: every open exception loaded (`Service.discrepancies`), sorted and sliced
  in Python.

Prints p50/p95/max (ms) and bytes per page, the naive/console ratio, and PASS/MISS
against the targets (p95 ≤ 300 ms for the dashboard and the exceptions list, a first
page under 200 KB). Usage:

    .venv/bin/python tests/bench/bench_console.py --wallets 20000 --exceptions 2000 --requests 50
    .venv/bin/python tests/bench/bench_console.py --store postgresql
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from fastapi import Request  # noqa: E402
from fastapi.responses import HTMLResponse  # noqa: E402

from chains.evm.address import canonical_evm_address  # noqa: E402
from chains.fake import FakeAdapter  # noqa: E402
from daemon.api.app import build_app  # noqa: E402
from daemon.bootstrap import open_store  # noqa: E402
from daemon.inputs.config import Settings  # noqa: E402
from daemon.runtime.health import HealthServer  # noqa: E402
from daemon.runtime.metrics import Metrics  # noqa: E402
from daemon.service import Service  # noqa: E402
from daemon.status import overall  # noqa: E402
from daemon.store.db import make_engine, upgrade  # noqa: E402
from daemon.web.pages import Pages  # noqa: E402
from daemon.web.session import Viewer  # noqa: E402
from daemon.web.views import PER_PAGE, STATUS_FILTERS, AssetLine, _doubt  # noqa: E402
from tests.principals import FEEDER  # noqa: E402
from tests.realdeps import postgres_schema  # noqa: E402

TOKEN = canonical_evm_address("0x" + "7" * 40)
PASSWORD = "correct horse battery staple"
TARGET_P95_MS, TARGET_BYTES = 300.0, 200 * 1024


def build(url: str, wallets: int, short: int, folder: Path) -> tuple[Service, dict[str, float]]:
    """The store: N wallets booked 1 ETH and 100 USDC each, E of them short of ETH."""
    addresses = [canonical_evm_address(f"0x{i + 1:040x}") for i in range(wallets)]
    balances: dict[tuple[str, str], int] = {}
    for i, a in enumerate(addresses):
        balances[(a, "ETH")] = 10**17 if i < short else 10**18
        balances[(a, "USDC")] = 100 * 10**6
    fake = FakeAdapter(balances_by_key=balances)
    settings = Settings(store={"url": url}, auth={"secure_cookies": False}, chains=[{  # type: ignore[arg-type, list-item]
        "name": "ethereum", "family": "evm", "chain_id": 1, "confirmations": 0,
        "tokens": [{"symbol": "USDC", "contract": TOKEN, "decimals": 6}],
        "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}]}])
    upgrade(make_engine(url))
    service = Service(settings, open_store(url), lambda _c, _s: fake)
    ledger = folder / "ledger.csv"
    with ledger.open("w") as out:
        out.write("chain,address,structure,owner,asset,amount,label\n")
        for i, a in enumerate(addresses):
            out.write(f"ethereum,{a},segregated,client-{i},ETH,1,wallet {i}\n"
                      f"ethereum,{a},segregated,client-{i},USDC,100,\n")
    timings = {}
    started = time.perf_counter()
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    timings["import_s"] = time.perf_counter() - started
    started = time.perf_counter()
    result = service.run_cycle(settings.chains[0])
    timings["cycle_s"] = time.perf_counter() - started
    assert result.error is None, result.error
    opened = len(service.discrepancies(status="open"))
    assert opened == short, f"{opened} open exceptions, expected {short}"
    service.identity.add_user(None, "root", ["admin"], PASSWORD)
    return service, timings


def naive_routes(app: Any, service: Service) -> None:
    """The baseline pages: the same templates fed without the console's queries."""
    pages = Pages(service.settings, "bench")

    def viewer_of(request: Request) -> Viewer:
        principal, csrf = service.identity.from_session(request.cookies["segwatch_session"])
        return Viewer(principal, csrf)

    @app.get("/naive/", response_class=HTMLResponse)
    def dashboard(request: Request) -> HTMLResponse:
        viewer = viewer_of(request)
        current = service.status()
        now = service.now()
        lines = []
        for chain in service.settings.chains:
            wallets = service.store.ledger_view(chain.name).wallets
            read = service.store.observed(chain.name)
            for asset in chain.assets:
                total = sum(a[0] or 0 for by in read.values() for s, a in by.items()
                            if s == asset.symbol)
                booked = sum(w.ledger_total(asset.symbol) for w in wallets.values())
                lines.append(AssetLine(chain.name, asset.symbol, total, 0, booked, 0, 0))
        severities: dict[str, dict[str, int]] = defaultdict(dict)
        records = service.discrepancies(status="open") + \
            service.discrepancies(status="proposed")
        for (chain_name, severity), n in Counter(
                (r.chain, r.row.severity) for r in records).items():
            severities[chain_name][severity] = n
        nearest = min((r.row.cure_deadline for r in records), default=None)
        return pages.render(
            request, "dashboard.html", viewer, overall=overall(current), chains=current,
            doubts={s.chain: _doubt(s) for s in current},
            lines=lines, severities=severities, severity_order=("critical", "warning", "info"),
            nearest=nearest, nearest_left=None if nearest is None
            else (nearest - now).total_seconds(), now=now, refresh=30)

    @app.get("/naive/exceptions", response_class=HTMLResponse)
    def exceptions(request: Request, sort: str = "id", dir: str = "desc",
                   page: int = 1) -> HTMLResponse:
        viewer = viewer_of(request)
        records = service.discrepancies(status="open") + \
            service.discrepancies(status="proposed")
        key = {"id": lambda r: r.row.id, "deadline": lambda r: r.row.cure_deadline}[sort]
        records.sort(key=key, reverse=dir == "desc")
        rows = [(r.row, r.chain) for r in records[(page - 1) * PER_PAGE:page * PER_PAGE]]
        params = {"status": "active", "chain": "", "type": "", "severity": "",
                  "overdue": "", "sort": sort, "dir": dir}
        return pages.render(
            request, "exceptions.html", viewer, rows=rows, total=len(records), page=page,
            pages=max(1, -(-len(records) // PER_PAGE)), params=params, now=service.now(),
            statuses=list(STATUS_FILTERS), chains=["ethereum"], types=[],
            severities=("critical", "warning", "info"), sorts=("id", "deadline"))


def measure(client: httpx.Client, path: str, requests: int, warmup: int = 3
            ) -> dict[str, float]:
    for _ in range(warmup):
        assert client.get(path).status_code == 200, path
    times = []
    size = 0
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
        size = len(answer.content)
    times.sort()
    return {"p50_ms": statistics.median(times),
            "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
            "max_ms": times[-1], "bytes": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wallets", type=int, default=20_000)
    parser.add_argument("--exceptions", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="an SQLite file, or a fresh schema on the local PostgreSQL "
                        "(dropped after)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not 0 < args.exceptions <= args.wallets <= 1_000_000 or not 0 < args.requests <= 10_000:
        parser.error("need 0 < exceptions <= wallets <= 1,000,000 and 0 < requests <= 10,000")
    with tempfile.TemporaryDirectory(prefix="segwatch-bench-console-") as tmp, \
            ExitStack() as stack:
        folder = Path(tmp)
        url = stack.enter_context(postgres_schema()) if args.store == "postgresql" \
            else f"sqlite:///{folder / 'segwatch.db'}"
        service, setup = build(url, args.wallets, args.exceptions, folder)
        app = build_app(service, Metrics())
        naive_routes(app, service)
        server = HealthServer("127.0.0.1:0", service.status, Metrics(), app=app).start()
        signed = service.identity.sign_in("root", PASSWORD, "bench")
        first = min(r.row.id or 0 for r in service.discrepancies(status="open"))
        deep = "sort=deadline&dir=asc&page=20"
        pairs = [("dashboard", "/", "/naive/"),
                 ("exceptions, first page", "/exceptions", "/naive/exceptions"),
                 ("exceptions, page 20 by deadline", f"/exceptions?{deep}",
                  f"/naive/exceptions?{deep}"),
                 ("one exception", f"/exceptions/{first}", None)]
        results: dict[str, Any] = {"wallets": args.wallets, "exceptions": args.exceptions,
                                   "requests": args.requests, "store": args.store,
                                   **setup, "pages": {}}
        try:
            with httpx.Client(base_url=f"http://{server.address}", timeout=60,
                              cookies={"segwatch_session": signed.cookie}) as client:
                results["stylesheet_bytes"] = len(client.get("/static/console.css").content)
                for name, path, naive in pairs:
                    row = {"console": measure(client, path, args.requests)}
                    if naive:
                        row["naive"] = measure(client, naive, args.requests)
                    results["pages"][name] = row
        finally:
            server.stop()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(results: dict[str, Any]) -> None:
    print(f"{results['wallets']:,} wallets, {results['exceptions']:,} open exceptions, "
          f"{results['store']} store (import {results['import_s']:.1f} s, cycle "
          f"{results['cycle_s']:.1f} s); {results['requests']} requests a page over HTTP")
    print(f"{'page':<34}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'bytes':>9}"
          f"{'naive p50':>11}{'naive p95':>11}{'ratio':>8}  target")
    for name, row in results["pages"].items():
        c, n = row["console"], row.get("naive")
        ratio = f"{n['p50_ms'] / c['p50_ms']:.1f}x" if n else ""
        verdict = "PASS" if c["p95_ms"] <= TARGET_P95_MS and c["bytes"] < TARGET_BYTES \
            else "MISS"
        print(f"{name:<34}{c['p50_ms']:>9.1f}{c['p95_ms']:>9.1f}{c['max_ms']:>9.1f}"
              f"{c['bytes']:>9,}" + (f"{n['p50_ms']:>11.1f}{n['p95_ms']:>11.1f}" if n
                                     else " " * 22) + f"{ratio:>8}  {verdict}")
    print(f"stylesheet /static/console.css: {results['stylesheet_bytes']:,} bytes "
          "(a separate request, cached for an hour)")


if __name__ == "__main__":
    raise SystemExit(main())
