"""EIP-55 handling agrees with eth_utils and rejects what it must."""

from __future__ import annotations

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from chains.errors import InvalidAddress
from chains.evm.address import canonical_evm_address


@given(st.binary(min_size=20, max_size=20))
def test_checksum_matches_eth_utils(raw: bytes) -> None:
    """Every lowercase address canonicalizes to exactly eth_utils' EIP-55 form."""
    lower = "0x" + raw.hex()
    expected = to_checksum_address(lower)
    assert canonical_evm_address(lower) == expected
    assert canonical_evm_address(expected) == expected
    assert canonical_evm_address("0x" + raw.hex().upper()) == expected


def test_wrong_mixed_case_is_rejected() -> None:
    """A mixed-case address whose checksum is wrong is refused, naming the problem."""
    good = "0x52908400098527886E0F7030069857D2E4169EE7"
    with pytest.raises(InvalidAddress, match="checksum"):
        canonical_evm_address(good[:-1] + "e")


@pytest.mark.parametrize("text", ["", "0x", "0x123", "52908400098527886E0F7030069857D2E4169EE7",
                                  "0xZZ908400098527886E0F7030069857D2E4169EE7",
                                  "0x52908400098527886E0F7030069857D2E4169EE700"])
def test_malformed_addresses_are_rejected(text: str) -> None:
    """Anything that is not 0x plus 40 hex digits is not an EVM address."""
    with pytest.raises(InvalidAddress, match="not an EVM address"):
        canonical_evm_address(text)
