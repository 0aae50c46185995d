"""The daemon's run loop on fake sources and a real store: chains run independently and
never overlap, `/healthz` and `/metrics` answer, and a stop is bounded in time."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.evm.address import canonical_evm_address
from chains.evm.devnet import free_port
from chains.fake import FakeAdapter
from daemon.bootstrap import open_store
from daemon.errors import ConfigError
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.source_settings import SourceSettings
from daemon.runtime.health import HealthServer
from daemon.runtime.metrics import Metrics
from daemon.runtime.scheduler import Daemon, Job, run_forever
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)


def make_service(store_url: str, tmp_path: Path, fakes: dict[str, FakeAdapter],
                 poll: float = 0.2, freshness: float = 60.0) -> Service:
    settings = Settings(
        store={"url": store_url}, daemon={"listen": f"127.0.0.1:{free_port()}"},  # type: ignore[arg-type]
        chains=[{"name": name, "family": "evm", "chain_id": 1,  # type: ignore[misc]
                 "confirmations": 0, "poll_seconds": poll, "freshness_seconds": freshness,
                 # the fakes stay at one block: every cycle reads (and waits on) them
                 "full_recheck_seconds": 0,
                 "sources": [{"kind": "jsonrpc", "url": f"http://127.0.0.1:1/{name}"}]}
                for name in fakes])
    upgrade(make_engine(store_url))

    def adapters(chain: ChainSettings, _source: SourceSettings) -> FakeAdapter:
        return fakes[chain.name]

    service = Service(settings, open_store(store_url), adapters)
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n" + "".join(
        f"{name},{ALICE},segregated,alice,ETH,1\n" for name in fakes))
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    service.store.sync_catalog(settings)
    return service


def cycles(service: Service, chain: str) -> int:
    return sum(1 for _ in iter_checkpoints(service, chain))


def iter_checkpoints(service: Service, chain: str) -> Iterator[object]:
    from sqlmodel import Session, select

    from daemon.store import models as m
    with Session(service.store.engine) as session:
        yield from session.exec(select(m.Checkpoint).join(m.Chain).where(m.Chain.name == chain))


def test_a_hanging_chain_never_delays_another_and_cycles_never_overlap(
        store_url: str, tmp_path: Path) -> None:
    """With one chain's reads taking 1.5 s and a 0.2 s poll, the other chain keeps
    cycling; the slow chain's cycles never run two at a time."""
    fast = FakeAdapter(name="fake://fast", balances_by_key={(ALICE, "ETH"): 10**18})
    slow = FakeAdapter(name="fake://slow", balances_by_key={(ALICE, "ETH"): 10**18}, delay=1.5)
    service = make_service(store_url, tmp_path, {"fast": fast, "slow": slow})
    daemon = Daemon(service, Metrics())
    daemon.start()
    time.sleep(2.0)
    assert daemon.stop() is True
    assert cycles(service, "fast") >= 5
    assert cycles(service, "slow") <= 2
    assert slow.most_active == 1


def test_stop_is_bounded_when_a_cycle_hangs(store_url: str, tmp_path: Path) -> None:
    """A cycle stuck in a source read does not hold the stop beyond the timeout: stop()
    returns False after about `shutdown_timeout`, and nothing of that cycle is written."""
    stuck = FakeAdapter(balances_by_key={(ALICE, "ETH"): 1}, delay=10.0)
    service = make_service(store_url, tmp_path, {"stuck": stuck})
    daemon = Daemon(service, Metrics(), shutdown_timeout=0.5)
    daemon.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert daemon.stop() is False
    assert time.monotonic() - started < 1.5
    assert cycles(service, "stuck") == 0


def test_housekeeping_jobs_run_and_a_failing_one_is_logged_not_fatal(
        store_url: str, tmp_path: Path) -> None:
    """Housekeeping jobs run on their interval; one that raises does not stop the others
    or the chains."""
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("boom")

    fake = FakeAdapter(balances_by_key={(ALICE, "ETH"): 10**18})
    service = make_service(store_url, tmp_path, {"one": fake})
    daemon = Daemon(service, Metrics(), [Job("ok", 0.1, lambda: ran.append("ok")),
                                         Job("broken", 0.1, broken)])
    daemon.start()
    time.sleep(0.6)
    assert daemon.stop()
    assert ran.count("ok") >= 3 and ran.count("broken") >= 3
    assert cycles(service, "one") >= 2


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_healthz_and_metrics(store_url: str, tmp_path: Path) -> None:
    """/healthz is 200 with per-chain freshness while every chain is fresh and 503
    naming the stale chain once one stops succeeding past its SLA; /metrics exposes the
    cycle histogram, RPC requests and errors per source and kind, head height and lag,
    open findings by type and severity, and the last success time."""
    good = FakeAdapter(name="fake://good", balances_by_key={(ALICE, "ETH"): 10**18})
    short = FakeAdapter(name="fake://short", balances_by_key={(ALICE, "ETH"): 10**17})
    service = make_service(store_url, tmp_path, {"good": good, "short": short},
                           freshness=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(service, stop), daemon=True)
    thread.start()
    base = f"http://{service.settings.daemon.listen}"
    deadline = time.monotonic() + 10
    status, body = 0, b""
    while time.monotonic() < deadline:
        try:
            status, body = get(base + "/healthz")
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["status"] == "ok" and set(doc["chains"]) == {"good", "short"}
    assert doc["chains"]["short"]["status"] == "discrepancy"
    short.fail = True
    time.sleep(1.6)
    status, body = get(base + "/healthz")
    assert status == 503 and json.loads(body)["stale"] == ["short"]
    status, metrics = get(base + "/metrics")
    text = metrics.decode()
    assert status == 200
    for needle in ('segwatch_cycle_duration_seconds_bucket{chain="good"',
                   'segwatch_rpc_requests_total{chain="good",source="fake://good"}',
                   'segwatch_rpc_errors_total{chain="short",kind="connection",'
                   'source="fake://short"}',
                   'segwatch_head_height{chain="good"} 100.0',
                   'segwatch_head_lag_blocks{chain="good"} 0.0',
                   'segwatch_open_findings{severity="critical",type="balance_shortfall"} 1.0',
                   'segwatch_last_success_timestamp_seconds{chain="good"}'):
        assert needle in text, needle
    assert get(base + "/nothing")[0] == 404
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_an_unusable_listen_address_is_a_configuration_error() -> None:
    """A listen address already taken fails at start with one clear message."""
    first = HealthServer("127.0.0.1:0", list, Metrics()).start()
    try:
        with pytest.raises(ConfigError, match="cannot listen on"):
            HealthServer(first.address, list, Metrics())
    finally:
        first.stop()


def test_a_cycle_that_opens_findings_wakes_the_alert_job(store_url: str,
                                                         tmp_path: Path) -> None:
    """A wake-on-change job (alert delivery) with a long interval runs again right after
    a cycle opens a finding, instead of at its next interval."""
    runs: list[float] = []
    short = FakeAdapter(balances_by_key={(ALICE, "ETH"): 1})  # a shortfall: opened at once
    service = make_service(store_url, tmp_path, {"one": short}, poll=60)
    daemon = Daemon(service, Metrics(), [Job("alerts", 60, lambda: runs.append(time.time()),
                                             wake_on_change=True)])
    daemon.start()
    time.sleep(1.0)
    assert daemon.stop()
    assert len(runs) == 2  # the start-up run, and the wake after the first cycle
