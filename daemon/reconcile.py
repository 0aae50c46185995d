"""PURE reconciliation: findings from a ledger view and balance observations.

No I/O, no clock, no database: the same inputs in any order give the same findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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


def reconcile(ledger: LedgerView, observations: Iterable[BalanceObservation]) -> Reconciliation:
    """Compare every observed client (wallet, asset) balance with its allocation total.

    Returns findings sorted by fingerprint. House wallets and addresses absent from
    the ledger produce no findings.
    """
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
        finding = balance_finding(ledger.chain, wallet, obs)
        if finding is not None:
            findings.append(finding)
    findings.sort(key=lambda f: f.fingerprint)
    errors.sort(key=lambda o: (o.address, o.asset.symbol))
    return Reconciliation(tuple(findings), frozenset(verified), tuple(errors))


def balance_finding(chain: str, wallet: WalletView, obs: BalanceObservation) -> Finding | None:
    """Return the shortfall or surplus of one client (wallet, asset), or None when it matches."""
    if wallet.structure not in CLIENT_STRUCTURES or obs.amount is None:
        return None
    symbol = obs.asset.symbol
    ledger_total = wallet.ledger_total(symbol)
    difference = obs.amount - ledger_total
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
    )
