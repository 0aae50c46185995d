"""Migration 0009: stored source URLs (with their short API keys) become hosts.

Old-style rows are written into a store at revision 0008, the way the previous version
stored them, then the store is upgraded; no key may remain, names are left alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from daemon.store import models as m
from daemon.store.db import _alembic_config, head_revision, make_engine, upgrade

KEYS = ("K8ab3xYz", "K12abcdefgh", "K16abcdefghijkl", "K32abcdefghijklmnopqrstuvwxyz012")
OLD_SOURCES = (  # what the previous redaction stored: short keys in the clear
    f"https://mainnet.infura.io/v3/{KEYS[0]}",
    f"https://***@eth.example:8443/v2/{KEYS[1]}?***",
    f"https://rpc.example/{KEYS[2]}/",
    f"https://node.example/rpc/{KEYS[3]}",
)
HOSTS = ("mainnet.infura.io", "eth.example", "rpc.example", "node.example")
NOW = datetime(2026, 11, 1, tzinfo=UTC)
ROWS = 2_345
"""More than two batches of balance observations."""


def _at_0008(url: str) -> sa.Engine:
    engine = make_engine(url)
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0008")
    return engine


def _insert(connection: sa.Connection, model: Any, rows: list[dict[str, Any]]) -> None:
    connection.execute(sa.insert(model.__table__), rows)


def _old_rows(engine: sa.Engine) -> None:
    old = OLD_SOURCES
    with engine.begin() as c:
        _insert(c, m.Chain, [{"id": 1, "name": "ethereum", "family": "evm", "network": "1",
                              "last_error": f"source {old[0]} failed: HTTP 401 from {old[1]}",
                              "last_error_at": NOW}])
        _insert(c, m.Asset, [{"id": 1, "chain_id": 1, "symbol": "ETH", "decimals": 18}])
        _insert(c, m.Wallet, [{"id": 1, "chain_id": 1, "address": "0x" + "a1" * 20,
                               "structure": "omnibus"}])
        _insert(c, m.BalanceObservation, [
            {"wallet_id": 1, "asset_id": 1, "amount": i, "block_height": i,
             "block_hash": f"0x{i:064x}", "source": old[i % 4] if i % 5 else "evm-1",
             "error": f"timeout reading {old[i % 4]}" if i % 7 == 0 else None,
             "observed_at": NOW} for i in range(ROWS)])
        _insert(c, m.Checkpoint, [
            {"chain_id": 1, "cycle_id": f"c{i}", "block_height": i, "block_hash": "0x00",
             "source": old[i], "wallets": 1, "observations": 1, "read_errors": 0,
             "findings": 0, "finished_at": NOW} for i in range(4)])
        base = {"chain_id": 1, "severity": "high", "status": "open", "owners": [],
                "detected_at": NOW, "last_seen_at": NOW, "cure_deadline": NOW}
        _insert(c, m.Discrepancy, [
            {**base, "fingerprint": "f1", "type": "source_disagreement", "counterparty": old[2]},
            {**base, "fingerprint": "f2", "type": "unauthorized_outflow",
             "counterparty": "0x" + "b2" * 20}])
        _insert(c, m.ScanCursor, [{"chain_id": 1, "start_height": 0, "height": 1,
                                   "hash": "0x00", "updated_at": NOW,
                                   "error": f"{old[3]} refused", "error_at": NOW}])
        _insert(c, m.AlertCursor, [{"sink": "webhook-0123", "updated_at": NOW,
                                    "last_error": f"POST {old[1]}: HTTP 500"}])


def _dump(engine: sa.Engine) -> str:
    """Every value of every table the database has (later migrations add more), as one
    text."""
    with engine.connect() as c:
        inspector = sa.inspect(c)
        present = set(inspector.get_table_names())
        texts = []
        for table in SQLModel.metadata.sorted_tables:
            if table.name not in present:
                continue
            columns = {col["name"] for col in inspector.get_columns(table.name)}
            query = sa.select(*(column for column in table.c if column.name in columns))
            texts += [repr(row) for row in c.execute(query).all()]
        return "\n".join(texts)


def test_upgrade_rewrites_stored_source_urls_to_hosts(store_url: str) -> None:
    """Every stored URL becomes its host: sources, counterparties, error texts; names and
    addresses stay; no key of any length is left anywhere in the store."""
    engine = _at_0008(store_url)
    _old_rows(engine)
    assert all(key in _dump(engine) for key in KEYS)
    assert upgrade(engine) == head_revision()
    text = _dump(engine)
    assert not [key for key in KEYS if key in text]
    assert "://" not in text
    with engine.connect() as c:
        sources = [r[0] for r in c.execute(sa.text(
            "SELECT source FROM balance_observation ORDER BY id")).all()]
        assert len(sources) == ROWS
        assert sources[:6] == ["evm-1", HOSTS[1], HOSTS[2], HOSTS[3], HOSTS[0], "evm-1"]
        assert [r[0] for r in c.execute(sa.text(
            "SELECT source FROM checkpoint ORDER BY id")).all()] == list(HOSTS)
        assert [r[0] for r in c.execute(sa.text(
            "SELECT counterparty FROM discrepancy ORDER BY id")).all()] == [
                HOSTS[2], "0x" + "b2" * 20]
        assert c.execute(sa.text("SELECT last_error FROM chain")).scalar_one() == \
            f"source {HOSTS[0]} failed: HTTP 401 from {HOSTS[1]}"
        assert c.execute(sa.text("SELECT error FROM scan_cursor")).scalar_one() == \
            f"{HOSTS[3]} refused"
        assert c.execute(sa.text("SELECT last_error FROM alert_cursor")).scalar_one() == \
            f"POST {HOSTS[1]}: HTTP 500"
        assert c.execute(sa.text("SELECT error FROM balance_observation WHERE id = "
                                 "(SELECT MIN(id) FROM balance_observation)")).scalar_one() \
            == f"timeout reading {HOSTS[0]}"
    engine.dispose()


def test_migrated_schema_still_matches_the_models(store_url: str) -> None:
    """0009 changes data only: the schema at head is still exactly the models."""
    engine = make_engine(store_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []
    engine.dispose()


def test_the_reconciling_items_revision_goes_down_and_up_again(store_url: str) -> None:
    """Revision 0013 (block times, orphaned_at, in_transit) downgrades to 0012 and
    upgrades again to a schema that matches the models."""
    engine = make_engine(store_url)
    upgrade(engine)
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0012")
        assert "in_transit" not in {c["name"] for c in
                                    sa.inspect(connection).get_columns("discrepancy")}
        command.upgrade(config, "head")
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    engine.dispose()
