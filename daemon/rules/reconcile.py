"""PURE reconciliation: findings from a ledger view and balance observations.

No I/O, no clock, no database: the same inputs in any order give the same findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from chains.types import Address, BalanceObservation, ChainHead

Structure = Literal["segregated", "omnibus", "house"]
CLIENT_STRUCTURES: frozenset[str] = frozenset({"segregated", "omnibus"})

SEVERITY: Mapping[str, str] = {
    "balance_shortfall": "critical",
    "balance_surplus": "warning",
    "unauthorized_outflow": "critical",
    "commingling": "critical",
    "unexplained_balance_change": "warning",
    "source_disagreement": "warning",
    "source_stale": "warning",
    "balance_unverified": "warning",
    "ledger_stale": "warning",
    "scan_stalled": "warning",
}
BALANCE_TYPES = ("balance_shortfall", "balance_surplus")


@dataclass(frozen=True, slots=True)
class WalletView:
    """One wallet of the sub-ledger: its structure and, per asset symbol, owner → amount."""

    address: Address
    structure: Structure
    allocations: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def ledger_total(self, symbol: str) -> int:
        """Return the sum of the allocations of `symbol` (0 when none)."""
        return sum(self.allocations.get(symbol, {}).values())

    @property
    def all_owners(self) -> frozenset[str]:
        """Every owner with an allocation of any asset in this wallet."""
        return frozenset(o for by_owner in self.allocations.values() for o in by_owner)

    @property
    def is_client(self) -> bool:
        """True for segregated and omnibus wallets (client assets)."""
        return self.structure in CLIENT_STRUCTURES

    def owners(self, symbol: str) -> tuple[str, ...]:
        """Return the owners of `symbol` in this wallet, sorted; all owners when none hold it."""
        owners = self.allocations.get(symbol) or {
            o: 0 for by_owner in self.allocations.values() for o in by_owner
        }
        return tuple(sorted(owners))


@dataclass(frozen=True, slots=True)
class LedgerView:
    """The sub-ledger of one chain as reconciliation needs it."""

    chain: str
    wallets: Mapping[Address, WalletView]
    cut_off: datetime | None = None
    """When these books were cut (SPEC §8); None without a snapshot."""


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition that should be (or stay) an open discrepancy."""

    type: str
    severity: str
    chain: str
    address: Address
    asset: str
    contract: str | None
    owners: tuple[str, ...]
    onchain: int | None
    ledger: int | None
    difference: int | None
    block: ChainHead | None = None
    tx_hash: str | None = None
    amount: int | None = None
    counterparty: str | None = None
    event: str | None = None
    """What makes an event finding unique (a transfer's key, a checkpoint span)."""
    in_transit: int | None = None
    """Balance findings: the reconciling items' net; expected = ledger + in_transit, and
    difference = onchain - expected (SPEC §8)."""

    @property
    def expected(self) -> int | None:
        """The expected balance of a balance finding (booked plus in transit)."""
        return None if self.ledger is None else self.ledger + (self.in_transit or 0)

    @property
    def fingerprint(self) -> str:
        """The identity of the condition: the same condition seen again has the same one."""
        return f"{self.type}:{self.chain}:{self.address}:{self.asset}:{self.event or ''}"


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Findings, plus the (address, asset) pairs that were actually verified.

    Only verified pairs may clear an earlier balance finding: a pair whose read
    failed proves nothing either way.
    """

    findings: tuple[Finding, ...]
    verified: frozenset[tuple[Address, str]]
    read_errors: tuple[BalanceObservation, ...]


def reconcile(ledger: LedgerView, observations: Iterable[BalanceObservation],
              in_transit: Mapping[tuple[str, str], int] | None = None) -> Reconciliation:
    """Compare every observed client (wallet, asset) balance with its expected balance:
    the allocation total plus `in_transit` (the reconciling items' net per (address,
    asset), `daemon.rules.transit`; none by default).

    Returns findings sorted by fingerprint. House wallets and addresses absent from
    the ledger produce no findings.
    """
    in_transit = in_transit or {}
    findings: list[Finding] = []
    verified: set[tuple[Address, str]] = set()
    errors: list[BalanceObservation] = []
    for obs in observations:
        wallet = ledger.wallets.get(obs.address)
        if wallet is None:
            continue
        if obs.amount is None:
            errors.append(obs)
            continue
        verified.add((obs.address, obs.asset.symbol))
        finding = balance_finding(ledger.chain, wallet, obs,
                                  in_transit.get((obs.address, obs.asset.symbol), 0))
        if finding is not None:
            findings.append(finding)
    findings.sort(key=lambda f: f.fingerprint)
    errors.sort(key=lambda o: (o.address, o.asset.symbol))
    return Reconciliation(tuple(findings), frozenset(verified), tuple(errors))


def differs(wallet: WalletView, symbol: str, amount: int) -> bool:
    """Whether a client wallet's `amount` of `symbol` differs from its booked total: a
    balance finding unless reconciling items explain it (`balance_finding`)."""
    return wallet.structure in CLIENT_STRUCTURES and amount != wallet.ledger_total(symbol)


def balance_finding(chain: str, wallet: WalletView, obs: BalanceObservation,
                    in_transit: int = 0) -> Finding | None:
    """Return the shortfall or surplus of one client (wallet, asset) against its expected
    balance (booked + `in_transit`), or None when it matches."""
    if wallet.structure not in CLIENT_STRUCTURES or obs.amount is None:
        return None
    symbol = obs.asset.symbol
    ledger_total = wallet.ledger_total(symbol)
    difference = obs.amount - ledger_total - in_transit
    if difference == 0:
        return None
    kind = "balance_shortfall" if difference < 0 else "balance_surplus"
    return Finding(
        type=kind,
        severity=SEVERITY[kind],
        chain=chain,
        address=wallet.address,
        asset=symbol,
        contract=obs.asset.contract,
        owners=wallet.owners(symbol),
        onchain=obs.amount,
        ledger=ledger_total,
        difference=difference,
        block=obs.block,
        in_transit=in_transit,
    )


@dataclass(frozen=True, slots=True)
class CrossCheck:
    """Balances read from two sources at one block, compared."""

    observations: tuple[BalanceObservation, ...]
    """The primary's observations; a pair the sources disagree on (or the second could
    not read) carries an error instead of an amount, so it raises no balance finding."""
    findings: tuple[Finding, ...]
    """One `source_disagreement` per client (wallet, asset) whose amounts differ."""


def cross_check(ledger: LedgerView, primary: Iterable[BalanceObservation],
                secondary: Iterable[BalanceObservation]) -> CrossCheck:
    """Compare two sources' reads of the same (address, asset) pairs at the same block.

    Agreement keeps the observation. Different amounts give a `source_disagreement`
    (for wallets in the ledger; `onchain` the primary's amount, `difference` primary -
    secondary, `counterparty` the second source) and an error observation; a pair
    the second source could not read, or read at another block, is an error too.
    """
    others = {(o.address, o.asset.symbol): o for o in secondary}
    kept: list[BalanceObservation] = []
    findings: list[Finding] = []
    for obs in primary:
        other = others.get((obs.address, obs.asset.symbol))
        if obs.amount is None:
            kept.append(obs)
            continue
        reason = None
        if other is None or other.amount is None:
            reason = f"not verified: second source {other.source if other else '?'} " \
                     f"could not read it ({other.error if other else 'missing'})"
        elif other.block.hash != obs.block.hash:
            reason = f"not verified: second source read block {other.block.height}"
        elif other.amount != obs.amount:
            reason = f"sources disagree: {obs.source} {obs.amount}, {other.source} {other.amount}"
            wallet = ledger.wallets.get(obs.address)
            if wallet is not None:
                findings.append(Finding(
                    type="source_disagreement", severity=SEVERITY["source_disagreement"],
                    chain=ledger.chain, address=obs.address, asset=obs.asset.symbol,
                    contract=obs.asset.contract, owners=wallet.owners(obs.asset.symbol),
                    onchain=obs.amount, ledger=None, difference=obs.amount - other.amount,
                    block=obs.block, counterparty=other.source))
        kept.append(obs if reason is None else BalanceObservation(
            obs.address, obs.asset, None, obs.block, obs.source, error=reason))
    return CrossCheck(tuple(kept), tuple(findings))


def unverified_findings(ledger: LedgerView, read_errors: Iterable[BalanceObservation],
                        unverified_for: Mapping[tuple[Address, str], float],
                        sla: float) -> tuple[Finding, ...]:
    """One `balance_unverified` per client (wallet, asset) that has gone unread or
    unverified for longer than `sla` seconds (`unverified_for`: seconds since it was last
    verified, per pair). A pair that could not be read is never counted as compliant;
    past the SLA that is a finding of its own (fail closed)."""
    findings = []
    for obs in read_errors:
        wallet = ledger.wallets.get(obs.address)
        if wallet is None or not wallet.is_client:
            continue
        if unverified_for.get((obs.address, obs.asset.symbol), 0.0) <= sla:
            continue
        findings.append(Finding(
            type="balance_unverified", severity=SEVERITY["balance_unverified"],
            chain=ledger.chain, address=obs.address, asset=obs.asset.symbol,
            contract=obs.asset.contract, owners=wallet.owners(obs.asset.symbol),
            onchain=None, ledger=wallet.ledger_total(obs.asset.symbol), difference=None,
            block=obs.block))
    return tuple(sorted(findings, key=lambda f: f.fingerprint))


def stale_finding(chain: str, critical: bool) -> Finding:
    """The chain-level `source_stale` finding (no address or asset): warning, critical
    once the chain has been stale for three times its SLA."""
    return Finding(type="source_stale", severity="critical" if critical else "warning",
                   chain=chain, address=Address(""), asset="", contract=None, owners=(),
                   onchain=None, ledger=None, difference=None)


MAX_DETAIL_CHARS = 100
"""The longest description a finding stores (its `counterparty` column)."""
_SOURCE_PREFIX = re.compile(r"^source \S+ unavailable: ")
_LONG_HASH = re.compile(r"0x([0-9a-fA-F]{6})[0-9a-fA-F]{52}([0-9a-fA-F]{6})")


def scan_stalled_finding(chain: str, since: datetime, now: datetime, sla_seconds: float,
                         problem: str) -> Finding | None:
    """The chain-level `scan_stalled` finding: the transfer scan has failed in every cycle
    since `since` (a source refused or misreported the range), so transfers after its
    cursor are unknown. The chain is unverified from the first failure (status); this
    finding opens once the failures have lasted half the chain's SLA (`sla_seconds`), as a
    warning, and is critical past the SLA: a failure or two that the next cycle mends
    pages nobody. None before then. It says for how long and what is wrong, bounded to
    MAX_DETAIL_CHARS with 32-byte hashes shortened (the whole message is the chain's
    `scan_error` in status)."""
    seconds = (now - since).total_seconds()
    if seconds < sla_seconds / 2:
        return None
    stalled = max(0, int(seconds))
    detail = f"stalled {stalled} s: " + _LONG_HASH.sub(r"0x\1…\2",
                                                     _SOURCE_PREFIX.sub("", problem))
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS - 1] + "…"
    return Finding(type="scan_stalled",
                   severity="critical" if seconds > sla_seconds else SEVERITY["scan_stalled"],
                   chain=chain, address=Address(""), asset="", contract=None, owners=(),
                   onchain=None, ledger=None, difference=None, counterparty=detail)


def ledger_stale_finding(chain: str, cut_off: datetime | None, now: datetime,
                         max_age_seconds: float) -> Finding | None:
    """The chain-level `ledger_stale` finding (warning) when the current snapshot was cut
    more than `max_age_seconds` before `now`; None when it is recent enough or there is
    no ledger yet (SPEC §8). The finding names the cut-off and its age."""
    if cut_off is None or (now - cut_off).total_seconds() <= max_age_seconds:
        return None
    age = int((now - cut_off).total_seconds())
    return Finding(type="ledger_stale", severity=SEVERITY["ledger_stale"], chain=chain,
                   address=Address(""), asset="", contract=None, owners=(), onchain=None,
                   ledger=None, difference=None,
                   counterparty=f"ledger cut off at {cut_off.isoformat()}, {age} s ago")
