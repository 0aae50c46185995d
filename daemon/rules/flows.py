"""PURE rules for transfers: authorization against approved withdrawals, commingling,
and balance continuity between checkpoints. No I/O and no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from chains.types import Address, BalanceObservation, ChainHead, FeePayment, TransferObservation
from daemon.rules.reconcile import SEVERITY, Finding, LedgerView, WalletView


@dataclass(frozen=True, slots=True)
class Instruction:
    """An approved withdrawal not yet used by any transfer."""

    id: int
    from_address: str
    to_address: str
    asset: str
    amount: int
    approved_at: datetime
    tx_hash: str | None = None
    approved_by: str = ""


@dataclass(frozen=True, slots=True)
class Flow:
    """A transfer with its asset symbol resolved and its block's time."""

    transfer: TransferObservation
    asset: str
    block_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """Findings of new transfers and the instruction each authorized transfer used."""

    findings: tuple[Finding, ...]
    matches: Mapping[tuple[str, str, int, str], int]


def classify(chain: str, ledger: LedgerView, flows: Sequence[Flow],
             instructions: Sequence[Instruction], window: timedelta,
             checkers: frozenset[str]) -> Classification:
    """Judge each flow out of (or into) a client wallet.

    An outflow from a client wallet is authorized only by an instruction approved by one
    of `checkers` that names the same source wallet, destination, asset and exact amount,
    approved before the transfer's block and at most `window` before it — and, when the
    instruction carries a tx hash, only the transaction with that hash (each instruction
    authorizes one transfer; a transfer whose block time is unknown is not authorized).
    Without one: a move to a house wallet or to another owner's wallet is `commingling`,
    to any other address an `unauthorized_outflow`; moves between wallets of the same
    owners are internal. A move from a house wallet into a client wallet without an
    instruction is `commingling` too. Returns findings in flow order.
    """
    unused = sorted((i for i in instructions if i.approved_by in checkers),
                    key=lambda i: (i.approved_at, i.id))
    findings: list[Finding] = []
    matches: dict[tuple[str, str, int, str], int] = {}
    for flow in sorted(flows, key=lambda f: (f.transfer.block.height, f.transfer.key)):
        verdict = _judge(ledger, flow)
        if verdict is None:
            continue
        used = _match(flow, unused, window)
        if used is not None:
            unused.remove(used)
            matches[flow.transfer.key] = used.id
            continue
        kind, wallet = verdict
        findings.append(_finding(chain, kind, wallet, flow))
    return Classification(tuple(findings), matches)


def flagged(ledger: LedgerView, flow: Flow) -> bool:
    """Whether `flow` raises a transfer finding unless an instruction authorizes it."""
    return _judge(ledger, flow) is not None


def _judge(ledger: LedgerView, flow: Flow) -> tuple[str, WalletView] | None:
    """Return (finding type, client wallet) a flow would raise without an instruction."""
    t = flow.transfer
    source = ledger.wallets.get(t.sender) if t.sender else None
    target = ledger.wallets.get(t.recipient)
    if source is not None and source.is_client:
        if target is None:
            return "unauthorized_outflow", source
        if not target.is_client or target.all_owners != source.all_owners:
            return "commingling", source
        return None
    if source is not None and target is not None and target.is_client:
        return "commingling", target  # firm assets into a client wallet
    return None


def _match(flow: Flow, unused: Sequence[Instruction], window: timedelta) -> Instruction | None:
    """The first instruction that authorizes `flow`: a tx-hash instruction for its own
    transaction first, then one without a hash; both must match the transfer exactly."""
    t = flow.transfer
    if flow.block_time is None:
        return None  # when the transfer happened is unknown: nothing can authorize it
    candidates = [i for i in unused if (i.from_address, i.to_address, i.asset, i.amount) ==
                  (t.sender, t.recipient, flow.asset, t.amount)
                  and i.approved_at <= flow.block_time <= i.approved_at + window]
    if t.tx_hash is not None:
        for instruction in candidates:
            if instruction.tx_hash and instruction.tx_hash.lower() == t.tx_hash.lower():
                return instruction
    return next((i for i in candidates if not i.tx_hash), None)


def _finding(chain: str, kind: str, wallet: WalletView, flow: Flow) -> Finding:
    t = flow.transfer
    counterparty = t.recipient if t.sender == wallet.address else t.sender
    return Finding(type=kind, severity=SEVERITY[kind], chain=chain, address=wallet.address,
                   asset=flow.asset, contract=t.contract, owners=wallet.owners(flow.asset),
                   onchain=None, ledger=None, difference=None, block=t.block,
                   tx_hash=t.tx_hash, amount=t.amount, counterparty=counterparty,
                   event=":".join(str(part) for part in t.key))


def continuity(chain: str, ledger: LedgerView, since: ChainHead,
               previous: Mapping[tuple[Address, str], int],
               observations: Iterable[BalanceObservation], flows: Iterable[Flow],
               fees: Iterable[FeePayment], native: str) -> list[Finding]:
    """Check Δbalance = inflows - outflows - fees for every client (wallet, asset) read now
    and at the checkpoint `since`, using the flows and fees of blocks after `since` up to
    the observations' block. Returns an `unexplained_balance_change` per mismatch,
    carrying the unexplained amount as `difference`.
    """
    net: dict[tuple[Address, str], int] = defaultdict(int)
    for flow in flows:
        t = flow.transfer
        net[(t.recipient, flow.asset)] += t.amount
        if t.sender is not None:
            net[(t.sender, flow.asset)] -= t.amount
    for fee in fees:
        net[(fee.payer, native)] -= fee.amount
    findings = []
    for obs in observations:
        wallet = ledger.wallets.get(obs.address)
        key = (obs.address, obs.asset.symbol)
        if wallet is None or not wallet.is_client or obs.amount is None or key not in previous:
            continue
        expected = previous[key] + net[key]
        if obs.amount != expected:
            findings.append(Finding(
                type="unexplained_balance_change",
                severity=SEVERITY["unexplained_balance_change"], chain=chain,
                address=obs.address, asset=obs.asset.symbol, contract=obs.asset.contract,
                owners=wallet.owners(obs.asset.symbol), onchain=obs.amount, ledger=None,
                difference=obs.amount - expected, block=obs.block,
                event=f"{since.height}-{obs.block.height}"))
    return findings
