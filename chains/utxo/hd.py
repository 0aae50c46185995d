"""HD custody: an extended public key or output descriptor → the addresses it watches.

Accepted (`parse_watch_key`):
- an extended public key, optionally followed by `/path/*`: xpub/tpub/Ltub are P2PKH,
  ypub/upub/Mtub P2SH-P2WPKH, zpub/vpub P2WPKH (SLIP-132); the default path is `0/*`,
  the receive chain;
- the descriptors `pkh(KEY/path/*)`, `wpkh(KEY/path/*)` and `sh(wpkh(KEY/path/*))`,
  with an optional `[fingerprint/origin]` before KEY and an optional `#checksum`
  (BIP-380, verified when present). In a descriptor the script comes from the
  descriptor; a SLIP-132 key (ypub, zpub, …) must agree with it.

Private keys are refused: segwatch watches, it never holds keys that can spend.

bitcoinlib derives the child public keys (BIP-32 CKDpub); segwatch encodes the addresses
itself with its own network table (chains/utxo/address.py), because bitcoinlib's lacks
Litecoin regtest and gives Bitcoin regtest mainnet version bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bitcoinlib.encoding import (
    EncodingError,
    base58encode,
    change_base,
    hash160,
    pubkeyhash_to_addr_base58,
    pubkeyhash_to_addr_bech32,
)
from bitcoinlib.keys import BKeyError, HDKey

from chains.errors import InvalidAddress, SegwatchError
from chains.types import Address
from chains.utxo.address import NETWORKS, UtxoNetwork, canonical_utxo_address

ScriptType = Literal["pkh", "sh-wpkh", "wpkh"]
"""P2PKH, P2SH-wrapped P2WPKH, native P2WPKH."""

HARDENED = 0x8000_0000
DEFAULT_PATH = (0,)
"""A bare extended key watches its receive chain, `0/*`."""


class InvalidWatchKey(InvalidAddress):
    """An extended key or descriptor that segwatch cannot watch (one-line reason)."""


class DiscoveryLimitReached(SegwatchError):
    """Gap-limit discovery reached `max_addresses` while addresses were still in use."""


@dataclass(frozen=True, slots=True)
class WatchKey:
    """A parsed, public-only HD key: addresses are `script(key/path/i)` on `network`."""

    network: str
    script: ScriptType
    public_key: bytes
    chain_code: bytes
    depth: int
    parent_fingerprint: bytes
    child_index: int
    path: tuple[int, ...]
    origin: str | None = None
    """The key origin as `fingerprint/84h/0h/0h`, when given."""

    @property
    def descriptor(self) -> str:
        """The equivalent output descriptor with its checksum, key in xpub/tpub form."""
        origin = f"[{self.origin}]" if self.origin else ""
        steps = "".join(f"/{step}" for step in self.path)
        inner = f"{origin}{self._xpub()}{steps}/*"
        body = {"pkh": f"pkh({inner})", "wpkh": f"wpkh({inner})",
                "sh-wpkh": f"sh(wpkh({inner}))"}[self.script]
        return f"{body}#{descriptor_checksum(body)}"

    def _xpub(self) -> str:
        version = _TEST_XPUB if self.network in _TEST_NETWORKS else _MAIN_XPUB
        payload = (version.to_bytes(4, "big") + bytes([self.depth]) + self.parent_fingerprint
                   + self.child_index.to_bytes(4, "big") + self.chain_code + self.public_key)
        return str(base58encode(payload + _checksum4(payload)))


# --- extended key versions --------------------------------------------------------------
_MAIN_XPUB = 0x0488B21E
_TEST_XPUB = 0x043587CF
_TEST_NETWORKS = frozenset({"testnet", "signet", "regtest", "litecoin-regtest"})
_MAINNETS = frozenset({"bitcoin", "litecoin"})


@dataclass(frozen=True, slots=True)
class _Version:
    prefix: str
    script: ScriptType
    networks: frozenset[str]
    kind: str


_PUBLIC: dict[int, _Version] = {
    _MAIN_XPUB: _Version("xpub", "pkh", _MAINNETS, "mainnet"),
    0x049D7CB2: _Version("ypub", "sh-wpkh", _MAINNETS, "mainnet"),
    0x04B24746: _Version("zpub", "wpkh", _MAINNETS, "mainnet"),
    _TEST_XPUB: _Version("tpub", "pkh", _TEST_NETWORKS, "test-network"),
    0x044A5262: _Version("upub", "sh-wpkh", _TEST_NETWORKS, "test-network"),
    0x045F1CF6: _Version("vpub", "wpkh", _TEST_NETWORKS, "test-network"),
    0x019DA462: _Version("Ltub", "pkh", frozenset({"litecoin"}), "litecoin mainnet"),
    0x01B26EF6: _Version("Mtub", "sh-wpkh", frozenset({"litecoin"}), "litecoin mainnet"),
}
"""Litecoin Core itself serializes with xpub/tpub, so those serve Litecoin as well."""

_PRIVATE = {
    0x0488ADE4: "xprv", 0x049D7878: "yprv", 0x04B2430C: "zprv", 0x04358394: "tprv",
    0x044A4E28: "uprv", 0x045F18BC: "vprv", 0x019D9CFE: "Ltpv", 0x01B26792: "Mtpv",
    0x0295B005: "Yprv", 0x02AA7A99: "Zprv", 0x024285B5: "Uprv", 0x02575048: "Vprv",
}
_MULTISIG = {0x0295B43F: "Ypub", 0x02AA7ED3: "Zpub", 0x024289EF: "Upub", 0x02575483: "Vpub"}
_WIF_VERSIONS = frozenset({0x80, 0xEF, 0xB0})
_WIF_LENGTHS = (33, 34)
"""A WIF payload: version, 32-byte secret, optional compression flag."""
_EXTENDED_LENGTH = 82

_SECP_P = 2**256 - 2**32 - 977

_PRIVATE_HINT = ("segwatch watches with public keys only; export the account's extended "
                 "public key (xpub, ypub, zpub, tpub, …) instead")


# --- parsing ----------------------------------------------------------------------------
_SCRIPTS: tuple[tuple[str, str, ScriptType], ...] = (
    ("sh(wpkh(", "))", "sh-wpkh"), ("wpkh(", ")", "wpkh"), ("pkh(", ")", "pkh"))
_ORIGIN = re.compile(r"\[([0-9a-fA-F]{8})((?:/[0-9]+['hH]?)*)\]")
_STEP = re.compile(r"([0-9]+)(['hH]?)")


def parse_watch_key(text: str, network: str) -> WatchKey:
    """Parse an extended public key or a pkh/wpkh/sh(wpkh) descriptor for `network`.

    Returns the WatchKey. Raises InvalidWatchKey (an InvalidAddress) with a one-line
    reason: a private key, a bad descriptor checksum, a hardened step after the key, a
    key of another network, an unsupported script; ValueError for an unknown `network`.
    """
    if network not in NETWORKS:
        raise ValueError(f"unknown utxo network {network!r}")
    body = text.strip()
    if not body:
        raise InvalidWatchKey("empty extended key or descriptor")
    if "#" in body:
        body = _strip_checksum(body)
    script, expression = _unwrap(body)
    origin, key_text, path_text = _split_expression(expression)
    version, fields = _decode_extended_key(key_text, network)
    if script is not None and version.script not in ("pkh", script):
        raise InvalidWatchKey(f"a {version.prefix} key is for {_describe(version.script)}, "
                              f"but the descriptor says {_describe(script)}")
    if path_text is None and script is not None:
        raise InvalidWatchKey("the descriptor's key is not ranged: end it with /0/* "
                              "(receive) or /1/* (change)")
    steps = DEFAULT_PATH if path_text is None else _parse_path(path_text)
    depth, parent, child, chain_code, public_key = fields
    return WatchKey(network=network, script=script or version.script, public_key=public_key,
                    chain_code=chain_code, depth=depth, parent_fingerprint=parent,
                    child_index=child, path=steps, origin=origin)


def _unwrap(body: str) -> tuple[ScriptType | None, str]:
    """Split `wpkh(X)` into ("wpkh", X); a bare key expression has no script."""
    if "(" not in body and ")" not in body:
        return None, body
    for opening, closing, script in _SCRIPTS:
        if body.startswith(opening) and body.endswith(closing):
            inner = body[len(opening):-len(closing)]
            if "(" in inner or ")" in inner or "," in inner:
                break
            return script, inner
    name = body.partition("(")[0] or "?"
    raise InvalidWatchKey(f"unsupported descriptor {name}(…): expected pkh(KEY/…/*), "
                          "wpkh(KEY/…/*) or sh(wpkh(KEY/…/*)) with a single key")


def _split_expression(expression: str) -> tuple[str | None, str, str | None]:
    """Split `[origin]KEY/path/*` into (origin, KEY, `path/*` or None)."""
    origin = None
    if expression.startswith("["):
        match = _ORIGIN.match(expression)
        if match is None:
            raise InvalidWatchKey("malformed key origin: expected [8 hex digits/steps…]")
        origin = match[1].lower() + _normalize_steps(match[2])
        expression = expression[match.end():]
    key_text, sep, path_text = expression.partition("/")
    return origin, key_text, path_text if sep else None


def _normalize_steps(text: str) -> str:
    """`/84'/0H/0h` → `/84h/0h/0h`."""
    return "".join(f"/{m[1]}{'h' if m[2] else ''}" for m in _STEP.finditer(text))


def _parse_path(text: str) -> tuple[int, ...]:
    """Parse `0/*` or `1/2/*`: unhardened steps, then the wildcard."""
    *steps, last = text.split("/")
    if last in ("*'", "*h", "*H"):
        raise InvalidWatchKey("hardened wildcard /*h: hardened children cannot be derived "
                              "from a public key")
    if last != "*":
        raise InvalidWatchKey(f"the key path must end with /* (a range of addresses), got "
                              f"/{text}")
    return tuple(_parse_step(step) for step in steps)


def _parse_step(step: str) -> int:
    match = _STEP.fullmatch(step)
    if match is None:
        if step.startswith("<"):
            raise InvalidWatchKey("multipath steps <0;1> are not supported: give the receive "
                                  "(/0/*) and change (/1/*) descriptors separately")
        raise InvalidWatchKey(f"bad derivation step {step!r}")
    if match[2]:
        raise InvalidWatchKey(f"hardened step {step} after the key: hardened children cannot "
                              "be derived from a public key (export the key at that path)")
    index = int(match[1])
    if index >= HARDENED:
        raise InvalidWatchKey(f"derivation step {step} is out of range (below 2^31)")
    return index


def _decode_extended_key(text: str, network: str
                         ) -> tuple[_Version, tuple[int, bytes, int, bytes, bytes]]:
    """Decode a base58check extended public key of `network`.

    Returns its version and (depth, parent fingerprint, child index, chain code, key).
    Never echoes the text: it may be a private key.
    """
    raw = _base58check(text)
    if len(raw) in _WIF_LENGTHS and raw[0] in _WIF_VERSIONS:
        raise InvalidWatchKey(f"this is a private key (WIF): {_PRIVATE_HINT}")
    if len(raw) != _EXTENDED_LENGTH - 4:
        raise InvalidWatchKey(f"not an extended public key: {_shown(text)}")
    version_int = int.from_bytes(raw[:4], "big")
    if version_int in _PRIVATE or raw[45] == 0:
        name = _PRIVATE.get(version_int, "extended private key")
        raise InvalidWatchKey(f"this is a private key ({name}…): {_PRIVATE_HINT}")
    if version_int in _MULTISIG:
        raise InvalidWatchKey(f"{_MULTISIG[version_int]} is a multisig (P2WSH) key; "
                              "only single-key pkh, wpkh and sh(wpkh) are supported")
    version = _PUBLIC.get(version_int)
    if version is None:
        raise InvalidWatchKey(f"unknown extended key version 0x{version_int:08x}: "
                              f"{_shown(text)}")
    if network not in version.networks:
        raise InvalidWatchKey(f"a {version.kind} key ({version.prefix}…) on a {network} chain")
    return version, _key_fields(raw, text)


def _key_fields(raw: bytes, text: str) -> tuple[int, bytes, int, bytes, bytes]:
    depth, parent, child = raw[4], raw[5:9], int.from_bytes(raw[9:13], "big")
    public_key = raw[45:78]
    if depth == 0 and (parent != bytes(4) or child != 0):
        raise InvalidWatchKey(f"malformed extended key (a master key with a parent): "
                              f"{_shown(text)}")
    if not _on_curve(public_key):
        raise InvalidWatchKey(f"the extended key's public key is not a valid point: "
                              f"{_shown(text)}")
    return depth, parent, child, raw[13:45], public_key


def _base58check(text: str) -> bytes:
    """Decode base58check; return the payload without its checksum."""
    try:
        raw = bytes(change_base(text, 58, 256))
    except (EncodingError, ValueError, TypeError, KeyError):
        raise InvalidWatchKey(f"not an extended public key (bad base58): {_shown(text)}"
                              ) from None
    raw = bytes(len(text) - len(text.lstrip("1"))) + raw.lstrip(b"\0")
    if len(raw) < 5 or _checksum4(raw[:-4]) != raw[-4:]:
        raise InvalidWatchKey(f"bad checksum in extended key {_shown(text)}")
    return raw[:-4]


def _checksum4(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def _on_curve(public_key: bytes) -> bool:
    """A compressed secp256k1 point: prefix 02/03 and x³ + 7 a square mod p."""
    if len(public_key) != 33 or public_key[0] not in (2, 3):
        return False
    x = int.from_bytes(public_key[1:], "big")
    if x >= _SECP_P:
        return False
    rhs = (pow(x, 3, _SECP_P) + 7) % _SECP_P
    y = pow(rhs, (_SECP_P + 1) // 4, _SECP_P)
    return y * y % _SECP_P == rhs


def _shown(text: str) -> str:
    """Only the version prefix: a key that failed to decode may be a private one."""
    return f"{text[:4]}…" if len(text) > 4 else repr(text)


def _describe(script: ScriptType) -> str:
    return {"pkh": "pkh (P2PKH)", "sh-wpkh": "sh(wpkh) (P2SH-P2WPKH)",
            "wpkh": "wpkh (P2WPKH)"}[script]


# --- BIP-380 descriptor checksum --------------------------------------------------------
_INPUT_CHARSET = ("0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
                  "ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ")
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


def descriptor_checksum(body: str) -> str:
    """Return the 8-character BIP-380 checksum of a descriptor (without `#`).

    Raises InvalidWatchKey for a character outside the descriptor character set.
    """
    symbols = [*_expand(body), 0, 0, 0, 0, 0, 0, 0, 0]
    value = _polymod(symbols) ^ 1
    return "".join(_CHECKSUM_CHARSET[(value >> (5 * (7 - i))) & 31] for i in range(8))


def _expand(body: str) -> list[int]:
    symbols: list[int] = []
    groups: list[int] = []
    for char in body:
        position = _INPUT_CHARSET.find(char)
        if position < 0:
            raise InvalidWatchKey(f"invalid character {char!r} in the descriptor")
        symbols.append(position & 31)
        groups.append(position >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    return symbols


def _polymod(symbols: list[int]) -> int:
    check = 1
    for value in symbols:
        top = check >> 35
        check = (check & 0x7FFFFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                check ^= generator
    return check


def _strip_checksum(text: str) -> str:
    """Verify `body#checksum`; return the body."""
    body, _, checksum = text.rpartition("#")
    if len(checksum) != 8 or any(c not in _CHECKSUM_CHARSET for c in checksum):
        raise InvalidWatchKey(f"malformed descriptor checksum #{checksum}: expected 8 "
                              "characters")
    if descriptor_checksum(body) != checksum:
        raise InvalidWatchKey(f"descriptor checksum #{checksum} does not match: the "
                              "descriptor was altered or mistyped (omit #… to skip the check)")
    return body


# --- derivation -------------------------------------------------------------------------
def derive(key: WatchKey, start: int, count: int) -> list[Address]:
    """Return the canonical addresses of indices `start` … `start + count - 1`.

    Raises ValueError for a negative or out-of-range window, InvalidWatchKey in the
    (about 2^-127 likely) case that BIP-32 declares an index invalid.
    """
    if start < 0 or count < 0 or start + count > HARDENED:
        raise ValueError(f"index window [{start}, {start + count}) outside [0, 2^31)")
    if count == 0:
        return []
    branch = _child(_root(key), key.path)
    return [_address(key, _child(branch, (index,)).public_byte)
            for index in range(start, start + count)]


def _root(key: WatchKey) -> HDKey:
    return HDKey(key=key.public_key, chain=key.chain_code, depth=key.depth,
                 parent_fingerprint=key.parent_fingerprint, child_index=key.child_index,
                 is_private=False, network="bitcoin", witness_type="legacy")


def _child(node: HDKey, steps: Sequence[int]) -> HDKey:
    try:
        for step in steps:
            node = node.child_public(step)
    except (BKeyError, ValueError) as exc:
        raise InvalidWatchKey(f"cannot derive child {list(steps)}: {exc}") from None
    return node


def _address(key: WatchKey, public_key: bytes) -> Address:
    """Encode the key's script for `public_key` with segwatch's network table."""
    net = NETWORKS[key.network]
    pubkey_hash = hash160(public_key)
    if key.script == "wpkh":
        text = pubkeyhash_to_addr_bech32(pubkey_hash, prefix=net.hrp, witver=0)
    elif key.script == "sh-wpkh":
        redeem_script = b"\x00\x14" + pubkey_hash
        text = pubkeyhash_to_addr_base58(hash160(redeem_script),
                                         prefix=bytes([_p2sh_version(net)]))
    else:
        (version,) = net.p2pkh
        text = pubkeyhash_to_addr_base58(pubkey_hash, prefix=bytes([version]))
    return canonical_utxo_address(str(text), key.network)


_P2SH_VERSION = {"litecoin": 0x32, "litecoin-regtest": 0x3A}
"""Litecoin still accepts its legacy P2SH versions; new addresses use the current one."""


def _p2sh_version(net: UtxoNetwork) -> int:
    if net.name in _P2SH_VERSION:
        return _P2SH_VERSION[net.name]
    (version,) = net.p2sh
    return version


# --- discovery --------------------------------------------------------------------------
UsedFn = Callable[[Sequence[Address]], set[Address]]
"""Given a batch of addresses, return those that have any on-chain history."""


def discover(key: WatchKey, used: UsedFn, gap_limit: int = 20,
             max_addresses: int = 10_000) -> list[Address]:
    """Return the addresses from index 0 up to and including the last used one.

    Derives in batches of `gap_limit`, asks `used` which of each batch have history, and
    stops at the first run of `gap_limit` consecutive unused addresses (an empty list
    when none of the first `gap_limit` is used). As in BIP-44, history beyond that gap
    is not looked for; a used address later in the same batch is ignored too, so the
    result does not depend on batching. Raises
    DiscoveryLimitReached rather than return a set that may miss used addresses when
    `max_addresses` are derived before such a gap; ValueError for a bad limit.
    """
    if gap_limit < 1 or max_addresses < 0:
        raise ValueError("gap_limit must be at least 1 and max_addresses not negative")
    found: list[Address] = []
    last_used = -1
    while True:
        if len(found) >= max_addresses:
            raise DiscoveryLimitReached(
                f"HD discovery reached {max_addresses} addresses without {gap_limit} unused "
                "in a row; raise the address limit")
        batch = derive(key, len(found), min(gap_limit, max_addresses - len(found)))
        hits = used(batch)
        for address in batch:
            found.append(address)
            if address in hits:
                last_used = len(found) - 1
            elif len(found) - 1 - last_used >= gap_limit:
                return found[:last_used + 1]
