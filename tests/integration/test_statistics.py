"""The newest stored balances of given wallets, and the planner statistics a bulk write
leaves behind (issue 18: at a million wallets on PostgreSQL without statistics, a steady
cycle's read of its wallets' newest balances scanned the whole observation table, 0.7 s
per 500 wallets)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text
from sqlmodel import Session

from chains.types import Address
from daemon.rules.reconcile import WalletView
from daemon.store import models as m
from daemon.store.db import BULK_ROWS, make_engine, refresh_statistics, upgrade, upgrade_as_owner
from daemon.store.observations import latest_observations, newest_amounts
from tests.integration.test_db_roles import two_roles
from tests.realdeps import postgres_schema

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def fill(engine: Engine, wallets: int, seed: int = 7) -> None:
    """Two chains of `wallets` wallets each, two assets each; random observations over
    ten blocks (some pairs never observed, some observed many times)."""
    rng = random.Random(seed)
    with engine.begin() as db:
        for chain_id in (1, 2):
            db.execute(insert(m.Chain), [{"id": chain_id, "name": f"c{chain_id}",
                                          "family": "evm", "network": str(chain_id)}])
            db.execute(insert(m.Asset), [
                {"id": 2 * chain_id - 1 + k, "chain_id": chain_id, "symbol": f"A{k}",
                 "decimals": 6} for k in (0, 1)])
        db.execute(insert(m.Wallet), [
            {"id": w, "chain_id": 1 + (w > wallets), "address": f"0x{w:040x}",
             "structure": "omnibus"} for w in range(1, 2 * wallets + 1)])
        rows = []
        for w in range(1, 2 * wallets + 1):
            chain_id = 1 + (w > wallets)
            for asset in (2 * chain_id - 1, 2 * chain_id):
                for height in sorted(rng.sample(range(10), rng.choice((0, 1, 1, 2, 4)))):
                    rows.append({"wallet_id": w, "asset_id": asset,
                                 "amount": rng.randrange(10**6), "error": None,
                                 "block_height": height, "block_hash": f"0x{height:064x}",
                                 "source": "s", "observed_at": T0 + timedelta(minutes=height)})
        rng.shuffle(rows)  # ids do not follow the blocks' order within a pair's history
        rows.sort(key=lambda r: (r["block_height"], rng.random()))
        db.execute(insert(m.BalanceObservation), rows)


def test_the_newest_balances_of_given_wallets_are_those_of_the_whole_chain(
        store_url: str) -> None:
    """Asked for some wallets, `latest_observations` answers exactly the whole chain's
    newest observation of each of their pairs (and none for a pair never observed), also
    as of a past checkpoint's (time, height); SQLite and PostgreSQL alike."""
    engine = make_engine(store_url)
    upgrade(engine)
    fill(engine, 300)
    rng = random.Random(3)
    with Session(engine) as session:
        for upto in (None, (T0 + timedelta(minutes=5), 5), (T0 + timedelta(minutes=9), 3)):
            every = latest_observations(session, 1, upto=upto)
            chosen = rng.sample(range(1, 301), 120)
            some = latest_observations(session, 1, upto=upto, wallet_ids=chosen)
            assert some == {pair: stored for pair, stored in every.items()
                            if pair[0] in chosen}
            assert some and len(some) < 2 * len(chosen)  # some pairs were never observed
            if upto is not None:
                assert all(s.block_height <= upto[1] for s in some.values())
    engine.dispose()


def test_the_newest_amounts_a_replica_carries_are_those_of_the_whole_chain(store_url: str) -> None:
    """What a replica carries after a restart (`newest_amounts`, read per pair, of a whole
    chain or of one shard's wallets) is the newest observation's amount of each pair, as
    the whole chain's `GROUP BY` answers it, none for a pair never observed or whose
    newest read failed, keyed by the books' own address objects; SQLite and PostgreSQL
    alike."""
    engine = make_engine(store_url)
    upgrade(engine)
    fill(engine, 300)
    with engine.begin() as db:  # the newest read of some pairs failed
        db.execute(insert(m.BalanceObservation), [
            {"wallet_id": w, "asset_id": 1, "amount": None, "error": "node said no",
             "block_height": 20, "block_hash": "0x" + "e" * 64, "source": "s",
             "observed_at": T0 + timedelta(minutes=20)} for w in range(1, 300, 7)])
    books = {Address(f"0x{w:040x}"): WalletView(Address(f"0x{w:040x}"), "omnibus")
             for w in range(1, 301)}
    rng = random.Random(5)
    shard = {a: books[a] for a in rng.sample(sorted(books), 140)}
    with Session(engine) as session:
        every = newest_amounts(session, 1, books)
        some = newest_amounts(session, 1, shard)
        grouped = latest_observations(session, 1)
    assert every == {(Address(f"0x{w:040x}"), f"A{a - 1}"): stored.amount
                     for (w, a), stored in grouped.items() if stored.amount is not None}
    assert some == {key: amount for key, amount in every.items() if key[0] in shard}
    assert all(key[0] is shard[key[0]].address for key in some)  # no second copy
    failed = {(Address(f"0x{w:040x}"), "A0") for w in range(1, 300, 7)}
    assert not failed & set(every) and len(some) > 100
    engine.dispose()


