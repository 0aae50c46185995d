"""Sources that lie or break, in front of a real anvil (SPEC §11), on SQLite and
PostgreSQL, with `verify = 1` and `verify = 2`.

alice's ledger says 10 ETH; the chain holds 2 ETH: a real 8 ETH shortfall. One source
is honest (anvil itself), the other a `LiarProxy` (tests/liars.py). Whatever the lie, no
cycle crashes, the chain is never reported `compliant`, every lie is refused (a source
error, failed over) or surfaced (a finding, or `unverified`), and once the liar is
removed the honest source alone reconciles the shortfall.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chains.evm.devnet import AnvilNode, impersonate, set_balances
from daemon.bootstrap import build_service
from daemon.config import Settings
from daemon.service import CycleResult, Service
from daemon.store.db import make_engine, upgrade
from tests.liars import LiarProxy

pytestmark = pytest.mark.anvil

ETH = 10**18
ALICE = "0x1000000000000000000000000000000000000001"
OUTSIDE = "0x2000000000000000000000000000000000000001"


@dataclass
class Stage:
    node: AnvilNode
    store_url: str
    tmp: Path

    def service(self, sources: list[tuple[str, str]], verify: int) -> Service:
        """A service over these (name, url) sources; the ledger imported once."""
        settings = Settings(
            store={"url": self.store_url},  # type: ignore[arg-type]
            users=[{"name": "carol", "roles": ["checker"]}],  # type: ignore[list-item]
            chains=[{"name": "devnet", "family": "evm", "chain_id": 31337,  # type: ignore[list-item]
                     "confirmations": 1, "verify": verify, "multicall": "",
                     "freshness_seconds": 600,
                     "sources": [{"kind": "jsonrpc", "name": name, "url": url,
                                  "timeout_seconds": 2, "deadline_seconds": 3}
                                 for name, url in sources]}])
        service = build_service(settings)
        if not service.store.ledger_view("devnet").wallets:
            ledger = self.tmp / "ledger.csv"
            ledger.write_text("chain,address,structure,owner,asset,amount\n"
                              f"devnet,{ALICE},segregated,alice,ETH,10\n")
            service.import_ledger(ledger, dry_run=False)
        return service


@pytest.fixture
def stage(anvil_node: AnvilNode, store_url: str, tmp_path: Path) -> Iterator[Stage]:
    set_balances(anvil_node, {ALICE: 2 * ETH})
    anvil_node.mine(2)
    upgrade(make_engine(store_url))
    yield Stage(anvil_node, store_url, tmp_path)


def cycle(service: Service) -> CycleResult:
    """One cycle; any exception but the service's own handling is a crash (fails)."""
    return service.run_cycle(service.settings.chains[0])


def signal(service: Service) -> str:
    return service.status()[0].status


def open_types(service: Service) -> set[str]:
    return {r.row.type for r in service.discrepancies(status="open")}


def honest_alone_finds_the_shortfall(stage: Stage) -> None:
    """The liar removed from the configuration (same store): the honest source alone
    reconciles, raising (or keeping) the shortfall."""
    honest = stage.service([("honest", stage.node.url)], verify=1)
    stage.node.mine(1)
    result = cycle(honest)
    assert result.error is None, result.error
    assert "balance_shortfall" in open_types(honest)
    assert signal(honest) == "discrepancy"


@pytest.mark.parametrize("lie", ["far_head", "future_head", "swap_hash", "huge", "flood",
                                 "drip"])
