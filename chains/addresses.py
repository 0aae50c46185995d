"""One entry point for address validation across chain families."""

from __future__ import annotations

from chains.evm.address import canonical_evm_address
from chains.types import Address
from chains.utxo.address import canonical_utxo_address


def canonical_address(family: str, network: str | None, text: str) -> Address:
    """Return the canonical form of `text` on a chain of `family` ("evm" or "utxo").

    `network` names the UTXO network and is ignored for EVM chains. Raises
    InvalidAddress for an address that is malformed, mis-checksummed or of another
    network, and ValueError for an unknown family or a UTXO chain without a network.
    """
    if family == "evm":
        return canonical_evm_address(text)
    if family == "utxo":
        if network is None:
            raise ValueError("a utxo chain needs a network")
        return canonical_utxo_address(text, network)
    raise ValueError(f"unknown chain family {family!r}")
