"""Issue 17 item 14, what an operator sees of a running daemon: a cycle logs each
discrepancy it opened, self-cleared or voided (id, type, severity, chain, address, asset)
at info, not only counts; the daemon's heartbeat is kept in the store (both stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from daemon.bootstrap import open_store
from daemon.inputs.config import Settings
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)
ETH = 10**18


def events(raw: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [e for e in raw if str(e["event"]).startswith(prefix)]


def test_each_opened_and_cleared_finding_is_a_log_line(store_url: str, tmp_path: Path) -> None:
    """A shortfall opens: one `finding_opened` line naming it (the same id `list` shows);
    the balance restored, the next cycle logs `finding_cleared` for that id."""
    settings = Settings(store={"url": store_url}, chains=[{  # type: ignore[arg-type, list-item]
        "name": "devnet", "family": "evm", "chain_id": 1, "confirmations": 0,
        "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:9/"}]}])
    upgrade(make_engine(store_url))
    fake = FakeAdapter(balances_by_key={(ALICE, "ETH"): ETH // 2})
    service = Service(settings, open_store(store_url), lambda _c, _s: fake)
    (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                         f"devnet,{ALICE},segregated,alice,ETH,1\n")
    service.import_ledger(tmp_path / "ledger.csv", dry_run=False, actor=FEEDER)
    with capture_logs() as raw:
        service.run_cycle(settings.chains[0])
    (opened,) = events(raw, "finding_")
    (row,) = service.discrepancies(status="open")
    assert opened["event"] == "finding_opened" and opened["log_level"] == "info"
    assert {k: opened[k] for k in ("id", "type", "severity", "address", "asset", "chain")} == {
        "id": row.row.id, "type": "balance_shortfall", "severity": "critical",
        "address": ALICE, "asset": "ETH", "chain": "devnet"}
    fake.balances_by_key = {(ALICE, "ETH"): ETH}
    with capture_logs() as raw:
        service.run_cycle(settings.chains[0])
    (cleared,) = events(raw, "finding_")
    assert cleared["event"] == "finding_cleared" and cleared["id"] == row.row.id
    assert [e["event"] for e in raw if e["event"] == "cycle"] == ["cycle"]


def test_the_newest_heartbeat_is_kept_and_silent_daemons_are_forgotten(store_url: str
                                                                        ) -> None:
    """A daemon's beats update one row (its start kept); `heartbeat` is the newest of all
    daemons; a daemon silent for a day is forgotten at the next beat."""
    from datetime import UTC, datetime, timedelta

    upgrade(make_engine(store_url))
    store = open_store(store_url)
    assert store.heartbeat() is None
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    store.beat("old-host-1", "0.0.9", start - timedelta(days=3), start - timedelta(days=2))
    store.beat("host-7-abc", "0.1.0", start, start)
    store.beat("host-7-abc", "0.1.0", start, start + timedelta(seconds=15))
    beat = store.heartbeat()
    assert beat is not None
    assert (beat.daemon, beat.version, beat.started_at, beat.beat_at) == (
        "host-7-abc", "0.1.0", start, start + timedelta(seconds=15))
    store.beat("other-2-def", "0.1.0", start, start + timedelta(seconds=20))
    assert store.heartbeat().daemon == "other-2-def"  # type: ignore[union-attr]
    with store.engine.connect() as db:
        from sqlalchemy import text

        ids = sorted(r[0] for r in db.execute(text("SELECT id FROM heartbeat")))
    assert ids == ["host-7-abc", "other-2-def"]  # old-host-1 was silent for two days
