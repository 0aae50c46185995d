"""UTXO address validation for Bitcoin and Litecoin networks.

bitcoinlib decodes (base58 and bech32/bech32m checksums, BIP-173/350 rules); the
network table is segwatch's own, because bitcoinlib's lacks Litecoin regtest and
gives Bitcoin regtest mainnet version bytes, while bitcoind uses testnet's.
Canonical form: bech32 lowercased, base58 exactly as given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bitcoinlib.encoding import EncodingError, addr_bech32_to_pubkeyhash, change_base

from chains.errors import InvalidAddress
from chains.types import Address


@dataclass(frozen=True, slots=True)
class UtxoNetwork:
    """What a network's addresses look like."""

    name: str
    hrp: str
    p2pkh: frozenset[int]
    p2sh: frozenset[int]

    @property
    def versions(self) -> frozenset[int]:
        """Every base58 version byte the network accepts."""
        return self.p2pkh | self.p2sh


def _net(name: str, hrp: str, p2pkh: set[int], p2sh: set[int]) -> UtxoNetwork:
    return UtxoNetwork(name, hrp, frozenset(p2pkh), frozenset(p2sh))


NETWORKS: dict[str, UtxoNetwork] = {
    "bitcoin": _net("bitcoin", "bc", {0x00}, {0x05}),
    "testnet": _net("testnet", "tb", {0x6F}, {0xC4}),
    "signet": _net("signet", "tb", {0x6F}, {0xC4}),
    "regtest": _net("regtest", "bcrt", {0x6F}, {0xC4}),
    "litecoin": _net("litecoin", "ltc", {0x30}, {0x32, 0x05}),
    "litecoin-regtest": _net("litecoin-regtest", "rltc", {0x6F}, {0x3A, 0xC4}),
}
"""Supported networks; Litecoin also accepts its legacy P2SH version (3…, 2…)."""

_FOREIGN = (
    _net("testnet", "tb", {0x6F}, {0xC4}),
    _net("regtest", "bcrt", {0x6F}, {0xC4}),
    _net("bitcoin", "bc", {0x00}, {0x05}),
    _net("litecoin", "ltc", {0x30}, {0x32}),
    _net("litecoin testnet", "tltc", {0x6F}, {0x3A}),
    _net("litecoin-regtest", "rltc", {0x6F}, {0x3A}),
)
"""Used only to name the network a wrongly placed address belongs to."""

_BASE58_LENGTH = 25
_SEGWIT_V0_LENGTHS = (20, 32)
_TAPROOT_LENGTH = 32


def canonical_utxo_address(text: str, network: str) -> Address:
    """Return the canonical form of `text` as an address of `network`.

    Accepts base58 P2PKH/P2SH, bech32 segwit v0 (P2WPKH, P2WSH) and bech32m
    taproot (P2TR). Raises InvalidAddress naming the reason (bad checksum, an
    address of another network, an unsupported witness version), and ValueError
    for an unknown `network`.
    """
    net = NETWORKS.get(network)
    if net is None:
        raise ValueError(f"unknown utxo network {network!r}")
    value = text.strip()
    if not value:
        raise InvalidAddress("empty address")
    hrp, sep, _ = value.lower().rpartition("1")
    if sep and hrp and _is_known_hrp(hrp):
        return _bech32(value, net)
    return _base58(value, net)


def _is_known_hrp(hrp: str) -> bool:
    return any(hrp == other.hrp for other in (*NETWORKS.values(), *_FOREIGN))


def _bech32(value: str, net: UtxoNetwork) -> Address:
    """Validate a segwit address; return it lowercased."""
    lowered = value.lower()
    hrp = lowered.rpartition("1")[0]
    if hrp != net.hrp:
        raise InvalidAddress(f"{_owner_of_hrp(hrp)} address on a {net.name} chain: {value}")
    try:
        program = addr_bech32_to_pubkeyhash(value, prefix=hrp, include_witver=True)
    except (EncodingError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InvalidAddress(_bech32_reason(value, exc)) from None
    version = program[0] - 0x50 if program[0] else 0
    _check_witness(value, version, len(program) - 2)
    return Address(lowered)


def _check_witness(value: str, version: int, length: int) -> None:
    """Accept segwit v0 (20 or 32 bytes) and taproot (v1, 32 bytes) only."""
    if version == 0 and length in _SEGWIT_V0_LENGTHS:
        return
    if version == 1 and length == _TAPROOT_LENGTH:
        return
    raise InvalidAddress(
        f"unsupported witness program in {value}: version {version}, {length} bytes"
    )


def _base58(value: str, net: UtxoNetwork) -> Address:
    """Validate a base58check P2PKH/P2SH address; return it unchanged."""
    try:
        raw = bytes(change_base(value, 58, 256, _BASE58_LENGTH))
    except (EncodingError, ValueError, KeyError, TypeError) as exc:
        raise InvalidAddress(f"not a valid {net.name} address {value!r}: {_reason(exc)}") from None
    if len(raw) != _BASE58_LENGTH:
        raise InvalidAddress(f"not a valid {net.name} address {value!r}: wrong length")
    payload, checksum = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        raise InvalidAddress(f"bad checksum: {value}")
    if payload[0] not in net.versions:
        raise InvalidAddress(
            f"{_owner_of_version(payload[0])} address on a {net.name} chain: {value}"
        )
    return Address(value)


def _owner_of_hrp(hrp: str) -> str:
    return next((n.name for n in _FOREIGN if n.hrp == hrp), f"{hrp!r}")


def _owner_of_version(version: int) -> str:
    names = [n.name for n in _FOREIGN if version in n.versions]
    return names[0] if names else f"unknown (version byte 0x{version:02x})"


def _bech32_reason(value: str, exc: Exception) -> str:
    """A readable reason for bitcoinlib's bech32 decoding error."""
    message = str(exc)
    if "polymod" in message:
        return f"bad checksum: {value}"
    if "instead of" in message:
        return f"bad checksum (wrong bech32 variant for the witness version): {value}"
    return f"bad bech32 address {value}: {_reason(exc)}"


def _reason(exc: Exception) -> str:
    """bitcoinlib's message, shortened to its reason."""
    message = str(exc) or type(exc).__name__
    return message.rpartition(": ")[2] if ": " in message else message
