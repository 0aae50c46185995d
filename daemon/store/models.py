"""The tables. Amounts are exact integers (`Amount`), times aware UTC (`UTCDateTime`).

History is kept: allocation snapshots are never overwritten, balance observations
are appended whenever a (wallet, asset) balance changes, and discrepancies are
closed (`self_cleared`, `resolved`, `voided`), never deleted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from daemon.store.types import Amount, JSONText, UTCDateTime

OPEN_STATUSES = ("open", "proposed")


def _amount(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(Amount(), nullable=nullable))


def _time(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class Chain(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    family: str = Field(max_length=8)
    network: str = Field(max_length=32, description="EVM chain id or UTXO network name")
    last_error: str | None = Field(default=None, max_length=500)
    last_error_at: datetime | None = _time(nullable=True)


class Asset(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("chain_id", "symbol"),)
    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    symbol: str = Field(max_length=20)
    contract: str | None = Field(default=None, max_length=64)
    decimals: int


class Wallet(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("chain_id", "address"),)
    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    address: str = Field(max_length=100)
    structure: str = Field(max_length=16)
    label: str | None = Field(default=None, max_length=200)
    mpc_key_id: str | None = Field(default=None, max_length=200)


class AllocationSnapshot(SQLModel, table=True):
    __tablename__ = "allocation_snapshot"
    id: int | None = Field(default=None, primary_key=True)
    imported_at: datetime = _time()
    source_name: str = Field(max_length=500)
    sha256: str = Field(max_length=64)
    rows: int
    as_of: datetime | None = _time(nullable=True)
    """When the books were cut (SPEC §8); None on snapshots from before it was recorded:
    their import time stands for it."""

    @property
    def cut_off(self) -> datetime:
        """The snapshot's cut-off: `as_of`, else its import time."""
        return self.as_of or self.imported_at


class Allocation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: int = Field(foreign_key="allocation_snapshot.id", index=True)
    wallet_id: int = Field(foreign_key="wallet.id", index=True)
    asset_id: int = Field(foreign_key="asset.id")
    owner: str = Field(max_length=200)
    amount: int = _amount()


