"""UTXO and cross-family address validation (chains.utxo.address, chains.addresses).

Valid addresses are generated here from keys with bitcoinlib rather than typed in;
bitcoinlib lacks Litecoin regtest and gives Bitcoin regtest mainnet base58 prefixes,
so those are encoded from the same key hash with the network's version bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.addresses import canonical_address
from chains.errors import InvalidAddress
from chains.utxo.address import NETWORKS, canonical_utxo_address

SECRET = "0c28fca386c7a227600b2fe50b7cae11ec86d3bf1fbe471be89827e19d72aa1d"
SCRIPT_HASH = hashlib.sha256(b"segwatch test witness script").digest()


def _encoding() -> Any:
    """bitcoinlib's encoding module, imported after chains.utxo isolated its data dir."""
    import bitcoinlib.encoding

    return bitcoinlib.encoding


def _key(network: str) -> Any:
    from bitcoinlib.keys import Key

    return Key(SECRET, network=network)


def _library_addresses(bcl_network: str) -> dict[str, str]:
    """P2PKH, P2SH-P2WPKH, P2WPKH and P2TR addresses of one key, made by bitcoinlib."""
    key = _key(bcl_network)
    return {kind: key.address(script_type=kind, encoding=enc) for kind, enc in (
        ("p2pkh", "base58"), ("p2sh_p2wpkh", "base58"), ("p2wpkh", "bech32"),
        ("p2tr", "bech32"))}


def _encoded_addresses(network: str) -> dict[str, str]:
    """The same key's addresses encoded with segwatch's table for `network`."""
    enc, net, key = _encoding(), NETWORKS[network], _key("bitcoin")
    hash160 = key.hash160
    return {
        "p2pkh": enc.pubkeyhash_to_addr_base58(hash160, prefix=bytes([min(net.p2pkh)])),
        "p2sh": enc.pubkeyhash_to_addr_base58(hash160, prefix=bytes([min(net.p2sh)])),
        "p2wpkh": enc.pubkeyhash_to_addr_bech32(hash160, prefix=net.hrp, witver=0),
        "p2wsh": enc.pubkeyhash_to_addr_bech32(SCRIPT_HASH, prefix=net.hrp, witver=0),
        "p2tr": enc.pubkeyhash_to_addr_bech32(SCRIPT_HASH, prefix=net.hrp, witver=1),
    }


LIBRARY_CASES = [(ours, bcl, kind) for ours, bcl in (
    ("bitcoin", "bitcoin"), ("testnet", "testnet"), ("signet", "testnet"),
    ("litecoin", "litecoin")) for kind in ("p2pkh", "p2sh_p2wpkh", "p2wpkh", "p2tr")]
ENCODED_CASES = [(network, kind) for network in NETWORKS
                 for kind in ("p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr")]


@pytest.mark.parametrize(("network", "bcl_network", "kind"), LIBRARY_CASES)
def test_accepts_bitcoinlib_generated_addresses(network: str, bcl_network: str,
                                                kind: str) -> None:
    """Every address type bitcoinlib makes for a network is valid there and kept as is."""
    address = _library_addresses(bcl_network)[kind]
    assert canonical_utxo_address(address, network) == address


@pytest.mark.parametrize(("network", "kind"), ENCODED_CASES)
def test_accepts_every_address_type_on_every_network(network: str, kind: str) -> None:
    """P2PKH, P2SH, P2WPKH, P2WSH and P2TR encoded for a network validate on it."""
    address = _encoded_addresses(network)[kind]
    assert canonical_utxo_address(f"  {address} ", network) == address


def test_litecoin_accepts_legacy_p2sh_version() -> None:
    """Litecoin still accepts its legacy P2SH version byte (addresses starting with 3)."""
    address = _library_addresses("bitcoin")["p2sh_p2wpkh"]
    assert address.startswith("3")
    assert canonical_utxo_address(address, "litecoin") == address


def test_uppercase_bech32_is_lowercased() -> None:
    """An all-uppercase bech32 address (QR style) is stored lowercased."""
    address = _library_addresses("bitcoin")["p2wpkh"]
    assert canonical_utxo_address(address.upper(), "bitcoin") == address


@pytest.mark.parametrize("kind", ["p2pkh", "p2wpkh", "p2tr"])
def test_testnet_address_on_bitcoin_chain_is_rejected(kind: str) -> None:
    """A testnet address on a bitcoin chain is refused with the network named."""
    with pytest.raises(InvalidAddress, match="testnet address on a bitcoin chain"):
        canonical_utxo_address(_library_addresses("testnet")[kind], "bitcoin")


@pytest.mark.parametrize(("address_network", "chain_network", "named"), [
    ("bitcoin", "testnet", "bitcoin"), ("litecoin", "bitcoin", "litecoin"),
    ("regtest", "bitcoin", "regtest"), ("bitcoin", "litecoin-regtest", "bitcoin"),
])
def test_address_of_another_network_is_rejected(address_network: str, chain_network: str,
                                                named: str) -> None:
    """A bech32 address of another network is refused naming that network."""
    address = _encoded_addresses(address_network)["p2wpkh"]
    with pytest.raises(InvalidAddress, match=f"{named} address on a {chain_network} chain"):
        canonical_utxo_address(address, chain_network)


