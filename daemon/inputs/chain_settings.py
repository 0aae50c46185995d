"""A chain in the settings: its family, network, assets, sources, confirmations,
fee model, shards and re-read period, checked as a whole (an EVM chain's id and tokens,
a UTXO chain's network)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chains.errors import InvalidAddress
from chains.evm.address import canonical_evm_address
from chains.types import Address, AssetRef, FeeModel
from daemon.inputs.source_settings import SourceSettings

CANONICAL_MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
UTXO_NETWORKS = ("bitcoin", "testnet", "signet", "regtest", "litecoin", "litecoin-regtest")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenSettings(_Frozen):
    symbol: str = Field(min_length=1, max_length=20)
    contract: str
    decimals: int = Field(ge=0, le=77)

    @field_validator("contract")
    @classmethod
    def _checksum(cls, value: str) -> str:
        try:
            return canonical_evm_address(value)
        except InvalidAddress as exc:
            raise ValueError(exc.user_message) from None


class ChainSettings(_Frozen):
    name: str
    family: Literal["evm", "utxo"]
    chain_id: int | None = Field(default=None, ge=1)
    network: str | None = None
    native_symbol: str | None = None
    native_decimals: int | None = Field(default=None, ge=0, le=77)
    confirmations: int = Field(default=12, ge=0)
    poll_seconds: float = Field(default=30.0, gt=0)
    freshness_seconds: float | None = Field(default=None, gt=0)
    max_lag_blocks: int = Field(default=3, ge=0)
    max_head_age_seconds: float | None = Field(default=None, gt=0)
    verify: int = Field(default=1, ge=1, le=2)
    max_future_seconds: float | None = Field(default=None, gt=0)
    """A block stamped further than this in the future is refused (default 300 s for
    evm chains; 7,200 s for utxo chains, whose consensus allows two hours)."""
    shards: int = Field(default=1, ge=1, le=64)
    """Wallet shards of this chain: on PostgreSQL, replicas lease them one by one
    (daemon/rules/shards.py)."""
    withdrawal_window_seconds: float = Field(default=86_400.0, gt=0)
    full_recheck_seconds: float = Field(default=3_600.0, ge=0)
    """Every wallet is re-read at least this often; between, a cycle reads only the
    wallets its scan saw touched, those with open findings and a rotating slice of the
    rest (daemon/rules/recheck.py). 0: every cycle reads every wallet."""
    ledger_max_age_seconds: float = Field(default=86_400.0, gt=0)
    """A ledger snapshot cut longer ago than this raises `ledger_stale` (SPEC §8)."""
    multicall: str | None = CANONICAL_MULTICALL3
    fee_model: FeeModel | None = None
    """How the chain charges a transaction's sender (evm): `ethereum`, `op-stack` or
    `arbitrum`; default by chain id (`fees`)."""
    jovian_time: int | None = Field(default=None, ge=0)
    """OP-stack: when the Jovian upgrade activated (unix seconds): the operator fee's
    formula changed then. Unset: a fee that differs between the formulas is refused."""
    sources: list[SourceSettings] = Field(min_length=1)
    tokens: list[TokenSettings] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("chain name must be lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("multicall")
    @classmethod
    def _multicall(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            return canonical_evm_address(value)
        except InvalidAddress as exc:
            raise ValueError(exc.user_message) from None

    @model_validator(mode="after")
    def _family_rules(self) -> ChainSettings:
        if self.family == "evm":
            _check_evm_chain(self)
        else:
            _check_utxo_chain(self)
        symbols = [t.symbol for t in self.tokens] + [self.native_asset.symbol]
        dupes = sorted({s for s in symbols if symbols.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate asset symbol {dupes[0]!r}")
        if self.verify > len(self.sources):
            raise ValueError(f"verify = {self.verify} needs at least that many sources")
        _name_sources(self.sources)
        return self

    @property
    def native_asset(self) -> AssetRef:
        """The chain's native coin as an asset."""
        if self.family == "evm":
            return AssetRef(self.native_symbol or "ETH", self.native_decimals or 18)
        default = "LTC" if (self.network or "").startswith("litecoin") else "BTC"
        return AssetRef(self.native_symbol or default, 8 if self.native_decimals is None
                        else self.native_decimals)

    @property
    def assets(self) -> tuple[AssetRef, ...]:
        """The native coin first, then the configured tokens."""
        tokens = (AssetRef(t.symbol, t.decimals, Address(t.contract)) for t in self.tokens)
        return (self.native_asset, *tokens)

    @property
    def fees(self) -> FeeModel:
        """The fee model: the configured one, else `op-stack` for OP Mainnet, Base and
        their Sepolia testnets, `arbitrum` for Arbitrum One, Nova and Sepolia, else
        `ethereum`."""
        return self.fee_model or DEFAULT_FEE_MODELS.get(self.chain_id or 0, "ethereum")

    @property
    def jovian(self) -> int | None:
        """When Jovian activated (OP-stack): the configured time, else the known one of OP
        Mainnet and Base (DEFAULT_JOVIAN_TIMES), else None (unknown)."""
        if self.jovian_time is not None:
            return self.jovian_time
        return DEFAULT_JOVIAN_TIMES.get(self.chain_id or 0) if self.fees == "op-stack" else None

    @property
    def freshness(self) -> float:
        """Seconds after which a chain with no successful cycle counts as stale."""
        return self.freshness_seconds or max(3 * self.poll_seconds, 60.0)

    @property
    def head_age_limit(self) -> float:
        """Seconds after which a source's newest block is too old to use: the configured
        value, else 10 minutes for EVM chains and 3 hours for UTXO chains (Bitcoin
        blocks are sometimes an hour or more apart)."""
        return self.max_head_age_seconds or (600.0 if self.family == "evm" else 10_800.0)

    @property
    def future_limit(self) -> float:
        """Seconds a block's timestamp may be ahead of this machine's clock."""
        return self.max_future_seconds or (300.0 if self.family == "evm" else 7_200.0)


