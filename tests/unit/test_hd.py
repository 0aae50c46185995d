"""HD expansion: extended public keys and descriptors → watched addresses (chains/utxo/hd.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.errors import InvalidAddress
from chains.types import Address
from chains.utxo.address import canonical_utxo_address
from chains.utxo.hd import (
    DiscoveryLimitReached,
    InvalidWatchKey,
    WatchKey,
    derive,
    descriptor_checksum,
    discover,
    parse_watch_key,
)

# BIP-32 test vector 1: the master key m, and the public keys m/0H, m/0H/1, m/0H/1/2H,
# m/0H/1/2H/2 and m/0H/1/2H/2/1000000000.
BIP32_M = ("xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8Y"
           "tGqsefD265TMg7usUDFdp6W1EGMcet8")
BIP32_0H = ("xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCd"
            "rfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw")
BIP32_0H_1 = ("xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7"
              "SyYq527Hqck2AxYysAA7xmALppuCkwQ")
BIP32_0H_1_2H = ("xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5"
                 "uJh7n7epu4trkrX7x7DogT5Uv6fcLW5")
BIP32_0H_1_2H_2 = ("xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZAC"
                   "Tj37sR62cfN7fe5JnJ7dh8zL4fiyLHV")
BIP32_0H_1_2H_2_1E9 = ("xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro"
                       "49S8yGasTvXEYBVPamhGW6cFJodrTHy")
BIP32_XPRV = ("xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF"
              "5kejMRNNU3TGtRBeJgk33yuGBxrMPHi")
# BIP-84 and BIP-49 account keys of the "abandon … about" mnemonic.
ZPUB = ("zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUU"
        "kgDKf31mGDtKsAYz2oz2AGutZYs")
YPUB = ("ypub6Ww3ibxVfGzLrAH1PNcjyAWenMTbbAosGNB6VvmSEgytSER9azLDWCxoJwW7Ke7icmizBMXrzBx9979F"
        "faHxHcrArf3zbeJJJUZPf663zsP")
# Descriptors as Bitcoin Core printed them (published in other projects' docs and tests).
CORE_DESCRIPTORS = [
    ("wpkh([6f2fa1b2/84'/0'/0']tpubDDDDGYiFda8HfJRc2AHFJDxVzzEtBPrKsbh35EaW2UGd5qfzrF2G87ewAgee"
     "RyHEz4iB3kvhAYW1sH6dpLepTkFUzAktumBN8AXeXWE9nd1/0/*)#l6n08zmr", "regtest"),
    ("wpkh([6f2fa1b2/84'/0'/0']tpubDDDDGYiFda8HfJRc2AHFJDxVzzEtBPrKsbh35EaW2UGd5qfzrF2G87ewAgee"
     "RyHEz4iB3kvhAYW1sH6dpLepTkFUzAktumBN8AXeXWE9nd1/1/*)#wwkw6htm", "regtest"),
    ("wpkh([7c6cf2c1/84h/1h/0h]tpubDDV8TbjuWeytsM7mAwTTkwVqWvmZ6TpMj1qQ8xNmNe6fZcZPwf1nDocKoYSF4"
     "vjM1XAoVdie8avWzE8hTpt8pgsCosTdAjnweSy7bR1kAwc/0/*)#8phlkw5l", "testnet"),
    ("wpkh([2cbe2a6d/44'/0'/0']tpubDCvNhURocXGZsLNqWcqD3syHTqPXrMSTwi8feKVwAcpi29oYKsDD3Vex7x2TD"
     "neKMVN23RbLprfxB69v94iYqdaYHsVz3kPR37NQXeqouVz/0/*)#nhdxg96s", "signet"),
    ("pkh([ab88de89/48'/0'/0'/1']xpub6EPJuK8Ejz82itf1fRUaHE3VXoPfVCJbW6MndSdcAzcxTMnixnWHJeMAVLw7"
     "iEMSJd1GmHUinhDEHoNKXAWwdhmTvgQiDTkHprTvmnE4AcB/0/*)#w4yvp7z8", "bitcoin"),
    ("pkh([ab88de89/48'/0'/0'/1']xpub6EPJuK8Ejz82itf1fRUaHE3VXoPfVCJbW6MndSdcAzcxTMnixnWHJeMAVLw7"
     "iEMSJd1GmHUinhDEHoNKXAWwdhmTvgQiDTkHprTvmnE4AcB/1/*)#lppdutjl", "bitcoin"),
]
TPUB = CORE_DESCRIPTORS[0][0].split("]")[1].split("/")[0]


def bitcoinlib_key(xpub: str | None, network: str, witness_type: str, **fields: Any) -> Any:
    """bitcoinlib's own view of a key (its parser, its network table, its addresses)."""
    from bitcoinlib.keys import HDKey  # after chains.utxo's import (its data directory)

    return HDKey(xpub, network=network, witness_type=witness_type, **fields)