@pytest.mark.parametrize("kind", ["p2pkh", "p2sh", "p2wpkh", "p2tr"])
def test_bad_checksum_is_rejected(kind: str) -> None:
    """Changing one character of an address breaks its checksum and it is refused."""
    address = _encoded_addresses("bitcoin")[kind]
    swapped = "q" if address[-2] != "q" else "p"
    with pytest.raises(InvalidAddress, match="bad checksum"):
        canonical_utxo_address(address[:-2] + swapped + address[-1], "bitcoin")


def test_bech32_checksum_on_taproot_is_rejected() -> None:
    """A witness v1 program with a bech32 (not bech32m) checksum is refused (BIP-350)."""
    enc = _encoding()
    data = [1, *enc.convertbits(SCRIPT_HASH, 8, 5)]
    hrp = [ord(c) >> 5 for c in "bc"] + [0] + [ord(c) & 31 for c in "bc"]
    polymod = enc._bech32_polymod(hrp + data + [0] * 6) ^ 1  # bech32's constant, not bech32m's
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    address = "bc1" + enc._array_to_codestring(data + checksum, "bech32")
    with pytest.raises(InvalidAddress, match="bad checksum"):
        canonical_utxo_address(address, "bitcoin")


def test_unsupported_witness_version_is_rejected() -> None:
    """Witness versions beyond taproot are refused: no custodian key can spend them."""
    address = _encoding().pubkeyhash_to_addr_bech32(SCRIPT_HASH, prefix="bc", witver=2)
    with pytest.raises(InvalidAddress, match="version 2"):
        canonical_utxo_address(address, "bitcoin")


@pytest.mark.parametrize("text", [
    "", "   ", "not an address", "0x0000000000000000000000000000000000000000",
    "1" * 40, "bc1", "bc1qqqqqqq",
])
def test_garbage_is_rejected(text: str) -> None:
    """Empty, malformed and foreign-family strings are refused as invalid addresses."""
    with pytest.raises(InvalidAddress):
        canonical_utxo_address(text, "bitcoin")


def test_mixed_case_bech32_is_rejected() -> None:
    """A bech32 address mixing upper and lower case is refused (BIP-173)."""
    address = _library_addresses("bitcoin")["p2wpkh"]
    with pytest.raises(InvalidAddress):
        canonical_utxo_address(address[:6].upper() + address[6:], "bitcoin")


def test_unknown_network_is_a_programming_error() -> None:
    """An unknown network name raises ValueError, not InvalidAddress."""
    with pytest.raises(ValueError, match="unknown utxo network"):
        canonical_utxo_address("1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "dogecoin")


@given(st.binary(min_size=20, max_size=20), st.sampled_from(sorted(NETWORKS)))
def test_any_key_hash_round_trips_as_p2wpkh(key_hash: bytes, network: str) -> None:
    """Any 20-byte key hash encoded as P2WPKH for a network validates unchanged there."""
    address = _encoding().pubkeyhash_to_addr_bech32(key_hash, prefix=NETWORKS[network].hrp)
    assert canonical_utxo_address(address, network) == address


def test_dispatch_checksums_lowercase_evm_addresses() -> None:
    """canonical_address returns the EIP-55 form of a lowercase EVM address."""
    usdc = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
    assert canonical_address("evm", None, usdc.lower()) == usdc


def test_dispatch_rejects_bad_evm_checksum() -> None:
    """canonical_address refuses a mixed-case EVM address with a wrong checksum."""
    with pytest.raises(InvalidAddress, match="checksum"):
        canonical_address("evm", None, "0xa0B86991c6218b36c1d19D4a2e9Eb0cE3606eB48")


def test_dispatch_validates_utxo_by_network() -> None:
    """canonical_address validates a UTXO address against the given network."""
    address = _library_addresses("testnet")["p2wpkh"]
    assert canonical_address("utxo", "testnet", address) == address
    with pytest.raises(InvalidAddress):
        canonical_address("utxo", "bitcoin", address)


@pytest.mark.parametrize(("family", "network"), [("utxo", None), ("solana", None)])
def test_dispatch_rejects_unknown_family_or_missing_network(family: str,
                                                            network: str | None) -> None:
    """A UTXO family without a network, or an unknown family, raises ValueError."""
    with pytest.raises(ValueError):
        canonical_address(family, network, "1BoatSLRHtKNngkdXEeobR76b53LETtpyT")


def test_bitcoinlib_data_dir_is_kept_out_of_home() -> None:
    """Importing chains.utxo points bitcoinlib's data directory away from ~/.bitcoinlib."""
    data_dir = os.environ.get("BCL_DATA_DIR")
    assert data_dir
    assert Path(data_dir).expanduser() != Path.home() / ".bitcoinlib"
