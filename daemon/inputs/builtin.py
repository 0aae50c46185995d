"""Chains `segwatch check` knows without a configuration file (with `--source`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI's help reads BUILTIN_CHAINS without loading the settings models
    from daemon.inputs.chain_settings import ChainSettings

BUILTIN_CHAINS: dict[str, dict[str, Any]] = {
    "ethereum": {"family": "evm", "chain_id": 1},
    "sepolia": {"family": "evm", "chain_id": 11155111},
    "holesky": {"family": "evm", "chain_id": 17000},
    "polygon": {"family": "evm", "chain_id": 137, "native_symbol": "POL"},
    "arbitrum": {"family": "evm", "chain_id": 42161},
    "optimism": {"family": "evm", "chain_id": 10},
    "base": {"family": "evm", "chain_id": 8453},
    "bsc": {"family": "evm", "chain_id": 56, "native_symbol": "BNB"},
    "anvil": {"family": "evm", "chain_id": 31337, "confirmations": 0},
    "bitcoin": {"family": "utxo", "network": "bitcoin", "confirmations": 3},
    "litecoin": {"family": "utxo", "network": "litecoin", "confirmations": 6},
    "testnet": {"family": "utxo", "network": "testnet", "confirmations": 3},
    "signet": {"family": "utxo", "network": "signet", "confirmations": 3},
    "regtest": {"family": "utxo", "network": "regtest", "confirmations": 0},
    "litecoin-regtest": {"family": "utxo", "network": "litecoin-regtest", "confirmations": 0},
}

UTXO_BUILTINS = ", ".join(name for name, spec in BUILTIN_CHAINS.items()
                          if spec["family"] == "utxo")
"""The built-in UTXO chains, for help texts and messages."""


def builtin_chain(name: str, source_url: str) -> ChainSettings | None:
    """Return the built-in chain `name` read through `source_url`, or None if unknown.

    Raises pydantic's ValidationError for a bad URL (the caller reports it).
    """
    from daemon.inputs.chain_settings import ChainSettings

    spec = BUILTIN_CHAINS.get(name)
    if spec is None:
        return None
    kind = "jsonrpc" if spec["family"] == "evm" else "esplora"
    return ChainSettings(name=name, sources=[{"kind": kind, "url": source_url,
                                              "name": source_name(source_url)}],
                         **spec)


def source_name(url: str) -> str:
    """The name of an ad-hoc `--source URL`: its host, in the characters a source name
    allows (an IPv6 host's ':' become '-'), at most 64 of them."""
    from chains.http import host_name

    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", host_name(url)).lstrip("._-")[:64]
    return name or "source"
