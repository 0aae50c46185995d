"""Stored balance observations: the newest per (wallet, asset), what an incremental
cycle starts from (`recheck_basis`) and the balances a replica keeps between cycles
(`Resident`), and the append-only writes of a cycle's reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from chains.types import Address, BalanceObservation, BaseUnits, ChainHead
from daemon.rules.recheck import NO_BASIS, Basis
from daemon.rules.reconcile import WalletView, differs
from daemon.store import models as m
from daemon.store import transfers as tx
from daemon.store.db import driver_form, insert_plain

INSERT_CHUNK = 10_000  # rows per bulk insert: bounds memory on 100k-wallet cycles
_OBSERVATIONS: Any = m.BalanceObservation.__table__  # type: ignore[attr-defined]
_OBSERVATION_KEYS = ("wallet_id", "asset_id", "amount", "error", "block_height",
                     "block_hash", "source", "observed_at")
"""Written as plain driver rows (db.insert_plain): through the ORM's bulk path a full read
of 100,000 wallets spent 3.8 s of a 13 s profiled first cycle in the insert, through
Core's executemany still 2.6 s of SQLAlchemy's per-row parameter processing."""


@dataclass(slots=True)
class Resident:
    """A shard's newest stored balances held in memory across its cycles (what an
    incremental cycle carries: `newest_amounts`), so a steady cycle does not load every
    pair from the store. Valid only while the shard's newest checkpoint is `checkpoint`,
    the one the replica holding it wrote: any other writer (a replica that took the lease
    over meanwhile) writes a newer checkpoint, and the amounts are loaded again. (Every
    replica runs the chain's one shard layout, so a shard's wallets are written only by
    that shard's cycles, each ending with its checkpoint.)"""

    checkpoint: int
    amounts: dict[tuple[Address, str], BaseUnits]
    symbols: tuple[str, ...]
    """The chain's configured assets."""
    differing: set[tuple[Address, str]] = dataclasses.field(default_factory=set)
    """The pairs whose amount differs from the books the resident is kept with
    (`differs`): the only carried pairs that can have a balance finding. A resident is
    kept with one version of the books (the service drops it when they change)."""
    unread: set[Address] = dataclasses.field(default_factory=set)
    """The wallets lacking an amount of some asset: read by the next cycle."""

    @classmethod
    def of(cls, checkpoint: int, amounts: dict[tuple[Address, str], BaseUnits],
           wallets: Mapping[Address, WalletView], symbols: Sequence[str]) -> Resident:
        """The resident of a shard's `wallets` with their newest stored `amounts`."""
        return cls(checkpoint, amounts, tuple(symbols), {
            (address, symbol) for (address, symbol), amount in amounts.items()
            if (wallet := wallets.get(address)) is not None and differs(wallet, symbol, amount)},
            {address for address in wallets
             if any((address, symbol) not in amounts for symbol in symbols)})

    def advance(self, checkpoint: int, fresh: Iterable[BalanceObservation],
                wallets: Mapping[Address, WalletView]) -> None:
        """Apply a recorded cycle: its `fresh` (stored) observations replace their pairs'
        amounts (a read error removes the pair: it is read again next time); keys stay the
        books' own address objects."""
        symbols = {symbol: symbol for symbol in self.symbols}
        seen: set[Address] = set()
        for obs in fresh:
            wallet = wallets.get(obs.address)
            if wallet is None:
                continue
            key = (wallet.address, symbols.setdefault(obs.asset.symbol, obs.asset.symbol))
            seen.add(wallet.address)
            self.differing.discard(key)
            if obs.amount is None:
                self.amounts.pop(key, None)
                continue
            self.amounts[key] = obs.amount
            if differs(wallet, key[1], obs.amount):
                self.differing.add(key)
        for address in seen:
            if all((address, symbol) in self.amounts for symbol in self.symbols):
                self.unread.discard(address)
            else:
                self.unread.add(address)
        self.checkpoint = checkpoint


def recheck_basis(session: Session, chain_id: int, shard: int, shards: int,
                  wallets: Mapping[Address, WalletView], symbols: Sequence[str],
                  resident: Resident | None = None) -> tuple[Basis, Resident | None]:
    """What an incremental cycle of the shard's `wallets` starts from
    (`daemon.rules.recheck`): its previous checkpoint when scanned, their newest stored
    balances, the wallets with open findings and those the stored scan saw touched since
    that checkpoint's block; and the newest stored balances as a `Resident` (None without
    a checkpoint). The balances come from `resident` when it is still valid (the shard's
    newest checkpoint is its own), from the store otherwise."""
    previous = session.exec(select(m.Checkpoint).where(
        m.Checkpoint.chain_id == chain_id, m.Checkpoint.shard == shard,
        m.Checkpoint.shards == shards).order_by(col(m.Checkpoint.id).desc())).first()
    state = tx.scan_state(session, chain_id)
    if previous is None or previous.id is None or state is None or \
            not (previous.scanned or _covered_now(previous, state)):
        return NO_BASIS, None  # the cycle reads every wallet
    if resident is None or resident.checkpoint != previous.id:
        resident = Resident.of(previous.id, newest_amounts(session, chain_id, wallets),
                               wallets, symbols)
    carried = resident.amounts
    flagged = frozenset(Address(a) for a in session.exec(
        select(m.Discrepancy.address).where(
            m.Discrepancy.chain_id == chain_id, col(m.Discrepancy.address).is_not(None),
            col(m.Discrepancy.status).in_(m.OPEN_STATUSES))).all() if a)
    touched = frozenset(Address(a) for a in tx.touched_above(session, chain_id,
                                                            previous.block_height))
    return Basis(ChainHead(previous.block_height, previous.block_hash), previous.swept_at,
                 carried, flagged, touched, state.recent, state.error,
                 state.traced_from, resident.unread), resident


def _covered_now(checkpoint: m.Checkpoint, state: tx.ScanState) -> bool:
    """Whether the scan now covers the block of a checkpoint written before it did: a
    shard that does not scan, whose first cycle recorded before shard 0's first cycle
    started the scan at that block or below (shards start side by side). Its balances
    were read at that block like any checkpoint's; what moved since is scanned, so the
    next cycle may carry from it (daemon/rules/recheck.py checks the span again), instead
    of a second full read of the shard."""
    return state.start_height <= checkpoint.block_height <= state.height and \
        state.recent.get(checkpoint.block_height) == checkpoint.block_hash


class PairIds(NamedTuple):
    """Store ids of the wallets (by address) and assets (by symbol) a cycle writes."""

    wallets: dict[str, int]
    assets: dict[str, int]

    def of(self, address: str, symbol: str) -> Pair:
        return self.wallets.get(address), self.assets.get(symbol)


def pair_ids(session: Session, chain_id: int, addresses: Collection[str],
              every: bool) -> PairIds:
    """The ids of `addresses` and the chain's assets: an incremental cycle looks up only
    the wallets it read; a full read (`every`) walks the chain's wallets once, in
    batches, keeping the ids of `addresses` only, under the very address objects given
    (a shard's full read at a million wallets kept a second copy of every address of
    the chain: ~150 MiB per shard at the peak of its write)."""
    query = sa_select(col(m.Wallet.address), col(m.Wallet.id)) \
        .where(col(m.Wallet.chain_id) == chain_id)
    wallets: dict[str, int] = {}
    if every:
        own = {address: address for address in addresses}
        for address, id_ in _chain_wallet_ids(session, chain_id):
            mine = own.get(address)
            if mine is not None:
                wallets[mine] = id_
    else:
        chosen = sorted(addresses)
        for start in range(0, len(chosen), 500):
            wallets.update((address, id_) for address, id_ in session.execute(query.where(
                col(m.Wallet.address).in_(chosen[start:start + 500]))))
    assets = {symbol: id_ for symbol, id_ in session.execute(
        sa_select(col(m.Asset.symbol), col(m.Asset.id))
        .where(col(m.Asset.chain_id) == chain_id))}
    return PairIds(wallets, assets)


def _chain_wallet_ids(session: Session, chain_id: int) -> Iterator[tuple[Address, int]]:
    """Every wallet of the chain as (its stored canonical address, id), fetched in
    batches (a million rows are not held at once)."""
    rows = session.execute(sa_select(col(m.Wallet.address), col(m.Wallet.id))
                           .where(col(m.Wallet.chain_id) == chain_id)
                           .execution_options(yield_per=20_000))
    yield from ((address, id_) for address, id_ in rows)


def store_observations(session: Session, observations: Sequence[BalanceObservation],
                        ids: PairIds, now: datetime, latest: Mapping[Pair, Stored]) -> int:
    """Append an observation for every (wallet, asset) whose balance or error changed
    since `latest` (the newest stored per pair)."""
    connection = session.connection()
    amount = driver_form(connection, _OBSERVATIONS.c.amount)
    stamp = driver_form(connection, _OBSERVATIONS.c.observed_at)(now)
    rows: list[tuple[Any, ...]] = []
    stored = 0
    for obs in observations:
        key = ids.of(obs.address, obs.asset.symbol)
        known = latest.get(key)
        if key[0] is None or key[1] is None or \
                (known is not None and (known.amount, known.error) == (obs.amount, obs.error)):
            continue
        rows.append((key[0], key[1], amount(obs.amount), (obs.error or None) and obs.error[:500],
                     obs.block.height, obs.block.hash, obs.source, stamp))
        if len(rows) >= INSERT_CHUNK:
            insert_plain(connection, _OBSERVATIONS, _OBSERVATION_KEYS, rows)
            stored, rows = stored + len(rows), []
    insert_plain(connection, _OBSERVATIONS, _OBSERVATION_KEYS, rows)
    return stored + len(rows)


Pair = tuple[int | None, int | None]
"""(wallet id, asset id)."""


def first_error_since_verified(session: Session, pairs: Sequence[Pair]
                                ) -> dict[Pair, datetime]:
    """The time of the first error observation after the newest verified amount, per
    (wallet id, asset id); the first observation when the pair was never verified."""
    out: dict[Pair, datetime] = {}
    obs = m.BalanceObservation
    for start in range(0, len(pairs), 500):
        chunk = pairs[start:start + 500]
        wallet_ids = {w for w, _ in chunk}
        verified = dict(((w, a), i) for w, a, i in session.execute(
            sa_select(col(obs.wallet_id), col(obs.asset_id), func.max(obs.id))
            .where(col(obs.wallet_id).in_(wallet_ids), col(obs.amount).is_not(None))
            .group_by(col(obs.wallet_id), col(obs.asset_id))).all())
        rows = session.execute(
            sa_select(col(obs.wallet_id), col(obs.asset_id), col(obs.id), col(obs.observed_at))
            .where(col(obs.wallet_id).in_(wallet_ids), col(obs.amount).is_(None))).all()
        wanted = set(chunk)
        for wallet, asset, id_, at in rows:
            key = (wallet, asset)
            if key in wanted and id_ > verified.get(key, 0) and \
                    (key not in out or at < out[key]):
                out[key] = at
    return out


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Stored(NamedTuple):
    """A stored observation's value, and when and at which block it was read."""

    amount: Any
    error: Any
    observed_at: datetime
    block_height: int


def latest_observations(session: Session, chain_id: int,
                        upto: tuple[datetime, int] | None = None,
                        wallet_ids: Iterable[int] | None = None) -> dict[Pair, Stored]:
    """The newest observation per (wallet, asset), or, with `upto` = (time, height) of a
    past checkpoint, the newest stored by then at or below its block (the balances that
    checkpoint read). With `wallet_ids`, only those wallets' pairs."""
    chunks: list[list[int] | None] = [None]
    if wallet_ids is not None:
        chosen = sorted(wallet_ids)
        chunks = [chosen[start:start + 500] for start in range(0, len(chosen), 500)]
    out: dict[Pair, Stored] = {}
    columns = (col(m.BalanceObservation.wallet_id), col(m.BalanceObservation.asset_id),
               col(m.BalanceObservation.amount), col(m.BalanceObservation.error),
               col(m.BalanceObservation.observed_at), col(m.BalanceObservation.block_height))
    for chunk in chunks:
        if chunk is None:
            newest = newest_ids(chain_id, upto, None).subquery()
            rows = session.execute(sa_select(*columns).join(
                newest, col(m.BalanceObservation.id) == newest.c.id)).all()
        else:  # the ids first: a join back to the table is planned from statistics too
            ids = [id_ for (id_,) in session.execute(_newest_ids_of(upto, chunk))
                   if id_ is not None]
            rows = session.execute(sa_select(*columns).where(
                col(m.BalanceObservation.id).in_(ids))).all() if ids else []
        out.update(((w, a), Stored(amount, error, at, height))
                   for w, a, amount, error, at, height in rows)
    return out


def newest_ids(chain_id: int, upto: tuple[datetime, int] | None,
               wallet_ids: Sequence[int] | None) -> Any:
    """The id of the newest observation per (wallet, asset) of the chain, or of the given
    wallets of the chain, by one `GROUP BY` (see `latest_observations`)."""
    query = (select(func.max(m.BalanceObservation.id).label("id"))
             .join(m.Wallet, col(m.BalanceObservation.wallet_id) == m.Wallet.id)
             .where(m.Wallet.chain_id == chain_id))
    if wallet_ids is not None:
        query = query.where(col(m.BalanceObservation.wallet_id).in_(wallet_ids))
    if upto is not None:
        moment, height = upto
        query = query.where(m.BalanceObservation.observed_at <= moment,
                            m.BalanceObservation.block_height <= height)
    return query.group_by(col(m.BalanceObservation.wallet_id),
                          col(m.BalanceObservation.asset_id))


def _newest_ids_of(upto: tuple[datetime, int] | None, wallet_ids: Sequence[int]) -> Any:
    """The id of the newest observation per (wallet, asset) of the given wallets (of one
    chain; see `latest_observations`): one backward step on the (wallet, asset, id)
    index per pair of a wallet and an asset of its chain (NULL for a pair never observed).

    A `GROUP BY` over the given wallets' observations is planned from the table's
    statistics: on PostgreSQL without them (before autovacuum's first analyze of a bulk
    write, or with autovacuum off) it was a scan of the whole table, 0.7 s per 500
    wallets at a million wallets (2,100,000 observations), against 7 ms this way, which
    has no cheaper plan to mistake for."""
    observation = aliased(m.BalanceObservation)
    newest = (sa_select(col(observation.id))
              .where(col(observation.wallet_id) == col(m.Wallet.id),
                     col(observation.asset_id) == col(m.Asset.id))
              .order_by(col(observation.id).desc()).limit(1))
    if upto is not None:
        moment, height = upto
        newest = newest.where(col(observation.observed_at) <= moment,
                              col(observation.block_height) <= height)
    return (sa_select(newest.correlate(m.Wallet, m.Asset).scalar_subquery().label("id"))
            .select_from(m.Wallet)
            .join(m.Asset, col(m.Asset.chain_id) == col(m.Wallet.chain_id))
            .where(col(m.Wallet.id).in_(wallet_ids)))


def newest_amounts(session: Session, chain_id: int, wallets: Mapping[Address, WalletView]
                   ) -> dict[tuple[Address, str], BaseUnits]:
    """Per (wallet address, asset symbol) of `wallets` (every wallet of the chain, or one
    shard's), the newest stored balance when it is an amount (what an incremental cycle
    carries), without per-row timestamps; the keys are the objects of `wallets` (no
    second copy of a million addresses).

    The wallets' ids, then per 1,000 of them the newest observation's id of each pair
    (`_newest_ids_of`: one index step a pair), then those rows by id. Was a `GROUP BY`
    joined back to the table: per 5,000 wallets of a shard, 21-47 s for a shard of a
    million-wallet chain after a replica restarted (~0.45 s per 5,000 wallets at
    200,000); over a whole chain in one SQLite process, faster (4.5 s against 6.2 s at
    200,000 wallets) but the process kept ~100 MiB more after it (526 against 425 MiB;
    2,108 MiB at a million, above the first cycle's peak: BENCHMARKS.md)."""
    owned: dict[int, Address] = {}
    for address, id_ in _chain_wallet_ids(session, chain_id):
        wallet = wallets.get(address)
        if wallet is not None:
            owned[id_] = wallet.address
    symbols: dict[int, str] = {id_: symbol for id_, symbol in session.execute(
        sa_select(col(m.Asset.id), col(m.Asset.symbol))
        .where(col(m.Asset.chain_id) == chain_id))}
    ids = sorted(owned)
    out: dict[tuple[Address, str], BaseUnits] = {}
    for start in range(0, len(ids), 1000):
        newest = [id_ for (id_,) in session.execute(_newest_ids_of(None, ids[start:start + 1000]))
                  if id_ is not None]
        if not newest:
            continue
        for wallet_id, asset_id, amount in session.execute(
                sa_select(col(m.BalanceObservation.wallet_id),
                          col(m.BalanceObservation.asset_id), col(m.BalanceObservation.amount))
                .where(col(m.BalanceObservation.id).in_(newest),
                       col(m.BalanceObservation.amount).is_not(None))):
            out[owned[wallet_id], symbols[asset_id]] = BaseUnits(int(amount))
    return out
