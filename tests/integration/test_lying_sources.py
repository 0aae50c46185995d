"""Sources that lie (SPEC §11) through `LiarProxy` (tests/liarproxy.py) in front of a real
anvil, with `verify = 1` and `verify = 2`, on SQLite and PostgreSQL (`store_url`).

alice's ledger allocation is 10 ETH; the chain holds 1 ETH: a real 9 ETH shortfall. The
chain has two sources: the liar and an honest one (anvil itself), `confirmations = 1`.
Whatever the lie: no cycle raises anything but a SegwatchError, the status stays
computable and is never `compliant` while the shortfall exists, every lie is refused (a
source error, failed over, counted through `service.observer`) or surfaced (a finding,
a refused scan, `unverified`), and once the liar is removed from the configuration (new
Settings, same store) the honest source alone reconciles the shortfall.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chains.errors import SegwatchError
from chains.evm.devnet import AnvilNode, impersonate, install_multicall, set_balances
from daemon.bootstrap import build_service
from daemon.inputs.config import Settings
from daemon.service import CycleResult, Service
from daemon.store.db import make_engine, upgrade
from tests.liarproxy import LiarProxy
from tests.principals import FEEDER

pytestmark = pytest.mark.anvil

ETH = 10**18
CHAIN = "devnet"
ALICE = "0x1000000000000000000000000000000000000001"
OUTSIDE = "0x2000000000000000000000000000000000000001"
CYCLES = 2
DEADLINE = 1.0
"""Each source's `timeout_seconds` and overall `deadline_seconds` (the drip outlasts both)."""
HONEST_DEADLINE = 20.0
"""The deadline of the honest source alone (its first cycle probes and scans)."""
SLA = 0.5
"""The chain's `freshness_seconds` in the verify = 2 runs, to pass it within the test."""
BOUNDED = ("huge", "flood", "drip")
"""Lies the bounded-input rules turn into a source error."""