# --- known vectors ----------------------------------------------------------------------
def test_bip84_zpub_receive_addresses() -> None:
    """A bare zpub is P2WPKH on the receive chain: BIP-84's m/84'/0'/0'/0/0 and /0/1."""
    key = parse_watch_key(ZPUB, "bitcoin")
    assert key.script == "wpkh" and key.path == (0,)
    assert derive(key, 0, 2) == ["bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu",
                                 "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"]


def test_bip49_ypub_receive_address() -> None:
    """A bare ypub is P2SH-P2WPKH: BIP-49's m/49'/0'/0'/0/0."""
    key = parse_watch_key(YPUB, "bitcoin")
    assert key.script == "sh-wpkh"
    assert derive(key, 0, 1) == ["37VucYSaXLCAsxYyAPfbSi9eh4iEcbShgf"]


def test_bip32_vector1_xpub_matches_bitcoinlibs_own_derivation() -> None:
    """A bare xpub is P2PKH on 0/*; addresses agree with bitcoinlib's HDKey and encoder."""
    key = parse_watch_key(BIP32_M, "bitcoin")
    assert key.script == "pkh"
    reference = bitcoinlib_key(BIP32_M, "bitcoin", "legacy").child_public(0)
    expected = [reference.child_public(i).address() for i in range(5)]
    assert derive(key, 0, 5) == expected


@pytest.mark.parametrize(("parent", "index", "child"), [
    (BIP32_0H, 1, BIP32_0H_1),
    (BIP32_0H_1_2H, 2, BIP32_0H_1_2H_2),
    (BIP32_0H_1_2H_2, 1_000_000_000, BIP32_0H_1_2H_2_1E9),
])
def test_public_derivation_follows_bip32_vector1(parent: str, index: int, child: str) -> None:
    """`parent/index/*` derives from the same key as the BIP's child xpub derives `*`."""
    from_parent = parse_watch_key(f"pkh({parent}/{index}/*)", "bitcoin")
    from_child = parse_watch_key(f"pkh({child}/*)", "bitcoin")
    assert derive(from_parent, 0, 3) == derive(from_child, 0, 3)


@pytest.mark.parametrize(("network", "witness_type"), [
    ("testnet", "legacy"), ("testnet", "p2sh-segwit"), ("testnet", "segwit"),
    ("litecoin", "legacy"), ("litecoin", "p2sh-segwit"), ("litecoin", "segwit"),
])
def test_other_networks_match_bitcoinlib(network: str, witness_type: str) -> None:
    """Testnet and Litecoin addresses of every script agree with bitcoinlib's encoding."""
    script = {"legacy": "pkh", "p2sh-segwit": "sh(wpkh", "segwit": "wpkh"}[witness_type]
    xpub = TPUB if network == "testnet" else BIP32_M
    closing = "))" if script.startswith("sh") else ")"
    key = parse_watch_key(f"{script}({xpub}/0/*{closing}", network)
    branch = bitcoinlib_key(None, network, witness_type, key=key.public_key,
                            chain=key.chain_code, is_private=False).child_public(0)
    assert derive(key, 0, 3) == [branch.child_public(i).address() for i in range(3)]