@pytest.fixture
def pg_store() -> Iterator[Engine]:
    """An isolated PostgreSQL schema with 20,000 wallets and 400,000 observations (ten
    blocks of two assets), written in bulk and never analyzed (autovacuum kept off its
    tables)."""
    with postgres_schema() as url:
        engine = make_engine(url)
        upgrade(engine)
        with engine.begin() as db:
            for table in ("wallet", "balance_observation"):
                db.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            db.execute(text("INSERT INTO chain (id, name, family, network) "
                            "VALUES (1, 'c1', 'evm', '1')"))
            db.execute(text("INSERT INTO asset (id, chain_id, symbol, decimals) "
                            "VALUES (1, 1, 'ETH', 18), (2, 1, 'USDC', 6)"))
            db.execute(text("INSERT INTO wallet (id, chain_id, address, structure) "
                            "SELECT g, 1, 'w' || g, 'omnibus' FROM generate_series(1, 20000) g"))
            db.execute(text(
                "INSERT INTO balance_observation (wallet_id, asset_id, amount, block_height, "
                "block_hash, source, observed_at) SELECT g % 20000 + 1, g / 20000 % 2 + 1, g, "
                "g / 20000, 'h', 's', now() FROM generate_series(0, 399999) g"))
        try:
            yield engine
        finally:
            engine.dispose()


def statements_of(engine: Engine) -> tuple[list[tuple[str, Any]], Any]:
    seen: list[tuple[str, Any]] = []

    def spy(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
            _many: bool) -> None:
        seen.append((statement, parameters))
    event.listen(engine, "before_cursor_execute", spy)
    return seen, spy


@pytest.mark.postgres
def test_the_newest_balances_of_given_wallets_walk_the_index_without_statistics(
        pg_store: Engine) -> None:
    """Before any analyze of a bulk write, the query of 500 wallets' newest balances is
    planned onto the (wallet, asset, id) index, not a scan of the whole table (which is
    what a `GROUP BY` over those wallets' rows was planned as, here and at a million
    wallets)."""
    chosen = random.Random(5).sample(range(1, 20001), 500)
    seen, spy = statements_of(pg_store)
    with Session(pg_store) as session:
        newest = latest_observations(session, 1, wallet_ids=chosen)
    event.remove(pg_store, "before_cursor_execute", spy)
    assert len(newest) == 1000 and {s.block_height for s in newest.values()} == {18, 19}
    asked = [s for s in seen if "balance_observation" in s[0]]
    assert len(asked) == 2  # the newest ids, then their rows
    with pg_store.connect() as db:
        assert db.execute(text(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
            "WHERE relname = 'balance_observation' AND schemaname = current_schema()")
        ).one() == (None, None)
        plans = ["\n".join(row[0] for row in db.exec_driver_sql("EXPLAIN " + statement,
                                                                  parameters))
                 for statement, parameters in asked]
    assert "Index Only Scan Backward using ix_balance_observation_pair" in plans[0]
    assert "Seq Scan on balance_observation" not in plans[0], plans[0]
    # then the rows of those ids: an estimate that is exact whatever the statistics (the
    # ids are unique), so scanning the table is chosen only where it is the cheaper way
    assert " rows=1000 " in plans[1].splitlines()[0], plans[1]


@pytest.mark.postgres
def test_a_bulk_write_is_analyzed_when_the_role_may(pg_store: Engine) -> None:
    """`refresh_statistics` analyzes a table written in bulk (at least BULK_ROWS rows and
    more than a tenth of what its statistics counted; all of them before any analyze),
    and leaves alone a table written less than that, or not named."""
    def analyzed() -> dict[str, bool]:
        with pg_store.connect() as db:  # a new transaction: a fresh view of the statistics
            return dict(db.execute(text(
                "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
                "WHERE relname IN ('wallet', 'balance_observation') "
                "AND schemaname = current_schema()")).all())  # not other tests' schemas
    assert refresh_statistics(pg_store, {"wallet": BULK_ROWS - 1}) == []
    assert analyzed() == {"wallet": False, "balance_observation": False}
    assert refresh_statistics(pg_store, {"wallet": 20_000}) == ["wallet"]
    assert analyzed() == {"wallet": True, "balance_observation": False}
    assert refresh_statistics(pg_store, {"wallet": 1_500}) == []  # 20,000 counted now
    assert refresh_statistics(pg_store, {"wallet": 2_001, "balance_observation": 1_000}
                              ) == ["balance_observation", "wallet"]
    assert analyzed() == {"wallet": True, "balance_observation": True}


def test_refreshing_statistics_is_a_no_op_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    upgrade(engine)
    fill(engine, 600)
    assert refresh_statistics(engine, {"wallet": 1200, "balance_observation": 5000}) == []
    with engine.connect() as db:  # no sqlite_stat1 table: SQLite never analyzed
        assert db.exec_driver_sql("SELECT count(*) FROM sqlite_master "
                                  "WHERE name = 'sqlite_stat1'").scalar() == 0
    engine.dispose()


@pytest.mark.postgres
def test_a_role_that_may_not_analyze_leaves_it_to_autovacuum(tmp_path: Path) -> None:
    """The confined runtime role (not the tables' owner) writes in bulk: nothing is
    analyzed and nothing fails; the owner's call does analyze."""
    with two_roles() as r:
        upgrade_as_owner(r.owner_url, r.runtime_url)
        runtime, owner = make_engine(r.runtime_url), make_engine(r.owner_url)
        try:
            with runtime.begin() as db:
                db.execute(text("INSERT INTO chain (id, name, family, network) "
                                "VALUES (1, 'c1', 'evm', '1')"))
                db.execute(text("INSERT INTO wallet (chain_id, address, structure) "
                                "SELECT 1, 'w' || g, 'omnibus' "
                                "FROM generate_series(1, 3000) g"))
            assert refresh_statistics(runtime, {"wallet": 3000}) == []
            assert refresh_statistics(owner, {"wallet": 3000}) == ["wallet"]
        finally:
            runtime.dispose()
            owner.dispose()