@dataclass
class Errors:
    """A SourceObserver that keeps every source error it is told about."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def requests(self, chain: str, source: str, count: int) -> None:
        pass

    def source_error(self, chain: str, source: str, error: SegwatchError) -> None:
        self.seen.append((source, type(error).__name__))

    def of(self, source: str) -> list[str]:
        return [kind for name, kind in self.seen if source in name]


@dataclass
class Stage:
    node: AnvilNode
    store_url: str
    tmp: Path

    def service(self, sources: list[tuple[str, str]], verify: int, *, multicall: bool = True,
                freshness: float = 600.0, deadline: float = DEADLINE) -> Service:
        """A service over these (name, url) sources with an observer; the ledger (alice:
        10 ETH) imported into the store once. `deadline` bounds each source's requests
        (short by default: a dripping liar must outlast it)."""
        settings = Settings(
            store={"url": self.store_url},
            chains=[{"name": CHAIN, "family": "evm", "chain_id": 31337,
                     "confirmations": 1, "verify": verify, "poll_seconds": 1,
                     "freshness_seconds": freshness,
                     **({} if multicall else {"multicall": ""}),
                     "sources": [{"kind": "jsonrpc", "name": name, "url": url,
                                  "timeout_seconds": deadline, "deadline_seconds": deadline}
                                 for name, url in sources]}])
        service = build_service(settings)
        service.observer = Errors()
        if not service.store.ledger_view(CHAIN).wallets:
            ledger = self.tmp / "ledger.csv"
            ledger.write_text("chain,address,structure,owner,asset,amount\n"
                              f"{CHAIN},{ALICE},segregated,alice,ETH,10\n")
            service.import_ledger(ledger, dry_run=False, actor=FEEDER)
        return service


@pytest.fixture
def stage(anvil_node: AnvilNode, store_url: str, tmp_path: Path) -> Iterator[Stage]:
    install_multicall(anvil_node)
    set_balances(anvil_node, {ALICE: ETH})
    anvil_node.mine(2)
    upgrade(make_engine(store_url))
    yield Stage(anvil_node, store_url, tmp_path)


@pytest.fixture
def liar(anvil_node: AnvilNode) -> Iterator[LiarProxy]:
    proxy = LiarProxy(anvil_node.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def cycle(service: Service) -> CycleResult | None:
    """One cycle; a SegwatchError is allowed (None), any other exception is a crash and
    fails the test. The status must stay computable and never be `compliant` (the 9 ETH
    shortfall is real)."""
    try:
        result: CycleResult | None = service.run_cycle(service.settings.chains[0])
    except SegwatchError:
        result = None
    assert signal(service) != "compliant", describe(service, result)
    return result


def signal(service: Service) -> str:
    return service.status()[0].status


def open_types(service: Service) -> set[str]:
    return {r.row.type for r in service.discrepancies(status="open")}


def errors(service: Service) -> Errors:
    observer = service.observer
    assert isinstance(observer, Errors)
    return observer


def describe(service: Service, result: CycleResult | None) -> str:
    """What a failed assertion should show: the cycle, the status and the open findings."""
    status = service.status()[0]
    shown = "raised a SegwatchError" if result is None else (
        f"error={result.error!r} scan_error={result.scan_error!r} source={result.source} "
        f"block={result.block.height if result.block else None} "
        f"read_errors={result.read_errors}")
    return (f"cycle: {shown}; status={status.status} last_error={status.last_error!r}; "
            f"open={sorted(open_types(service))}")


def honest_alone_reconciles(stage: Stage) -> None:
    """The liar removed from the configuration (new Settings, same store): the next cycle
    of the honest source alone succeeds and the shortfall is open."""
    # no liar left to outlast: a deadline a loaded CI machine meets on a first cycle
    honest = stage.service([("honest", stage.node.url)], verify=1, deadline=HONEST_DEADLINE)
    stage.node.mine(1)
    result = honest.run_cycle(honest.settings.chains[0])
    assert result.error is None, describe(honest, result)
    assert result.block is not None and result.block.height <= stage.node.block_number()
    assert "balance_shortfall" in open_types(honest), describe(honest, result)
    assert signal(honest) == "discrepancy"


@pytest.mark.parametrize("lie", ["far_head", "ahead_head", "future_head", "swap_hash",
                                 "huge", "flood", "drip"])
def test_verify_1_a_lying_first_source_is_passed_over(stage: Stage, liar: LiarProxy,
                                                      lie: str) -> None:
    """verify = 1, the liar listed first. A head claimed at 10**12 (out of range), 10**6
    blocks ahead (in range: head agreement must refuse it) or stamped a day ahead,
    a swapped pinned-block hash, a 4,000-digit balance, a 100 MB body and a 1 byte/s drip
    are refused: the honest source is used instead and raises the shortfall; a bounded-
    input lie is a source error counted for the liar."""
    liar.lie = lie
    service = stage.service([("liar", liar.url), ("honest", stage.node.url)], verify=1,
                            multicall=lie != "huge")
    results = [cycle(service) for _ in range(CYCLES)]
    assert liar.lies > 0
    assert "balance_shortfall" in open_types(service), describe(service, results[-1])
    assert signal(service) == "discrepancy"
    last = service.store.last_checkpoint(CHAIN)
    assert last is not None and last.block_height <= stage.node.block_number()
    if lie in BOUNDED:
        assert errors(service).of("liar"), f"no source error counted: {errors(service).seen}"
    liar.lie = None
    honest_alone_reconciles(stage)


@pytest.mark.parametrize("lie", ["far_head", "ahead_head", "future_head", "huge", "flood",
                                 "drip"])
def test_verify_2_a_lying_second_source_is_not_vouched_for(stage: Stage, liar: LiarProxy,
                                                           lie: str) -> None:
    """verify = 2, the liar listed second. A lone head far ahead (10**12, or 10**6 blocks:
    a height in range) or stamped a day in the future is not used; a 4,000-digit
    balance, a 100 MB body or a 1 byte/s drip is a source error counted for the liar.
    A liar that cannot answer for the block (heads, 100 MB, drip) leaves the honest
    source's block unconfirmed: every cycle fails ("not confirmed by a second source"),
    no checkpoint is saved (SPEC §11: only at a block the sources agree on), and the chain
    is `stale`. One that confirms the block but not the balances (4,000 digits) leaves
    them unverified: `balance_unverified` past the SLA. Never compliant."""
    liar.lie = lie
    service = stage.service([("honest", stage.node.url), ("liar", liar.url)], verify=2,
                            multicall=lie != "huge", freshness=SLA)
    if lie == "huge":  # the block is confirmed, its balances are not: unverified
        for _ in range(CYCLES):
            started = time.monotonic()
            cycle(service)
            time.sleep(max(0.0, SLA + 0.1 - (time.monotonic() - started)))  # past the SLA
        assert cycle(service).read_errors > 0
        assert "balance_unverified" in open_types(service)
        assert signal(service) in ("unverified", "discrepancy")
    else:
        results = [cycle(service) for _ in range(CYCLES)]
        for result in results:
            assert result is not None and result.error is not None and \
                "not confirmed by a second source" in result.error, describe(service, result)
        assert service.store.last_checkpoint(CHAIN) is None
        assert signal(service) == "stale"
    assert liar.lies > 0
    if lie in BOUNDED:
        assert errors(service).of("liar"), f"no source error counted: {errors(service).seen}"
    liar.lie = None
    honest_alone_reconciles(stage)


@pytest.mark.parametrize("first", ["liar", "honest"])
def test_verify_2_a_swapped_block_hash_saves_no_checkpoint_there(
        stage: Stage, liar: LiarProxy, first: str) -> None:
    """verify = 2: the liar gives every block asked for by number another hash. No
    checkpoint is saved at a block whose hash the sources disagree on (any checkpoint
    carries the node's real hash), and the chain is not compliant."""
    liar.lie = "swap_hash"
    sources = [("honest", stage.node.url), ("liar", liar.url)]
    service = stage.service(sources if first == "honest" else sources[::-1], verify=2)
    results = [cycle(service) for _ in range(CYCLES)]
    assert liar.lies > 0
    last = service.store.last_checkpoint(CHAIN)
    if last is not None:
        real = stage.node.call("eth_getBlockByNumber", [hex(last.block_height), False])
        assert last.block_hash == real["hash"], describe(service, results[-1])
    liar.lie = None
    honest_alone_reconciles(stage)


@pytest.mark.parametrize(("verify", "first"), [(1, "honest"), (2, "honest"), (2, "liar")])
def test_altered_balances(stage: Stage, liar: LiarProxy, verify: int, first: str) -> None:
    """The liar reports alice fully funded (10 ETH) in eth_getBalance and in the Multicall3
    aggregate3 result. With verify = 1 a single lying primary cannot be detected (nothing
    to compare with: that is what verify = 2 is for), so the liar is listed second and is
    never used for balances: the shortfall is raised. With verify = 2, in either order,
    the reads disagree: `source_disagreement`, and the chain is not compliant."""
    liar.lie, liar.target = "balance", ALICE
    sources = [("honest", stage.node.url), ("liar", liar.url)]
    service = stage.service(sources if first == "honest" else sources[::-1], verify)
    results = [cycle(service) for _ in range(CYCLES)]
    if verify == 1:
        assert "balance_shortfall" in open_types(service), describe(service, results[-1])
    else:
        assert liar.lies > 0
        assert "source_disagreement" in open_types(service), describe(service, results[-1])
    liar.lie = None
    honest_alone_reconciles(stage)


@pytest.mark.parametrize(("verify", "first"), [(1, "liar"), (2, "honest"), (2, "liar")])
def test_withheld_transfers_are_never_a_silent_pass(stage: Stage, liar: LiarProxy,
                                                    verify: int, first: str) -> None:
    """The liar serves the block of alice's unauthorized 0.5 ETH payment without its
    transactions, logs or traces. verify = 1 (liar first, scanning): balance continuity
    surfaces the drop as `unexplained_balance_change`, or the scan is refused. verify = 2
    (either order): the per-block transfer counts differ: a finding about the payment or a
    refused scan, never a silent pass. Once the liar is removed, the payment is found (an
    unauthorized outflow, or an unexplained change)."""
    impersonate(stage.node, ALICE)
    sources = [("honest", stage.node.url), ("liar", liar.url)]
    service = stage.service(sources if first == "honest" else sources[::-1], verify)
    cycle(service)  # the baseline: scan cursor and checkpoint
    stage.node.mine(1)
    cycle(service)
    liar.lie, liar.height = "withhold", stage.node.block_number() + 1
    stage.node.transact(OUTSIDE, value=ETH // 2, sender=ALICE)  # automined at `height`
    assert stage.node.block_number() == liar.height
    stage.node.mine(1)
    result = cycle(service)
    assert liar.lies > 0
    surfaced = open_types(service) & {"unexplained_balance_change", "unauthorized_outflow",
                                      "source_disagreement"}
    refused = result is None or result.scan_error is not None or result.error is not None
    assert surfaced or refused, describe(service, result)
    print(f"verify={verify} first={first}: {describe(service, result)}")
    liar.lie = None
    honest_alone_reconciles(stage)
    # the withheld payment is not lost: the honest source's scan (or continuity) finds it
    assert open_types(service) & {"unauthorized_outflow", "unexplained_balance_change"}, \
        describe(service, None)


def test_a_scan_that_cannot_advance_is_a_finding_until_it_does(stage: Stage,
                                                               liar: LiarProxy) -> None:
    """The only source serves blocks whose parent hash is all zeros (Hardhat's EDR node did
    after `hardhat_mine`). Before: the scan stopped for good while `status` said compliant,
    and a later unauthorized outflow went unseen. Now: the refusal names the block, its
    parent and the expected hash; the chain is unverified from the first failed scan, a
    `scan_stalled` finding opens once the failures have lasted half the chain's SLA
    (critical past it); once the source serves sound blocks the scan catches up, finds
    the outflow made meanwhile, and `scan_stalled` clears itself."""
    sla = 2.0
    set_balances(stage.node, {ALICE: 10 * ETH})  # the books (10 ETH) match the chain
    stage.node.mine(2)
    service = stage.service([("liar", liar.url)], verify=1, freshness=sla)
    baseline = service.run_cycle(service.settings.chains[0])
    assert baseline.error is None and baseline.scan_error is None, describe(service, baseline)
    assert signal(service) == "compliant", describe(service, baseline)
    liar.lie, liar.height = "zero_parent", stage.node.block_number()
    stage.node.mine(3)
    stalled = service.run_cycle(service.settings.chains[0])
    assert stalled.scan_error is not None
    assert f"block {liar.height + 1} has parent 0x{'00' * 32}, expected the hash of block " \
           f"{liar.height}" in stalled.scan_error
    assert "moved" not in stalled.scan_error
    assert "scan_stalled" not in open_types(service)  # a first failure may be a blip...
    assert signal(service) == "unverified"  # ...but is never compliant
    impersonate(stage.node, ALICE)
    outflow = stage.node.transact(OUTSIDE, value=ETH // 2, sender=ALICE)
    stage.node.mine(1)
    time.sleep(sla / 2)
    service.run_cycle(service.settings.chains[0])
    assert signal(service) == "discrepancy"
    (row,) = [r.row for r in service.discrepancies(status="open") if r.row.type == "scan_stalled"]
    assert row.severity == "warning"
    assert f"block {liar.height + 1} has parent 0x000000…000000, expected the hash of block " \
           f"{liar.height}" in (row.counterparty or "")
    time.sleep(sla / 2)
    service.run_cycle(service.settings.chains[0])
    (row,) = [r.row for r in service.discrepancies(status="open") if r.row.type == "scan_stalled"]
    assert row.severity == "critical", row.counterparty
    liar.lie = None
    stage.node.mine(1)
    recovered = service.run_cycle(service.settings.chains[0])
    assert recovered.scan_error is None, describe(service, recovered)
    found = {r.row.type: r.row for r in service.discrepancies(status="open")}
    assert "scan_stalled" not in found
    assert found["unauthorized_outflow"].tx_hash == outflow["transactionHash"]
