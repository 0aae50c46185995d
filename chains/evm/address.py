"""EVM address validation (web3 / eth-utils do the checksum work)."""

from __future__ import annotations

from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address

from chains.errors import InvalidAddress
from chains.types import Address


def canonical_evm_address(text: str) -> Address:
    """Return the EIP-55 form of `text`.

    All-lowercase (or all-uppercase) hex is accepted as unchecksummed; mixed case
    must carry a valid checksum. Raises InvalidAddress with the reason.
    """
    value = text.strip()
    if not is_hex_address(value):
        raise InvalidAddress(f"not an EVM address: {value!r}")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise InvalidAddress(f"bad EIP-55 checksum: {value}")
    return Address(to_checksum_address(value))