def test_regtest_uses_segwatch_network_table() -> None:
    """Regtest encodes with bcrt / testnet versions, Litecoin regtest with rltc / 0x3A."""
    from bitcoinlib.encoding import addr_bech32_to_pubkeyhash  # after chains.utxo's import

    regtest = [derive(parse_watch_key(f"{s}({TPUB}/0/*{c}", "regtest"), 0, 1)[0]
               for s, c in (("pkh", ")"), ("sh(wpkh", "))"), ("wpkh", ")"))]
    assert regtest[0][0] in "mn" and regtest[1][0] == "2"
    assert regtest[2].startswith("bcrt1q")
    testnet = [derive(parse_watch_key(f"{s}({TPUB}/0/*{c}", "testnet"), 0, 1)[0]
               for s, c in (("pkh", ")"), ("sh(wpkh", "))"), ("wpkh", ")"))]
    assert regtest[:2] == testnet[:2]
    assert (addr_bech32_to_pubkeyhash(regtest[2], prefix="bcrt")
            == addr_bech32_to_pubkeyhash(testnet[2], prefix="tb"))
    ltc = [derive(parse_watch_key(f"{s}({TPUB}/0/*{c}", "litecoin-regtest"), 0, 1)[0]
           for s, c in (("pkh", ")"), ("sh(wpkh", "))"), ("wpkh", ")"))]
    assert ltc[0] == regtest[0]
    assert ltc[1][0] == "Q" and ltc[2].startswith("rltc1q")
    for address in ltc:
        assert canonical_utxo_address(address, "litecoin-regtest") == address


def test_litecoin_slip132_keys() -> None:
    """Ltub is P2PKH and Mtub P2SH-P2WPKH on Litecoin; both are refused on Bitcoin."""
    ltub = _reencode(BIP32_M, 0x019DA462)
    mtub = _reencode(BIP32_M, 0x01B26EF6)
    assert derive(parse_watch_key(ltub, "litecoin"), 0, 1)[0].startswith("L")
    assert derive(parse_watch_key(mtub, "litecoin"), 0, 1)[0].startswith("M")
    with pytest.raises(InvalidWatchKey, match="litecoin mainnet key"):
        parse_watch_key(ltub, "bitcoin")


# --- descriptors ------------------------------------------------------------------------
def test_descriptor_checksum_bip380_vector() -> None:
    """BIP-380's own test vector."""
    assert descriptor_checksum("raw(deadbeef)") == "89f8spxm"


@pytest.mark.parametrize(("descriptor", "network"), CORE_DESCRIPTORS)
def test_bitcoin_core_descriptors_verify(descriptor: str, network: str) -> None:
    """Descriptors with Bitcoin Core's checksums parse; origin is kept, normalized to h."""
    key = parse_watch_key(descriptor, network)
    assert key.origin is not None and "'" not in key.origin
    assert descriptor_checksum(descriptor.partition("#")[0]) == descriptor.partition("#")[2]


def test_descriptor_round_trip() -> None:
    """`WatchKey.descriptor` parses back to the same key and addresses."""
    for text, network in [(ZPUB, "bitcoin"), (YPUB, "bitcoin"), (BIP32_M, "litecoin"),
                          *CORE_DESCRIPTORS]:
        key = parse_watch_key(text, network)
        again = parse_watch_key(key.descriptor, network)
        assert again == key
        assert derive(again, 5, 2) == derive(key, 5, 2)


def test_zpub_descriptor_matches_bare_zpub() -> None:
    """`wpkh(zpub/0/*)` and its xpub form derive the bare zpub's addresses."""
    bare = parse_watch_key(ZPUB, "bitcoin")
    assert bare.descriptor.startswith("wpkh(xpub")
    for text in (f"wpkh({ZPUB}/0/*)", bare.descriptor, f"  wpkh([73c5da0a/84h/0h/0h]{ZPUB}/0/*) "):
        assert derive(parse_watch_key(text, "bitcoin"), 0, 2) == derive(bare, 0, 2)


def test_bare_key_with_a_path() -> None:
    """`KEY/1/*` watches the change chain."""
    change = parse_watch_key(f"{ZPUB}/1/*", "bitcoin")
    assert change.path == (1,)
    assert derive(change, 0, 1) != derive(parse_watch_key(ZPUB, "bitcoin"), 0, 1)