class BalanceObservation(SQLModel, table=True):
    __tablename__ = "balance_observation"
    __table_args__ = (Index("ix_balance_observation_pair", "wallet_id", "asset_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    wallet_id: int = Field(foreign_key="wallet.id")
    asset_id: int = Field(foreign_key="asset.id")
    amount: int | None = _amount(nullable=True)
    error: str | None = Field(default=None, max_length=500)
    block_height: int
    block_hash: str = Field(max_length=100)
    source: str = Field(max_length=500)
    observed_at: datetime = _time()


class Checkpoint(SQLModel, table=True):
    """One completed reconciliation cycle of a chain (or of one wallet shard of it): every
    watched wallet read at one block."""

    __table_args__ = (Index("ix_checkpoint_chain_shard", "chain_id", "shards", "shard", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    cycle_id: str = Field(max_length=40)
    block_height: int
    block_hash: str = Field(max_length=100)
    block_time: datetime | None = _time(nullable=True)
    source: str = Field(max_length=500)
    wallets: int
    observations: int
    read_errors: int
    findings: int
    finished_at: datetime = _time()
    scanned: bool = Field(default=True, sa_column_kwargs={"server_default": text("true")})
    """False when the transfers up to this checkpoint's block were not scanned (its
    cycle's scan failed, or another shard's scan had not reached the block): balance
    continuity is checked from the last checkpoint whose block was scanned."""
    shard: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    shards: int = Field(default=1, sa_column_kwargs={"server_default": text("1")})
    """Which wallet shard of the chain the cycle read (daemon/rules/shards.py), of how many."""
    swept_at: datetime | None = _time(nullable=True)
    """Where the cycle's rotating re-read stopped (daemon/rules/recheck.py); the next
    incremental cycle re-reads the wallets from there to its own start."""
    wallets_read: int | None = None
    """How many wallets the cycle read; the others were carried (None: before 0016)."""


class Discrepancy(SQLModel, table=True):
    __table_args__ = (
        Index(
            "ux_discrepancy_open_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text("status IN ('open', 'proposed')"),
            postgresql_where=text("status IN ('open', 'proposed')"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=300, index=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    type: str = Field(max_length=40)
    severity: str = Field(max_length=16)
    status: str = Field(max_length=16, index=True)
    address: str | None = Field(default=None, max_length=100)
    asset: str | None = Field(default=None, max_length=64)
    contract: str | None = Field(default=None, max_length=64)
    owners: list[str] = Field(default_factory=list, sa_column=Column(JSONText(), nullable=False))
    onchain: int | None = _amount(nullable=True)
    ledger: int | None = _amount(nullable=True)
    difference: int | None = _amount(nullable=True)
    in_transit: int | None = _amount(nullable=True)
    """Balance findings: the reconciling items' net (expected = ledger + in_transit)."""
    tx_hash: str | None = Field(default=None, max_length=100)
    block_number: int | None = None
    block_hash: str | None = Field(default=None, max_length=100)
    amount: int | None = _amount(nullable=True)
    counterparty: str | None = Field(default=None, max_length=100)
    event: str | None = Field(default=None, max_length=300)
    detected_at: datetime = _time()
    last_seen_at: datetime = _time()
    cure_deadline: datetime = _time()
    closed_at: datetime | None = _time(nullable=True)
    escalated_at: datetime | None = _time(nullable=True)
    proposed_by: str | None = Field(default=None, max_length=200)
    reopens: int | None = Field(default=None, foreign_key="discrepancy.id")
    """The resolved discrepancy this one reopens (its condition persisted); the cure
    deadline is the first detection's."""
    proposed_reason: str | None = Field(default=None, max_length=40)
    proposed_note: str | None = Field(default=None, max_length=2000)
    proposed_at: datetime | None = _time(nullable=True)
    resolved_by: str | None = Field(default=None, max_length=200)


class AuditEntry(SQLModel, table=True):
    """Append-only, hash-chained record of every action and state change."""

    __tablename__ = "audit_entry"
    seq: int | None = Field(default=None, primary_key=True)
    at: datetime = _time()
    actor: str = Field(max_length=200)
    action: str = Field(max_length=60)
    discrepancy_id: int | None = Field(default=None, foreign_key="discrepancy.id", index=True)
    payload: dict[str, Any] = Field(default_factory=dict,
                                    sa_column=Column(JSONText(), nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class ScanCursor(SQLModel, table=True):
    """How far the transfer scanner of a chain has read: every block up to `height`."""

    __tablename__ = "scan_cursor"
    chain_id: int = Field(foreign_key="chain.id", primary_key=True)
    start_height: int
    height: int
    hash: str = Field(max_length=100)
    updated_at: datetime = _time()
    error: str | None = Field(default=None, max_length=500)
    error_at: datetime | None = _time(nullable=True)
    traced_from: int | None = None
    """EVM: every block scanned from this height on had its internal transfers traced
    (None: the newest scanned range was not traced)."""


class ScannedBlock(SQLModel, table=True):
    """Hashes of recently scanned blocks, to find the fork point after a reorg."""

    __tablename__ = "scanned_block"
    chain_id: int = Field(foreign_key="chain.id", primary_key=True)
    height: int = Field(primary_key=True)
    hash: str = Field(max_length=100)
    parent_hash: str = Field(max_length=100)


class Transfer(SQLModel, table=True):
    """A value movement touching a watched wallet. Orphaned by a reorg: kept, flagged."""

    __table_args__ = (UniqueConstraint("chain_id", "key"),
                      Index("ix_transfer_chain_block", "chain_id", "block_number"),
                      Index("ix_transfer_chain_time", "chain_id", "block_time"),
                      Index("ix_transfer_chain_orphaned_at", "chain_id", "orphaned_at"))
    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id")
    key: str = Field(max_length=300)
    kind: str = Field(max_length=16)
    block_number: int
    block_hash: str = Field(max_length=100)
    tx_hash: str | None = Field(default=None, max_length=100)
    log_index: int | None = None
    trace_path: str | None = Field(default=None, max_length=100)
    sender: str | None = Field(default=None, max_length=100)
    recipient: str = Field(max_length=100)
    contract: str | None = Field(default=None, max_length=64)
    asset: str = Field(max_length=64)
    amount: int = _amount()
    orphaned: bool = False
    withdrawal_id: int | None = Field(default=None, foreign_key="approved_withdrawal.id")
    seen_at: datetime = _time()
    block_time: datetime | None = _time(nullable=True)
    """The block's time (None: the source gave none, or scanned before it was kept); the
    earliest, when a reorg moved the transfer to another block."""
    orphaned_at: datetime | None = _time(nullable=True)
    """When a reorg removed it: the time of the first block of the branch that did."""


class FeePaid(SQLModel, table=True):
    """Gas a watched wallet paid for a transaction (also for reverted ones)."""

    __tablename__ = "fee_payment"
    __table_args__ = (UniqueConstraint("chain_id", "tx_hash"),
                      Index("ix_fee_payment_chain_time", "chain_id", "block_time"),
                      Index("ix_fee_payment_chain_orphaned_at", "chain_id", "orphaned_at"),
                      Index("ix_fee_payment_chain_block", "chain_id", "block_number"))
    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    block_number: int
    block_hash: str = Field(max_length=100)
    tx_hash: str = Field(max_length=100)
    payer: str = Field(max_length=100)
    amount: int = _amount()
    success: bool
    orphaned: bool = False
    block_time: datetime | None = _time(nullable=True)
    orphaned_at: datetime | None = _time(nullable=True)


class ApprovedWithdrawal(SQLModel, table=True):
    """An instruction that authorizes one outflow (SPEC §2)."""

    __tablename__ = "approved_withdrawal"
    id: int | None = Field(default=None, primary_key=True)
    ext_id: str = Field(max_length=200, unique=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    from_address: str = Field(max_length=100)
    to_address: str = Field(max_length=100)
    asset: str = Field(max_length=64)
    amount: int = _amount()
    approved_by: str = Field(max_length=200)
    approved_at: datetime = _time()
    tx_hash: str | None = Field(default=None, max_length=100)
    imported_at: datetime = _time()


class TrackedUtxo(SQLModel, table=True):
    """A watched wallet's UTXO output, followed until spent (Core-RPC sources cannot tell
    whose output an input spends; see chains/utxo/core_scan.py)."""

    __tablename__ = "tracked_utxo"
    __table_args__ = (UniqueConstraint("chain_id", "txid", "vout"),
                      Index("ix_tracked_utxo_unspent", "chain_id", "spent_height"))
    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id")
    txid: str = Field(max_length=64)
    vout: int
    address: str = Field(max_length=100)
    amount: int = _amount()
    height: int
    spent_by: str | None = Field(default=None, max_length=64)
    spent_height: int | None = None


class UtxoSeed(SQLModel, table=True):
    """A wallet whose unspent outputs were read (at `height`) to start tracking them."""

    __tablename__ = "utxo_seed"
    chain_id: int = Field(foreign_key="chain.id", primary_key=True)
    address: str = Field(max_length=100, primary_key=True)
    height: int


class AlertCursor(SQLModel, table=True):
    """How far one alert sink has been served (daemon/runtime/alerts.py): every alert-worthy audit
    entry up to `last_seq` was delivered. `sink` is the sink's kind and a hash of its URL,
    never the URL."""

    __tablename__ = "alert_cursor"
    sink: str = Field(primary_key=True, max_length=64)
    last_seq: int = 0
    delivered: int = 0
    failures: int = 0  # consecutive failed runs on the entry after `last_seq`
    next_attempt_at: datetime | None = _time(nullable=True)
    last_error: str | None = Field(default=None, max_length=500)
    last_error_at: datetime | None = _time(nullable=True)
    updated_at: datetime = _time()


class Lease(SQLModel, table=True):
    """Work one replica holds until `expires_at` (PostgreSQL scale-out, daemon/runtime/leases.py):
    `chain:<name>` for a chain's cycles."""

    __tablename__ = "lease"
    name: str = Field(primary_key=True, max_length=120)
    holder: str = Field(max_length=120)
    expires_at: datetime = _time()


class Heartbeat(SQLModel, table=True):
    """A running daemon (`segwatch run`, any store) and when it last said it was alive:
    what `status` and /healthz show as the daemon's version, start and last heartbeat."""

    __tablename__ = "heartbeat"
    id: str = Field(primary_key=True, max_length=120)
    version: str = Field(max_length=40)
    started_at: datetime = _time()
    beat_at: datetime = _time()


class Replica(SQLModel, table=True):
    """A running daemon replica and when it last said so (to share work fairly)."""

    __tablename__ = "replica"
    id: str = Field(primary_key=True, max_length=120)
    seen_at: datetime = _time()


class AppUser(SQLModel, table=True):
    """A person or machine that acts: roles, and for a local account its argon2id hash."""

    __tablename__ = "app_user"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    roles: str = Field(default="", max_length=200)
    """Comma-separated role names (daemon/auth/policy.py)."""
    origin: str = Field(default="local", max_length=16)
    """local (CLI or API), config ([[users]]) or oidc (created at first sign-in)."""
    password_hash: str | None = Field(default=None, max_length=200)
    failed_logins: int = 0
    locked_until: datetime | None = _time(nullable=True)
    disabled: bool = False
    created_at: datetime = _time()


class ApiToken(SQLModel, table=True):
    """An API token: only the SHA-256 of its 256-bit secret is kept."""

    __tablename__ = "api_token"
    id: str = Field(primary_key=True, max_length=24)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    digest: str = Field(max_length=64)
    roles: str = Field(default="", max_length=200)
    """The roles the token may use (each must still be the user's when it is used)."""
    created_at: datetime = _time()
    created_by: str = Field(max_length=128)
    expires_at: datetime | None = _time(nullable=True)
    revoked_at: datetime | None = _time(nullable=True)
    revoked_by: str | None = Field(default=None, max_length=128)
    last_used_at: datetime | None = _time(nullable=True)
    last_client: str | None = Field(default=None, max_length=200)


class WebSession(SQLModel, table=True):
    """A signed-in browser: the SHA-256 of the session cookie's secret, its CSRF token."""

    __tablename__ = "web_session"
    id: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    roles: str = Field(default="", max_length=200)
    via: str = Field(max_length=16)
    csrf: str = Field(max_length=64)
    created_at: datetime = _time()
    expires_at: datetime = _time()
    revoked_at: datetime | None = _time(nullable=True)


class OidcLogin(SQLModel, table=True):
    """A sign-in under way at the identity provider: state, PKCE verifier, nonce."""

    __tablename__ = "oidc_login"
    state: str = Field(primary_key=True, max_length=64)
    verifier: str = Field(max_length=128)
    nonce: str = Field(max_length=64)
    created_at: datetime = _time()


class AuditHead(SQLModel, table=True):
    """A signed statement of the audit log's head: (seq, hash, at) under an Ed25519 key
    kept outside the database."""

    __tablename__ = "audit_head"
    seq: int = Field(primary_key=True)
    hash: str = Field(max_length=64)
    at: datetime = _time()
    key: str = Field(max_length=64)
    """The signing key's fingerprint (SHA-256 of the raw public key, hex)."""
    signature: str = Field(max_length=128)