@pytest.mark.parametrize("verify", [1, 2])
def test_a_lying_first_source_never_hides_the_shortfall(stage: Stage, lie: str,
                                                        verify: int) -> None:
    """The liar is listed first. Its head claims (a million blocks ahead, a day in the
    future), a swapped pinned-block hash, a 4,000-digit balance, a 100 MB body and a
    1 byte/s drip are refused; with `verify = 1` the honest source's read raises the
    shortfall, with `verify = 2` no second source vouches for the honest block, so no
    checkpoint is saved and the chain is `stale` — never compliant either way."""
    liar = LiarProxy(stage.node.url, lie).start()
    try:
        service = stage.service([("liar", liar.url), ("honest", stage.node.url)], verify)
        for _ in range(2):
            cycle(service)
            assert signal(service) != "compliant"
        if verify == 1:
            assert "balance_shortfall" in open_types(service)
            assert signal(service) == "discrepancy"
        else:  # no second source vouches for the block: no checkpoint (SPEC §11)
            result = cycle(service)
            assert result.error is not None and "second source" in result.error
            assert service.store.last_checkpoint("devnet") is None
            assert signal(service) == "stale"
        assert liar.lies > 0
    finally:
        liar.stop()
    honest_alone_finds_the_shortfall(stage)


@pytest.mark.parametrize("verify", [1, 2])
def test_altered_balances_from_a_second_source(stage: Stage, verify: int) -> None:
    """The liar (second) reports alice fully funded. With `verify = 1` it is never read
    for balances — a single lying primary cannot be caught by comparison, which is what
    `verify = 2` is for; with `verify = 2` the two reads disagree: `source_disagreement`,
    no balance finding from either, and the chain is not compliant."""
    liar = LiarProxy(stage.node.url, "balance", target=ALICE).start()
    try:
        service = stage.service([("honest", stage.node.url), ("liar", liar.url)], verify)
        cycle(service)
        if verify == 1:
            assert open_types(service) == {"balance_shortfall"}
        else:
            assert open_types(service) == {"source_disagreement"}
            assert liar.lies > 0
        assert signal(service) == "discrepancy"
    finally:
        liar.stop()
    honest_alone_finds_the_shortfall(stage)


def test_a_second_source_with_another_block_hash_saves_no_checkpoint(stage: Stage) -> None:
    """With `verify = 2`, a second source whose pinned block has another hash fails the
    cycle: no checkpoint at a block the sources disagree on; the chain is unverified."""
    liar = LiarProxy(stage.node.url, "swap_hash").start()
    try:
        service = stage.service([("honest", stage.node.url), ("liar", liar.url)], verify=2)
        result = cycle(service)
        assert result.error is not None and "disagree on block" in result.error
        assert service.store.last_checkpoint("devnet") is None
        assert signal(service) != "compliant"
    finally:
        liar.stop()
    honest_alone_finds_the_shortfall(stage)


@pytest.mark.parametrize("verify", [1, 2])
def test_withheld_transfers_are_surfaced(stage: Stage, verify: int) -> None:
    """The liar serves the block of alice's unauthorized 1 ETH payment without its
    transactions. With `verify = 2` (liar second) the scan's per-block transfer counts
    differ: the scan is refused (the chain is not vouched for; alice's shortfall keeps it
    at `discrepancy`) and the payment is not judged from one source. With `verify = 1` (liar
    first, scanning) the payment is missed, but balance continuity catches the drop:
    `unexplained_balance_change`."""
    impersonate(stage.node, ALICE)
    liar = LiarProxy(stage.node.url, "withhold").start()
    order = [("honest", stage.node.url), ("liar", liar.url)]
    try:
        service = stage.service(order if verify == 2 else order[::-1], verify)
        assert cycle(service).error is None  # the baseline: scan cursor and checkpoint
        stage.node.mine(1)
        assert cycle(service).error is None
        liar.height = stage.node.block_number() + 1  # the payment's block (automined)
        stage.node.transact(OUTSIDE, value=ETH, sender=ALICE)
        assert stage.node.block_number() == liar.height
        stage.node.mine(1)
        result = cycle(service)
        if verify == 2:
            assert result.scan_error is not None and "transfers" in result.scan_error
            last = service.store.last_checkpoint("devnet")
            assert last is not None and not last.scanned  # the cursor did not advance
            assert "unauthorized_outflow" not in open_types(service)
        else:
            assert "unexplained_balance_change" in open_types(service)
        assert signal(service) != "compliant"
        assert liar.lies > 0
    finally:
        liar.stop()