# --- refusals ---------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "reason"), [
    (f"wpkh({ZPUB}/0/*)#l6n08zmr", "checksum #l6n08zmr does not match"),
    (f"wpkh({ZPUB}/0/*)#abc", "malformed descriptor checksum"),
    (f"wpkh({ZPUB}/0h/*)", "hardened step 0h after the key"),
    (f"wpkh({ZPUB}/1'/*)", "hardened step 1' after the key"),
    (f"wpkh({ZPUB}/0/*h)", "hardened wildcard"),
    (f"wpkh({ZPUB})", "not ranged"),
    (f"wpkh({ZPUB}/0/5)", "must end with /*"),
    (f"wpkh({ZPUB}/<0;1>/*)", "multipath"),
    (f"tr({BIP32_M}/0/*)", "unsupported descriptor tr"),
    (f"wsh(multi(1,{BIP32_M}/0/*,{BIP32_M}/1/*))", "unsupported descriptor wsh"),
    (f"sh(wpkh({ZPUB}/0/*))", "a zpub key is for wpkh"),
    (f"pkh({YPUB}/0/*)", "a ypub key is for sh(wpkh)"),
    (f"wpkh([d34db33/84h]{ZPUB}/0/*)", "malformed key origin"),
    (f"wpkh({ZPUB}/0/x/*)", "bad derivation step"),
    (f"wpkh({ZPUB}/2147483648/*)", "out of range"),
    ("wpkh(02a1633cafcc01ebfb6d78e39f687a1f0995c62fc95f51ead10a02ee0be551b5dc)", "bad base58"),
    ("", "empty"),
    ("DMwo58pR1QLEFihHiXPVykYB6fJmsTeHvyTp7hRThAtCX8CvYzgPcn8XnmdfHPmHJiEDXkTiJTVV9rHEB"
     "Uem2mwVbbNfvT2MTcAqj3nesx8uBf9", "unknown extended key version"),
    # unknown version, but private key data: refused as a private key, never echoed
    ("DMwo58pR1QLEFihHiXPVykYB6fJmsTeHvyTp7hRThAtCX8CvYzgPcn8XnmdfHGMQzT7ayAmfo4z3gY5Kfb"
     "rZWZ6St24UVf2Qgo6oujFktLHdHY4", "private key"),
    ("xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6Q5JXayek4PRsn35jii4veM"
     "imro1xefsM58PgBMrvdYre8QyULY", "not a valid point"),
    ("xpub661MyMwAuDcm6CRQ5N4qiHKrJ39Xe1R1NyfouMKTTWcguwVcfrZJaNvhpebzGerh7gucBvzEQWRugZD"
     "uDXjNDRmXzSZe4c7mnTK97pTvGS8", "a master key with a parent"),
    (BIP32_M[:-1] + "9", "bad checksum"),
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "not an extended public key"),
])
def test_refusals_name_the_reason(text: str, reason: str) -> None:
    """Unwatchable input raises InvalidWatchKey (an InvalidAddress) with a one-line reason."""
    with pytest.raises(InvalidAddress) as raised:
        parse_watch_key(text, "bitcoin")
    assert reason in raised.value.user_message
    assert "\n" not in raised.value.user_message


@pytest.mark.parametrize("private", [
    BIP32_XPRV,
    f"wpkh([d34db33f/84h/0h/0h]{BIP32_XPRV}/0/*)",
    "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoWn",
    "wpkh(KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoWn)",
])
def test_private_keys_are_refused_without_echoing_them(private: str) -> None:
    """segwatch never holds a private key, and never prints one back."""
    with pytest.raises(InvalidWatchKey, match="private key") as raised:
        parse_watch_key(private, "bitcoin")
    assert "public keys only" in raised.value.user_message
    assert BIP32_XPRV[8:] not in raised.value.user_message
    assert "KwDiBf89" not in raised.value.user_message