DEFAULT_FEE_MODELS: dict[int, FeeModel] = {
    10: "op-stack", 8453: "op-stack", 11155420: "op-stack", 84532: "op-stack",
    42161: "arbitrum", 42170: "arbitrum", 421614: "arbitrum",
}
"""Chain id → fee model, for chains configured without `fee_model`."""

DEFAULT_JOVIAN_TIMES: dict[int, int] = {10: 1_764_691_201, 8453: 1_764_691_201}
"""Jovian's activation on OP Mainnet and Base (2025-12-02 16:00:01 UTC; from Base's
BASE_MAINNET_JOVIAN_TIMESTAMP and op-reth's OP Mainnet fork list). Where the formulas
differ, a wrong time gives a wrong fee for blocks between the two times only, which
continuity then reports (never a silent pass); `jovian_time` overrides it."""


def _name_sources(sources: list[SourceSettings]) -> None:
    """Give each unnamed source its default name `KIND-N`; refuse duplicate names."""
    for index, source in enumerate(sources, start=1):
        if "name" not in source.model_fields_set:
            object.__setattr__(source, "name", f"{source.kind}-{index}")
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate source name {dupes[0]!r}")


def _check_evm_chain(chain: ChainSettings) -> None:
    if chain.chain_id is None:
        raise ValueError("an evm chain needs chain_id")
    if chain.network is not None:
        raise ValueError("network is for utxo chains; evm chains use chain_id")
    bad = [s.kind for s in chain.sources if s.kind != "jsonrpc"]
    if bad:
        raise ValueError(f"source kind {bad[0]!r} does not serve an evm chain (use jsonrpc)")


def _check_utxo_chain(chain: ChainSettings) -> None:
    if chain.network not in UTXO_NETWORKS:
        raise ValueError(f"unknown network {chain.network!r} (expected one of "
                         f"{', '.join(UTXO_NETWORKS)})")
    if chain.chain_id is not None:
        raise ValueError("chain_id is for evm chains; utxo chains use network")
    if chain.tokens:
        raise ValueError("utxo chains have no tokens")
    if chain.fee_model is not None or chain.jovian_time is not None:
        raise ValueError("fee_model and jovian_time are for evm chains")
    bad = [s.kind for s in chain.sources if s.kind == "jsonrpc"]
    if bad:
        raise ValueError("source kind 'jsonrpc' does not serve a utxo chain "
                         "(use esplora or core-rpc)")
