"""Source selection through the service on fake sources and a real store (SQLite and
PostgreSQL): failover of balance reads, lagging and old heads, `source_stale`,
`verify = 2` and `source_disagreement`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chains.errors import SourceUnavailable
from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from chains.types import BaseUnits, ChainHead, TransferObservation
from daemon.bootstrap import open_store
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.source_settings import SourceSettings
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)
BOB = canonical_evm_address("0x" + "b2" * 20)
WEI = 10**18
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def head(height: int, age: float = 12.0) -> ChainHead:
    return ChainHead(height, f"0x{height:064x}", int(NOW.timestamp() - age))


class World:
    def __init__(self, store_url: str, tmp_path: Path, sources: int, verify: int = 1) -> None:
        self.fakes = {f"http://127.0.0.1:{9000 + n}/": FakeAdapter(
            name=f"fake://{n}", head_block=head(100),
            balances_by_key={(ALICE, "ETH"): 2 * WEI, (BOB, "ETH"): WEI})
            for n in range(sources)}
        config = Settings(store={"url": store_url}, chains=[{  # type: ignore[arg-type, list-item]
            "name": "ethereum", "family": "evm", "chain_id": 1, "confirmations": 0,
            # the fakes answer at one fixed block whatever they change: every cycle
            # reads every wallet (a real chain's state at a block does not change)
            "full_recheck_seconds": 0,
            "poll_seconds": 10, "verify": verify,
            "sources": [{"kind": "jsonrpc", "url": url} for url in self.fakes]}])
        upgrade(make_engine(store_url))
        self.clock = Clock()
        self.service = Service(config, open_store(store_url), self.adapter, self.clock)
        ledger = tmp_path / "ledger.csv"
        ledger.write_text("chain,address,structure,owner,asset,amount\n"
                          f"ethereum,{ALICE},segregated,alice,ETH,2\n"
                          f"ethereum,{BOB},segregated,bob,ETH,1\n")
        self.service.import_ledger(ledger, dry_run=False, actor=FEEDER)

    def adapter(self, _chain: ChainSettings, source: SourceSettings) -> FakeAdapter:
        return self.fakes[source.url]

    def fake(self, n: int) -> FakeAdapter:
        return list(self.fakes.values())[n]

    def cycle(self):  # type: ignore[no-untyped-def]
        return self.service.run_cycle(self.service.settings.chains[0])

    def open_types(self) -> list[tuple[str, str | None, str]]:
        return sorted((r.row.type, r.row.address, r.row.severity)
                      for r in self.service.discrepancies(status="open"))


def test_balances_fail_over_to_the_next_source(store_url: str, tmp_path: Path) -> None:
    """When the first source's balance reads fail, the second one's are used."""
    world = World(store_url, tmp_path, 2)
    world.fake(0).fail_balances = True
    result = world.cycle()
    assert result.error is None and result.source == "fake://1"
    assert world.open_types() == []


def test_a_lagging_or_old_source_is_not_used(store_url: str, tmp_path: Path) -> None:
    """A source more than `max_lag_blocks` behind the agreed head, or whose newest block
    is older than the head-age limit, is skipped for the next fresh one."""
    world = World(store_url, tmp_path, 4)
    world.fake(0).head_block = head(96)  # 4 behind the agreed head (100): lagging
    world.fake(1).head_block = head(100, age=3_600)  # an hour old on an EVM chain
    world.fake(2).head_block = head(100)
    world.fake(3).head_block = head(99)  # confirms 100: within the lag, same hash at 99
    result = world.cycle()
    assert result.error is None and result.source == "fake://2"


def test_a_lone_head_far_ahead_is_not_used(store_url: str, tmp_path: Path) -> None:
    """A source claiming a head no other source confirms (a million blocks ahead, stamped
    now, first in order) is not used: the head the others hold is the reference, a real
    shortfall is raised, and no checkpoint records the claimed height."""
    world = World(store_url, tmp_path, 2)
    world.fake(0).head_block = head(10**6)
    world.fake(0).balances_by_key = {(ALICE, "ETH"): 2 * WEI, (BOB, "ETH"): WEI}
    world.fake(1).balances_by_key = {(ALICE, "ETH"): WEI // 2, (BOB, "ETH"): WEI}
    result = world.cycle()
    assert result.error is None and result.source == "fake://1" and result.block
    assert result.block.height == 100
    assert world.open_types() == [("balance_shortfall", ALICE, "critical")]
    assert world.service.status()[0].status == "discrepancy"
    world.fake(0).head_block = head(10**12)  # beyond any stored height: refused outright
    assert world.cycle().source == "fake://1"


def test_a_source_a_few_blocks_ahead_is_the_reference(store_url: str, tmp_path: Path) -> None:
    """Of two sources five blocks apart (more than `max_lag_blocks`), the one ahead is
    used when its head extends the other's chain at a plausible pace: an honest source
    that is behind is not mistaken for the truth."""
    world = World(store_url, tmp_path, 2)
    world.fake(0).head_block = head(95, age=60)
    world.fake(1).head_block = head(100)
    result = world.cycle()
    assert result.error is None and result.source == "fake://1"


def test_a_source_failing_to_answer_for_a_block_is_no_reason_for_an_alarm(
        store_url: str, tmp_path: Path) -> None:
    """Heads too far apart to confirm each other, and the higher source fails (a
    transient error) to answer for the lower head's block: nothing shows a lie, so the
    lower head is the reference and the cycle goes on — no `source_stale` at once."""
    world = World(store_url, tmp_path, 2)

    class Flaky(FakeAdapter):
        def block_at(self, height: int) -> ChainHead:
            raise SourceUnavailable(self.name, "HTTP 503")

    url = list(world.fakes)[1]
    world.fakes[url] = Flaky(**{f.name: getattr(world.fake(1), f.name)
                                for f in dataclasses.fields(FakeAdapter)})
    world.fake(0).head_block = head(90)
    world.fake(1).head_block = head(100)
    result = world.cycle()
    assert result.error is None and result.source == "fake://0"
    assert world.open_types() == []


def test_a_head_stamped_in_the_future_is_refused(store_url: str, tmp_path: Path) -> None:
    """A head stamped an hour ahead of the clock is not used; the next source is."""
    world = World(store_url, tmp_path, 2)
    world.fake(0).head_block = head(100, age=-3_600)
    result = world.cycle()
    assert result.error is None and result.source == "fake://1"


def test_a_checkpoint_left_by_a_liar_does_not_block_honest_sources(
        store_url: str, tmp_path: Path) -> None:
    """A checkpoint at a height the honest sources never reach, stamped before their
    heads, is implausible: once the liar is the only source no longer, the honest
    source reconciles again instead of staying "behind the last reconciled block"."""
    world = World(store_url, tmp_path, 2)
    world.fake(1).fail = True
    world.fake(0).head_block = head(10**9, age=60)  # alone: nothing to agree with
    assert world.cycle().error is None
    world.fake(1).fail = False
    world.fake(0).fail = True
    result = world.cycle()
    assert result.error is None and result.source == "fake://1"


def test_no_fresh_source_raises_source_stale_which_clears_when_one_returns(
        store_url: str, tmp_path: Path) -> None:
    """Sources that answer with stale heads open one `source_stale` (warning) at once,
    refreshed (not duplicated) while it lasts, critical once the chain has been stale for
    three times its SLA, and self-cleared by the next good cycle."""
    world = World(store_url, tmp_path, 1)
    assert world.cycle().error is None
    world.fake(0).head_block = head(101, age=3_600)
    failed = world.cycle()
    assert failed.error is not None and "no fresh source" in failed.error
    assert world.open_types() == [("source_stale", None, "warning")]
    world.clock.now += timedelta(seconds=30)
    world.cycle()
    assert world.open_types() == [("source_stale", None, "warning")]
    world.clock.now += timedelta(seconds=200)  # > 3 x freshness (60 s) since the last good cycle
    world.cycle()
    assert world.open_types() == [("source_stale", None, "critical")]
    world.clock.now = NOW
    world.fake(0).head_block = head(102)
    assert world.cycle().error is None
    assert world.open_types() == []
    (cleared,) = world.service.discrepancies(status="self_cleared")
    assert cleared.row.type == "source_stale"


def test_unreachable_sources_raise_source_stale_only_past_the_sla(
        store_url: str, tmp_path: Path) -> None:
    """Sources that do not answer make the cycle fail; `source_stale` opens once the last
    good cycle is older than the chain's freshness SLA."""
    world = World(store_url, tmp_path, 2)
    assert world.cycle().error is None
    for n in (0, 1):
        world.fake(n).fail = True
    world.clock.now += timedelta(seconds=30)
    assert world.cycle().error is not None
    assert world.open_types() == []
    world.clock.now += timedelta(seconds=60)
    assert world.cycle().error is not None
    assert world.open_types() == [("source_stale", None, "warning")]