@pytest.mark.parametrize(("text", "network", "reason"), [
    (BIP32_M, "testnet", "a mainnet key (xpub…) on a testnet chain"),
    (ZPUB, "regtest", "a mainnet key (zpub…) on a regtest chain"),
    (TPUB, "bitcoin", "a test-network key (tpub…) on a bitcoin chain"),
    (TPUB, "litecoin", "a test-network key (tpub…) on a litecoin chain"),
])
def test_key_of_another_network_is_refused(text: str, network: str, reason: str) -> None:
    """A mainnet key on a test chain, and the reverse, is an error."""
    with pytest.raises(InvalidWatchKey, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_watch_key(text, network)


def test_unknown_network_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown utxo network"):
        parse_watch_key(ZPUB, "dogecoin")


def test_bad_window_is_a_value_error() -> None:
    key = parse_watch_key(ZPUB, "bitcoin")
    assert derive(key, 7, 0) == []
    for start, count in ((-1, 1), (0, -1), (2**31 - 1, 2)):
        with pytest.raises(ValueError, match="index window"):
            derive(key, start, count)


# --- properties -------------------------------------------------------------------------
KEY = parse_watch_key(ZPUB, "bitcoin")
ADDRESSES = derive(KEY, 0, 120)
INDEX = {address: i for i, address in enumerate(ADDRESSES)}


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 60), first=st.integers(0, 15), second=st.integers(0, 15))
def test_adjacent_windows_agree(start: int, first: int, second: int) -> None:
    """derive(s, a) + derive(s + a, b) == derive(s, a + b) == the same slice from 0."""
    joined = derive(KEY, start, first) + derive(KEY, start + first, second)
    assert joined == derive(KEY, start, first + second) == ADDRESSES[start:start + first + second]


def expected_discovery(used: set[int], gap: int) -> int:
    """The model: the last used index reached before `gap` unused in a row (-1 if none)."""
    last, index = -1, 0
    while index - last <= gap:
        if index in used:
            last = index
        index += 1
    return last


@settings(max_examples=30, deadline=None)
@given(used=st.sets(st.integers(0, 70), max_size=8), gap=st.integers(1, 12))
def test_discover_stops_exactly_after_the_gap(used: set[int], gap: int) -> None:
    """discover returns 0 … last used, and has looked at the `gap` addresses after it."""
    asked: list[Address] = []

    def history(batch: Sequence[Address]) -> set[Address]:
        asked.extend(batch)
        return {a for a in batch if INDEX[a] in used}

    last = expected_discovery(used, gap)
    assert discover(KEY, history, gap_limit=gap) == ADDRESSES[:last + 1]
    asked_indices = [INDEX[a] for a in asked]
    assert asked_indices == list(range(len(asked)))
    assert last + gap < len(asked) <= last + 2 * gap


def test_discover_nothing_used_is_empty_after_one_gap() -> None:
    asked: list[Address] = []

    def history(batch: Sequence[Address]) -> set[Address]:
        asked.extend(batch)
        return {Address("bc1qforeign")}  # addresses outside the batch are ignored

    assert discover(KEY, history, gap_limit=20) == []
    assert asked == ADDRESSES[:20]


def test_discover_refuses_to_truncate_at_the_limit() -> None:
    """A key still in use at max_addresses is an error, not a silently short list."""
    def history(batch: Sequence[Address]) -> set[Address]:
        return set(batch)

    with pytest.raises(DiscoveryLimitReached, match="reached 30 addresses"):
        discover(KEY, history, gap_limit=10, max_addresses=30)
    assert discover(KEY, lambda b: {a for a in b if INDEX[a] < 5}, gap_limit=10,
                    max_addresses=15) == ADDRESSES[:5]


def test_watch_key_is_a_value() -> None:
    """Equal text parses to equal, hashable keys."""
    assert isinstance(KEY, WatchKey)
    assert {KEY, parse_watch_key(ZPUB, "bitcoin")} == {KEY}


def _reencode(xpub: str, version: int) -> str:
    """The same key under another SLIP-132 version (e.g. Ltub, Mtub)."""
    import hashlib

    from bitcoinlib.encoding import base58encode, change_base

    payload = version.to_bytes(4, "big") + bytes(change_base(xpub, 58, 256))[4:78]
    check = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return str(base58encode(payload + check))
