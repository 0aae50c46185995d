"""Incremental reads equal full reads, on a real anvil (daemon/rules/recheck.py).

Two services watch the same chain with the same books: one reads every wallet every
cycle (`full_recheck_seconds = 0`), the other only what its scan saw touched, the
wallets with open findings and the rotating slice. Over random activity — transfers in
and out, token transfers, direct state edits no transfer explains, reorgs — both open
the same findings once the incremental one has swept every wallet (one recheck period).

A state edit that a later reorg undoes is left out of the generated activity: a full
reader sees it only if it happened to read in between, which no strategy can promise.
Each wallet is edited at most once, so the net change is never zero.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select

from chains.evm.devnet import (
    AnvilNode,
    call_data,
    deploy_test_token,
    impersonate,
    install_multicall,
    mint,
    set_balances,
)
from chains.evm.scan import TRANSFER_TOPIC
from chains.types import Address
from daemon.bootstrap import Adapters, open_store
from daemon.inputs.config import Settings
from daemon.rules.shards import Shard, shards
from daemon.service import CycleResult, Service
from daemon.store.models import Checkpoint
from tests.clock import ManualClock
from tests.principals import FEEDER

pytestmark = pytest.mark.anvil

ETH = 10**18
PERIOD = 600.0
WALLETS = [f"0x10000000000000000000000000000000000001{i:02x}" for i in range(6)]
HOUSE = "0x1000000000000000000000000000000000000199"
OUTSIDE = "0x20000000000000000000000000000000000001aa"


@dataclass
class Pair:
    node: AnvilNode
    token: str
    full: Service
    incremental: Service
    clock: ManualClock
    carried: int = 0
    floor: int = 0
    """The lowest block a generated reorg may replace (above the scan cursor's start)."""

    def cycle(self, reverse: bool = False) -> None:
        """One cycle of each shard of both services (shard 0 scans, the others read at
        the block it scanned), shard 0 first unless `reverse`."""
        units = shards(self.full.settings.chains[0])
        for shard in reversed(units) if reverse else units:
            full = self._run(self.full, shard)
            incremental = self._run(self.incremental, shard)
            assert full.wallets_read == full.wallets and full.full_read
            assert incremental.block == full.block
            if incremental.wallets_read < incremental.wallets:
                self.carried += 1

    @staticmethod
    def _run(service: Service, shard: Shard) -> CycleResult:
        result = service.run_cycle(service.settings.chains[0], shard)
        assert result.error is None, result.error
        assert result.scan_error is None, result.scan_error
        return result

    def findings(self, service: Service) -> list[tuple[str, str, str, str]]:
        return sorted((r.row.type, r.row.address or "", r.row.asset or "", r.row.tx_hash or "")
                      for r in service.discrepancies(status="open"))


def make_service(url: str, node: AnvilNode, token: str, period: float,
                 clock: ManualClock, shard_count: int) -> Service:
    settings = Settings(store={"url": url}, chains=[{  # type: ignore[arg-type, list-item]
        "name": "devnet", "family": "evm", "chain_id": 31337, "confirmations": 0,
        "full_recheck_seconds": period, "max_head_age_seconds": 10**7,
        "shards": shard_count,
        "sources": [{"kind": "jsonrpc", "url": node.url}],
        "tokens": [{"symbol": "USDC", "contract": token, "decimals": 6}]}])
    return Service(settings, open_store(url), Adapters(), clock=clock)


def start(node: AnvilNode, tmp: Path, shard_count: int = 1, read_first: bool = False,
          rounds: int = 2) -> Pair:
    """Both services over the same books; two cycles (one with `rounds=1`). `read_first`:
    in the first cycle the shards that do not scan write before shard 0 starts the scan
    (as shards started side by side may), so their first checkpoints are not scanned."""
    token = deploy_test_token(node, "USD Coin", "USDC", 6)
    install_multicall(node)
    for wallet in (*WALLETS, HOUSE):
        impersonate(node, wallet)
        mint(node, token, wallet, 1_000 * 10**6)
    set_balances(node, {w: 10 * ETH for w in (*WALLETS, HOUSE)})
    node.mine(1)
    ledger = tmp / "ledger.csv"
    with ledger.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        for i, wallet in enumerate(WALLETS):
            out.writerow(["devnet", wallet, "segregated", f"client{i}", "ETH", "10"])
            out.writerow(["devnet", wallet, "segregated", f"client{i}", "USDC", "1000"])
        out.writerow(["devnet", HOUSE, "house", "FIRM", "ETH", "10"])
    clock = ManualClock()
    full = make_service(f"sqlite:///{tmp / 'full.db'}", node, token, 0, clock, shard_count)
    incremental = make_service(f"sqlite:///{tmp / 'incremental.db'}", node, token, PERIOD,
                               clock, shard_count)
    for service in (full, incremental):
        service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    pair = Pair(node, token, full, incremental, clock)
    pair.cycle(reverse=read_first)  # the first cycle pins the scan cursor
    if rounds == 1:
        return pair
    node.mine(1)
    clock.now += timedelta(seconds=1)
    pair.cycle()
    pair.floor = node.block_number() + 1
    return pair


Action = tuple[Any, ...]
actions = st.lists(st.one_of(
    st.tuples(st.just("send"), st.integers(0, 5), st.integers(0, 7), st.integers(1, 99)),
    st.tuples(st.just("token"), st.integers(0, 5), st.integers(0, 7), st.integers(1, 99)),
    st.tuples(st.just("edit"), st.integers(0, 5), st.integers(-99, 99).filter(bool)),
    st.tuples(st.just("reorg"), st.integers(1, 2)),
    st.tuples(st.just("cycle"), st.integers(1, 120))), min_size=2, max_size=12)


def play(pair: Pair, script: list[Action]) -> None:
    edited: set[int] = set()
    node = pair.node
    for action in script:
        kind = action[0]
        if kind in ("send", "token"):
            _, i, j, amount = action
            to = WALLETS[j] if j < 6 else (HOUSE if j == 6 else OUTSIDE)
            if kind == "send":
                node.transact(to, value=amount * 10**15, sender=WALLETS[i])
            else:
                data = call_data("transfer(address,uint256)", ["address", "uint256"],
                                 [to, amount * 10**6])
                node.transact(pair.token, data, sender=WALLETS[i])
        elif kind == "edit" and action[1] not in edited:
            _, i, delta = action
            edited.add(i)
            balance = int(node.call("eth_getBalance", [WALLETS[i], "latest"]), 16)
            node.call("anvil_setBalance", [WALLETS[i], hex(balance + delta * 10**15)])
            node.mine(1)
        elif kind == "reorg" and not edited and node.block_number() - action[1] >= pair.floor:
            node.call("anvil_reorg", [action[1], []])
        elif kind == "cycle":
            pair.clock.now += timedelta(seconds=action[1])
            pair.cycle()
    pair.clock.now += timedelta(seconds=1)
    pair.cycle()


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(script=actions)
@pytest.mark.parametrize(("shard_count", "read_first"), [(1, False), (2, False), (2, True)])
def test_incremental_reads_open_the_same_findings_as_full_reads_within_one_period(
        anvil_node: AnvilNode, tmp_path_factory: pytest.TempPathFactory,
        shard_count: int, read_first: bool, script: list[Action]) -> None:
    """With one shard, and with two (the second reads at the block the first scanned and
    takes its touched wallets from the stored scan), also when the second shard's first
    checkpoint was written before the first shard started the scan."""
    snapshot = anvil_node.snapshot()
    try:
        pair = start(anvil_node, tmp_path_factory.mktemp("incremental"), shard_count,
                     read_first)
        play(pair, script)
        for _ in range(7):  # sweep: 7 cycles a sixth of the period apart
            pair.clock.now += timedelta(seconds=PERIOD / 6)
            pair.node.mine(1)
            pair.cycle()
        assert pair.carried > 0, "the incremental service never carried a wallet"
        assert pair.findings(pair.incremental) == pair.findings(pair.full)
    finally:
        anvil_node.revert(snapshot)


@pytest.mark.parametrize(("shard_count", "read_first"), [(1, False), (2, False), (2, True)])
def test_a_direct_state_edit_is_found_by_the_rotating_re_read(
        anvil_node: AnvilNode, tmp_path: Path, shard_count: int, read_first: bool) -> None:
    """A balance changed with no transfer (a direct state edit) is not seen by the scan:
    the edited wallet is carried until the sweep reaches it, then continuity finds the
    change unexplained and the reconciliation finds the shortfall — within one period;
    also when a shard's first checkpoint was written before the scan started."""
    pair = start(anvil_node, tmp_path, shard_count, read_first)
    victim = WALLETS[3]
    anvil_node.call("anvil_setBalance", [victim, hex(7 * ETH)])
    anvil_node.mine(1)
    pair.clock.now += timedelta(seconds=1)
    pair.cycle()
    full = {f[:3] for f in pair.findings(pair.full)}
    assert ("unexplained_balance_change", victim, "ETH") in full
    assert ("balance_shortfall", victim, "ETH") in full
    found_after = None
    for step in range(1, 8):
        pair.clock.now += timedelta(seconds=PERIOD / 6)
        anvil_node.mine(1)
        pair.cycle()
        if {f[:3] for f in pair.findings(pair.incremental)} == full:
            found_after = step
            break
    assert found_after is not None and found_after * PERIOD / 6 <= PERIOD + PERIOD / 6
    assert pair.findings(pair.incremental) == pair.findings(pair.full)


def test_an_edit_first_read_at_the_previous_checkpoints_block_is_unexplained(
        anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A carried wallet whose balance was edited is first read by a cycle at the same
    block as the previous checkpoint (no block in between): continuity still compares it
    (nothing can move a balance within one block), so the change is found unexplained
    as the full reader finds it, not stored silently as the new normal."""
    from daemon.rules import recheck

    pair = start(anvil_node, tmp_path)
    victim = WALLETS[3]
    anvil_node.call("anvil_setBalance", [victim, hex(7 * ETH)])
    anvil_node.mine(1)
    monkeypatch.setattr(recheck, "swept", lambda *_: set())  # the edited wallet is carried
    pair.clock.now += timedelta(seconds=1)
    pair.cycle()
    assert ("unexplained_balance_change", victim, "ETH") in \
        {f[:3] for f in pair.findings(pair.full)}
    assert ("unexplained_balance_change", victim, "ETH") not in \
        {f[:3] for f in pair.findings(pair.incremental)}
    monkeypatch.setattr(recheck, "swept", lambda wallets, *_: set(wallets))
    pair.clock.now += timedelta(seconds=1)
    pair.cycle()  # the same block: no block was mined
    assert pair.findings(pair.incremental) == pair.findings(pair.full)


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the loads of every pair's newest stored balance (what a steady cycle carries)."""
    from daemon.store import observations

    loads: list[int] = []
    load = observations.newest_amounts

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        return load(*args, **kwargs)

    monkeypatch.setattr(observations, "newest_amounts", counted)
    return loads


def test_steady_cycles_carry_the_balances_they_keep_without_loading_them_again(
        anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica keeps its shard's newest balances between cycles (what it read and
    stored, on top of what it carried): a steady cycle does not load every pair's newest
    stored balance, and opens the same findings as the full reader."""
    pair = start(anvil_node, tmp_path)
    loads = _count_loads(monkeypatch)
    victim = WALLETS[2]
    anvil_node.transact(OUTSIDE, value=ETH, sender=victim)
    for _ in range(4):
        pair.clock.now += timedelta(seconds=PERIOD / 6)
        anvil_node.mine(1)
        pair.cycle()
    assert pair.carried > 0
    assert loads == []
    assert ("balance_shortfall", victim, "ETH") in {f[:3] for f in pair.findings(pair.full)}
    assert pair.findings(pair.incremental) == pair.findings(pair.full)


def test_balances_kept_by_a_replica_are_loaded_again_after_another_replica_wrote(
        anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another replica ran the shard's cycle meanwhile (a lease moved and came back): the
    kept balances may be stale, so the next cycle loads them from the store (once), then
    keeps its own again; the findings stay those of the full reader."""
    pair = start(anvil_node, tmp_path)
    other = make_service(str(pair.incremental.store.engine.url), anvil_node, pair.token,
                         PERIOD, pair.clock, 1)
    loads = _count_loads(monkeypatch)
    victim = WALLETS[4]
    anvil_node.transact(OUTSIDE, value=2 * ETH, sender=victim)
    pair.clock.now += timedelta(seconds=1)
    assert other.run_cycle(other.settings.chains[0]).error is None  # the other replica
    assert loads == [1]  # it had kept nothing: it loads
    for _ in range(2):
        pair.clock.now += timedelta(seconds=1)
        anvil_node.mine(1)
        pair.cycle()
    assert loads == [1, 1]  # the first replica's kept balances predate the other's write
    assert pair.carried > 0
    assert ("balance_shortfall", victim, "ETH") in \
        {f[:3] for f in pair.findings(pair.incremental)}
    assert pair.findings(pair.incremental) == pair.findings(pair.full)


def test_a_resolved_shortfall_that_persists_reopens_while_its_wallet_is_carried(
        anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checker resolves a shortfall that is still there: the wallet has no open finding
    and nothing touches it, so the incremental service carries it (no read) — the carried
    balance still differs from the books, and the shortfall reopens as the full reader
    reopens it (a steady cycle reconciles the carried pairs whose balance differs)."""
    from daemon.rules import recheck
    from tests.principals import acting

    pair = start(anvil_node, tmp_path)
    victim = WALLETS[1]
    anvil_node.transact(OUTSIDE, value=2 * ETH, sender=victim)
    pair.clock.now += timedelta(seconds=1)
    pair.cycle()
    monkeypatch.setattr(recheck, "swept", lambda *_: set())  # no rotating re-read
    for service in (pair.full, pair.incremental):
        for record in service.discrepancies(status="open"):
            assert record.row.id is not None and record.row.address == victim
            service.act(record.row.id, "propose", acting("mia", "maker"),
                        reason="false_positive", note="checked")
            service.act(record.row.id, "approve", acting("carl", "checker"))
        assert service.discrepancies(status="open") == []
    anvil_node.mine(1)
    pair.clock.now += timedelta(seconds=1)
    result = pair.incremental.run_cycle(pair.incremental.settings.chains[0])
    assert result.error is None and not result.full_read
    assert result.wallets_read == 0  # the victim is carried with every other wallet
    pair.full.run_cycle(pair.full.settings.chains[0])
    reopened = [r.row for r in pair.incremental.discrepancies(status="open")]
    assert [(r.type, r.address, r.reopens is not None) for r in reopened] == \
        [("balance_shortfall", victim, True)]
    assert pair.findings(pair.incremental) == pair.findings(pair.full)


def test_a_transfer_is_found_by_the_next_cycle_without_re_reading_the_rest(
        anvil_node: AnvilNode, tmp_path: Path) -> None:
    """A scanned transfer makes its wallets read at once; a quiet wallet is carried."""
    pair = start(anvil_node, tmp_path)
    anvil_node.transact(OUTSIDE, value=ETH, sender=WALLETS[0])
    pair.clock.now += timedelta(seconds=1)
    result = pair.incremental.run_cycle(pair.incremental.settings.chains[0])
    assert result.error is None and not result.full_read
    assert result.wallets_read < result.wallets
    pair.full.run_cycle(pair.full.settings.chains[0])
    mine = {f[:3] for f in pair.findings(pair.incremental)}
    assert ("balance_shortfall", WALLETS[0], "ETH") in mine
    assert pair.findings(pair.incremental) == pair.findings(pair.full)


def test_a_shard_reading_while_shard_0_scans_carries_nothing_the_scan_saw(
        anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas run shards side by side: shard 0 may commit its scan of new blocks after
    shard 1's cycle started and before it picks its block. Shard 1 then reads at the
    newly scanned block incrementally (not a full read), and reads the wallet the new
    transfer touched instead of carrying its old balance: its shortfall is found."""
    pair = start(anvil_node, tmp_path, shard_count=2)
    service = pair.incremental
    chain = service.settings.chains[0]
    zero, one = shards(chain)
    victim = next(w for w in WALLETS if one.owns(w))
    anvil_node.transact(OUTSIDE, value=ETH, sender=victim)
    pair.clock.now += timedelta(seconds=1)
    pick = service.sources._scanned_block
    committed: list[CycleResult] = []

    def shard_0_commits_first(*args: Any) -> Any:
        if not committed:
            committed.append(service.run_cycle(chain, zero))
        return pick(*args)

    monkeypatch.setattr(service.sources, "_scanned_block", shard_0_commits_first)
    result = service.run_cycle(chain, one)
    assert result.block is not None and committed[0].scanned_to == result.block.height
    assert result.error is None and not result.full_read, result.full_read
    assert result.wallets_read < result.wallets
    assert ("balance_shortfall", victim, "ETH") in {f[:3] for f in pair.findings(service)}


def test_a_shard_first_read_before_the_scan_began_carries_once_the_scan_covers_it(
        anvil_node: AnvilNode, tmp_path: Path) -> None:
    """Shards start side by side: shard 1's first checkpoint may be written before shard
    0's first cycle starts the scan at that block (not scanned when written). Once the
    scan covers its block, shard 1's next cycle carries its wallets from it instead of
    reading them all again (at a million wallets on 4 shards, 760,000 wallets read twice
    in a row); with a state edit, the findings match the full reader's within one period
    (test above)."""
    pair = start(anvil_node, tmp_path, 2, read_first=True)
    with Session(pair.incremental.store.engine) as session:
        first, second = session.exec(select(Checkpoint).where(Checkpoint.shard == 1)
                                     .order_by(col(Checkpoint.id))).all()
    assert not first.scanned  # written before the scan started
    assert second.scanned and second.wallets_read is not None
    assert second.wallets_read < second.wallets  # carried, not read again
    assert pair.findings(pair.incremental) == pair.findings(pair.full) == []


def test_a_shard_cycling_again_before_the_scan_moved_carries_its_wallets(
        anvil_node: AnvilNode, tmp_path: Path) -> None:
    """After the first cycle a shard that does not scan may run again before shard 0
    scanned a block past the cursor's start (side by side, every replica's second cycle):
    it reads at the scanned block, its own checkpoint's, where nothing is traced yet and
    nothing needs to be. It carries its wallets (was: a second full read, 750,000 wallets
    at a million on 4 shards); a later cycle after the scan moved carries too."""
    pair = start(anvil_node, tmp_path, 2, rounds=1)
    service = pair.incremental
    chain = service.settings.chains[0]
    zero, one = shards(chain)
    first = Pair._run(service, one)
    anvil_node.mine(1)
    pair.clock.now += timedelta(seconds=1)
    again = Pair._run(service, one)  # shard 0 has not scanned the new block
    assert again.block == first.block
    assert not again.full_read and again.wallets_read < again.wallets, again.full_read
    Pair._run(service, zero)
    pair.clock.now += timedelta(seconds=1)
    later = Pair._run(service, one)
    assert later.block is not None and first.block is not None
    assert later.block.height > first.block.height
    assert not later.full_read and later.wallets_read < later.wallets, later.full_read


def test_a_scan_of_thousands_of_wallets_asks_for_every_transfer_once(
        anvil_node: AnvilNode) -> None:
    """Over 2,000 watched wallets a short range is one unfiltered eth_getLogs on a real
    node, and finds exactly what the per-address filters find for the wallets involved."""
    from chains.evm.adapter import EvmAdapter
    from chains.evm.devnet import random_wallets

    token = deploy_test_token(anvil_node, "USD Coin", "USDC", 6)
    start_block = anvil_node.block_number() + 1
    for wallet in WALLETS[:3]:
        mint(anvil_node, token, wallet, 5 * 10**6)
    anvil_node.transact(WALLETS[0], value=ETH)
    end_block = anvil_node.block_number()
    crowd = [*random_wallets(2_500), *(Address(w) for w in WALLETS)]
    with EvmAdapter(anvil_node.url, expected_chain_id=31337) as adapter:
        few = adapter.scan([Address(w) for w in WALLETS], start_block, end_block)
        client = adapter._client  # count the log queries the node is asked
        queries: list[Any] = []
        batch, call = client.batch, client.call
        client.batch = lambda requests, *a, **k: (  # type: ignore[method-assign]
            queries.extend(p for m, p in requests if m == "eth_getLogs"), batch(requests))[1]
        client.call = lambda method, params=(), *a, **k: (  # type: ignore[method-assign]
            queries.extend([params] if method == "eth_getLogs" else []), call(method, params))[1]
        many = adapter.scan(crowd, start_block, end_block)
    assert [q[0]["topics"] for q in queries] == [[TRANSFER_TOPIC]]
    assert many.transfers == few.transfers and many.fees == few.fees
    assert len([t for t in many.transfers if t.kind == "token"]) == 3