def test_verify_two_keeps_agreeing_balances_and_flags_a_disagreement(
        store_url: str, tmp_path: Path) -> None:
    """With `verify = 2` two sources read the same block: agreement reconciles as usual;
    a disagreement on bob's balance opens `source_disagreement` (difference primary -
    secondary) and no balance finding for bob; agreement again clears it."""
    world = World(store_url, tmp_path, 2, verify=2)
    assert world.cycle().error is None and world.open_types() == []
    world.fake(1).balances_by_key = {(ALICE, "ETH"): 2 * WEI, (BOB, "ETH"): WEI // 2}
    result = world.cycle()
    assert result.error is None and result.read_errors == 1
    (row,) = world.service.discrepancies(status="open")
    assert (row.row.type, row.row.address, row.row.difference) == (
        "source_disagreement", BOB, WEI // 2)
    world.fake(1).balances_by_key = {(ALICE, "ETH"): 2 * WEI, (BOB, "ETH"): WEI}
    assert world.cycle().error is None and world.open_types() == []


class Flapping(FakeAdapter):
    """A fake source whose first `wrong` balance reads answer bob's balance as half."""

    def __init__(self, base: FakeAdapter, wrong: int) -> None:
        super().__init__(name=base.name, head_block=base.head_block,
                         balances_by_key=dict(base.balances_by_key))
        self.wrong = wrong

    def balances(self, addresses, assets, block):  # type: ignore[no-untyped-def]
        out = super().balances(addresses, assets, block)
        if self.wrong > 0:
            self.wrong -= 1
            out = [o if o.address != BOB or o.amount is None
                   else dataclasses.replace(o, amount=o.amount // 2) for o in out]
        return out


@pytest.mark.parametrize("wrong", [1, 2])
def test_a_disagreement_is_read_again_and_raised_only_when_it_repeats(
        wrong: int, store_url: str, tmp_path: Path) -> None:
    """A second source that once answers another amount (a node mid-block, a load-balanced
    backend) is read again with the first: agreeing now, the cycle reconciles with no
    finding; disagreeing again, `source_disagreement` is raised."""
    world = World(store_url, tmp_path, 2, verify=2)
    url = list(world.fakes)[1]
    world.fakes[url] = Flapping(world.fakes[url], wrong)
    result = world.cycle()
    assert result.error is None
    if wrong == 1:
        assert result.read_errors == 0 and world.open_types() == []
    else:
        assert result.read_errors == 1
        assert world.open_types() == [("source_disagreement", BOB, "warning")]
    assert world.fakes[url].reads == 2  # the first read and the recheck


def test_verify_two_without_a_second_source_fails_closed(
        store_url: str, tmp_path: Path) -> None:
    """With `verify = 2`, balances the second source cannot read are not vouched for: no
    balance finding from one source alone, but the chain is `unverified` at once (never
    compliant), and past the chain's SLA (60 s) each unverified client pair is a
    `balance_unverified` finding, which a verified read clears."""
    world = World(store_url, tmp_path, 2, verify=2)
    world.fake(0).balances_by_key = {(ALICE, "ETH"): WEI, (BOB, "ETH"): WEI}
    world.fake(1).fail_balances = True
    result = world.cycle()
    assert result.error is None and result.read_errors == 2
    assert world.open_types() == []
    assert world.service.status()[0].status == "unverified"
    world.clock.now += timedelta(seconds=30)
    assert world.cycle().read_errors == 2 and world.open_types() == []
    world.clock.now += timedelta(seconds=40)  # 70 s unverified > 60 s SLA
    world.cycle()
    assert world.open_types() == [("balance_unverified", ALICE, "warning"),
                                  ("balance_unverified", BOB, "warning")]
    assert world.service.status()[0].status == "unverified"
    world.fake(1).fail_balances = False
    world.fake(1).balances_by_key = world.fake(0).balances_by_key
    world.cycle()
    assert world.open_types() == [("balance_shortfall", ALICE, "critical")]
    assert world.service.status()[0].status == "discrepancy"


def test_verify_two_refuses_a_block_the_sources_disagree_on(
        store_url: str, tmp_path: Path) -> None:
    """With `verify = 2`, a second source with another hash for the pinned block fails
    the cycle: no checkpoint at a block the sources do not agree on, and the chain is
    not compliant."""
    world = World(store_url, tmp_path, 2, verify=2)
    assert world.cycle().error is None
    before = world.service.store.last_checkpoint("ethereum")
    world.fake(0).head_block = head(101)

    class Forked(FakeAdapter):
        def block_at(self, height: int) -> ChainHead:
            return ChainHead(height, f"0x{height + 7:064x}", self.head_block.timestamp)

    url = list(world.fakes)[1]
    world.fakes[url] = Forked(**{f.name: getattr(world.fake(1), f.name)
                                 for f in dataclasses.fields(FakeAdapter)})
    world.fakes[url].head_block = head(101)
    result = world.cycle()
    assert result.error is not None and "disagree on block 101" in result.error
    after = world.service.store.last_checkpoint("ethereum")
    assert before is not None and after is not None and after.id == before.id
    assert world.service.status()[0].status == "unverified"


def test_verify_two_refuses_a_scan_a_second_source_does_not_confirm(
        store_url: str, tmp_path: Path) -> None:
    """With `verify = 2`, the scanned range is read again from the second source: a
    block whose watched transfers the sources count differently (one withholds a
    withdrawal from alice) refuses the scan — the cursor stays, the chain is not
    compliant — and the scan advances once both agree."""
    world = World(store_url, tmp_path, 2, verify=2)
    assert world.cycle().error is None  # starts the scan cursor at block 100
    outflow = TransferObservation("native", ChainHead(101, f"0x{101:064x}"), "0x" + "cd" * 32,
                                  None, ALICE, BOB, None, BaseUnits(WEI), "fake://0")
    for n in (0, 1):
        world.fake(n).head_block = head(102)
    world.fake(0).transfers = [outflow]
    result = world.cycle()
    assert result.error is None and result.scan_error is not None
    assert "block 101 has 1 transfers of watched wallets at one source and 0" \
        in result.scan_error
    assert world.service.store.scan_state("ethereum").height == 100  # type: ignore[union-attr]
    assert world.service.status()[0].status == "unverified"
    world.fake(1).transfers = [outflow]
    result = world.cycle()
    assert result.scan_error is None and result.scanned_to == 102


@pytest.mark.parametrize("verify", [3])
def test_verify_needs_as_many_sources(verify: int, store_url: str) -> None:
    """`verify` is 1 or 2 and never more than the chain's sources."""
    with pytest.raises(ValueError, match="verify"):
        Settings(store={"url": store_url}, chains=[{  # type: ignore[arg-type, list-item]
            "name": "ethereum", "family": "evm", "chain_id": 1, "verify": verify,
            "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}]}])
