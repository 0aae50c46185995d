"""The auditor proof package (SPEC §6): its format; build, write and read it
(verify it and prove one owner's share: daemon/export/verify.py).

A package is a directory (or a .zip of one) holding `manifest.json`, `wallets.csv`,
`allocations.csv`, `in_transit.csv`, `discrepancies.csv` and `report.html`. Each
wallet line carries the booked balance (`allocation_total`, the sum of its lines in
`allocations.csv`), the reconciling items' net at the pinned block (`in_transit`, SPEC §8:
the items are the lines of `in_transit.csv`), the expected balance (`expected` =
allocation_total + in_transit), `difference` = onchain - expected and a `status` judged
against expected. Every item names a wallet line, and its side follows from its block
and block time against the chain's pinned block and the books' cut-off (the manifest's
`ledger.as_of`): unbooked at or below the pinned block and after the cut-off, ahead above
it and at or before the cut-off, reorged at or before the cut-off. A balance finding in
`discrepancies.csv` carries the same `in_transit` and `expected` beside its `ledger`
(booked) amount; its `difference` is on-chain - expected. The manifest lists
every file's SHA-256, each chain's pinned block and sources, one Merkle-sum root and total
per (chain, asset) over `allocations.csv` (daemon/rules/merkle.py), and its signer's key
fingerprint. `manifest.sig` holds a detached Ed25519 signature over the exact bytes of
`manifest.json` (daemon/export/signing.py); a package verifies only against a trusted signer.
Everything an auditor needs to recompute is in the package; nothing needs segwatch's
database. Free text in its CSV files is neutralized against spreadsheet formulas.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import secrets
import shutil
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from daemon import __version__
from daemon.errors import InputError
from daemon.export import signing
from daemon.rules.leaves import Allocation, checked_ref, owner_secret, private_trees
from daemon.rules.merkle import MerkleSumTree, system_nonce

FORMAT = "segwatch-export-v3"
SIGNATURE = "manifest.sig"
WALLET_COLUMNS = ("chain", "network", "address", "structure", "asset", "onchain",
                  "allocation_total", "in_transit", "expected", "difference", "status")
TRANSIT_COLUMNS = ("chain", "address", "asset", "what", "direction", "amount", "side",
                   "block", "block_time", "tx_hash")
ALLOCATION_COLUMNS = ("chain", "address", "asset", "owner_ref", "amount", "nonce", "leaf_hash")
DISCREPANCY_COLUMNS = ("id", "type", "severity", "status", "chain", "address", "asset",
                       "onchain", "ledger", "in_transit", "expected", "difference",
                       "tx_hash", "detected_at", "cure_deadline")
FILES = ("wallets.csv", "allocations.csv", "in_transit.csv", "discrepancies.csv",
         "report.html")
NUMERIC = frozenset({"onchain", "allocation_total", "in_transit", "expected", "difference",
                     "amount", "ledger", "id", "block"})
"""CSV columns holding integers (a leading '-' is a sign, not a formula)."""
SALT_SUFFIX = ".owner-salt"
"""Beside a pseudonymized package (never inside it): the salt that maps owners to refs."""


# --- keys -----------------------------------------------------------------------------
def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at `path` (daemon/export/signing.py). Raises InputError."""
    return signing.load_private_key(path)


# --- inputs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainPin:
    """One chain's pinned block and the balances read at it."""

    name: str
    family: str
    chain_id: int | None
    network: str | None
    height: int
    hash: str
    timestamp: int | None
    sources: tuple[str, ...]
    balances: Mapping[tuple[str, str], int | None]
    """(address, asset symbol) → base units; None when it could not be read."""
    items: Sequence[Mapping[str, Any]] = ()
    """The reconciling items at the pinned block (`daemon.rules.transit.Item.as_json`)."""


@dataclass(frozen=True)
class WalletLedger:
    """One wallet of the sub-ledger snapshot exported."""

    chain: str
    address: str
    structure: str
    allocations: Mapping[str, Mapping[str, int]]
    """asset symbol → owner → base units."""


@dataclass(frozen=True)
class PackageInput:
    generated_at: datetime
    as_of: datetime
    chains: Sequence[ChainPin]
    wallets: Sequence[WalletLedger]
    discrepancies: Sequence[Mapping[str, Any]]
    decimals: Mapping[tuple[str, str], int]
    assets: Mapping[str, Sequence[str]]
    """chain → every configured asset symbol (wallet rows for each)."""
    ledger: Mapping[str, Any] | None = None
    """The ledger snapshot the package books: its id and cut-off (SPEC §8)."""
    audit_head: Mapping[str, Any] | None = None
    """The audit log's head when the package was made (signed with the audit key when
    one is configured): `audit verify --against` proves the log still extends it."""


@dataclass
class Package:
    """The files of a package, in memory, and what the caller may need afterwards."""

    files: dict[str, bytes] = field(default_factory=dict)
    salt: bytes | None = None
    roots: list[dict[str, Any]] = field(default_factory=list)
    exposed: tuple[tuple[str, str], ...] = ()
    """(chain, asset) trees in which some owner's balance could not be hidden."""


# --- building -------------------------------------------------------------------------
def build_package(data: PackageInput, key: Ed25519PrivateKey, *, pseudonymize: bool,
                  nonce: Callable[[], bytes] = system_nonce,
                  salt: bytes | None = None, rng: random.Random | None = None) -> Package:
    """Return every file of the package (pure apart from `nonce`/`salt`/`rng`
    randomness). Pseudonymized: owners' leaves commit to owner-checkable refs derived
    from the master `salt` (daemon/rules/leaves.py); allocations are split and padded."""
    from daemon.export.report import render_report

    salt = (salt or secrets.token_bytes(32)) if pseudonymize else None
    pins = {c.name: c for c in data.chains}
    transit_rows = [{"chain": c.name, **{k: item.get(k) for k in TRANSIT_COLUMNS
                                         if k != "chain"}}
                    for c in data.chains for item in c.items]
    wallet_rows = _wallet_rows(data, pins, transit_net(transit_rows))
    allocation_rows, trees, exposed = _allocations(data.wallets, salt, nonce,
                                                   rng or random.SystemRandom())
    liabilities = [{"chain": chain, "asset": asset, "root": tree.root_hash,
                    "total": str(tree.total), "leaves": len(tree.leaves)}
                   for (chain, asset), tree in sorted(trees.items())]
    files = {
        "wallets.csv": _csv(WALLET_COLUMNS, wallet_rows),
        "allocations.csv": _csv(ALLOCATION_COLUMNS, allocation_rows),
        "in_transit.csv": _csv(TRANSIT_COLUMNS, transit_rows),
        "discrepancies.csv": _csv(DISCREPANCY_COLUMNS, data.discrepancies),
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "generator": {"name": "segwatch", "version": __version__},
        "generated_at": _iso(data.generated_at), "as_of": _iso(data.as_of),
        "pseudonymized": pseudonymize,
        "leaves": {"scheme": "split-v1", "exposed": [list(k) for k in exposed]},
        "chains": [{"name": c.name, "family": c.family, "chain_id": c.chain_id,
                    "network": c.network,
                    "block": {"height": c.height, "hash": c.hash, "timestamp": c.timestamp},
                    "sources": list(c.sources)} for c in data.chains],
        "liabilities": liabilities,
    }
    if data.audit_head is not None:
        manifest["audit_head"] = dict(data.audit_head)
    if data.ledger is not None:
        manifest["ledger"] = dict(data.ledger)
    manifest["signer"] = {"algorithm": "ed25519",
                          "fingerprint": signing.fingerprint(key.public_key()),
                          "public_key": signing.raw_public(key.public_key()).hex()}
    files["report.html"] = render_report(
        manifest, wallet_rows, [dict(d) for d in data.discrepancies],
        dict(data.decimals), transit_rows).encode()
    manifest["files"] = {name: hashlib.sha256(files[name]).hexdigest() for name in FILES}
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True,
                                         ensure_ascii=False) + "\n").encode()
    files[SIGNATURE] = signing.sign(key, files["manifest.json"])
    return Package(files, salt, liabilities, exposed)


def transit_net(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(chain, address, asset) → what the reconciling items add to the booked amount: an
    unbooked item its signed amount (in +, out -), an ahead or reorged one the opposite.
    Raises ValueError for a malformed line."""
    net: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in rows:
        amount = int(str(row["amount"]))
        if row["direction"] not in ("in", "out") or \
                row["side"] not in ("unbooked", "ahead", "reorged") or amount < 0:
            raise ValueError(f"direction {row['direction']!r}, side {row['side']!r}")
        delta = amount if row["direction"] == "in" else -amount
        net[(str(row["chain"]), str(row["address"]), str(row["asset"]))] += \
            delta if row["side"] == "unbooked" else -delta
    return net


def _wallet_rows(data: PackageInput, pins: Mapping[str, ChainPin],
                 net: Mapping[tuple[str, str, str], int]) -> list[dict[str, str]]:
    """One line per wallet and configured asset (and any other asset an item of the wallet
    moves, so that every item has its line): booked (`allocation_total`), `in_transit`,
    `expected` = booked + in_transit, `difference` = onchain - expected."""
    rows = []
    for wallet in sorted(data.wallets, key=lambda w: (w.chain, w.address)):
        pin = pins[wallet.chain]
        network = str(pin.chain_id if pin.chain_id is not None else pin.network)
        configured = list(data.assets.get(wallet.chain, ()))
        moved = sorted({a for (c, address, a) in net
                        if (c, address) == (wallet.chain, wallet.address)} - set(configured))
        for asset in configured + moved:
            total = sum(wallet.allocations.get(asset, {}).values())
            moving = net.get((wallet.chain, wallet.address, asset), 0)
            onchain = pin.balances.get((wallet.address, asset))
            difference = None if onchain is None else onchain - total - moving
            rows.append({"chain": wallet.chain, "network": network, "address": wallet.address,
                         "structure": wallet.structure, "asset": asset,
                         "onchain": "" if onchain is None else str(onchain),
                         "allocation_total": str(total), "in_transit": str(moving),
                         "expected": str(total + moving),
                         "difference": "" if difference is None else str(difference),
                         "status": wallet_status(wallet.structure, onchain, total + moving)})
    return rows


def wallet_status(structure: str, onchain: int | None, total: int) -> str:
    """`unreadable`, `ok`, `shortfall` or `surplus` against the expected `total` (house
    wallets: `house`)."""
    if onchain is None:
        return "unreadable"
    if structure == "house":
        return "house"
    return "ok" if onchain == total else ("shortfall" if onchain < total else "surplus")


def _allocations(wallets: Sequence[WalletLedger], salt: bytes | None,
                 nonce: Callable[[], bytes], rng: random.Random
                 ) -> tuple[list[dict[str, str]], dict[tuple[str, str], MerkleSumTree],
                            tuple[tuple[str, str], ...]]:
    allocations = [Allocation(wallet.chain, wallet.address, asset, leaf_ref(owner, salt),
                              amount)
                   for wallet in sorted(wallets, key=lambda w: (w.chain, w.address))
                   for asset, owners in sorted(wallet.allocations.items())
                   for owner, amount in sorted(owners.items())]
    made = private_trees(allocations, nonce, rng)
    rows = [{"chain": p.leaf.chain, "address": p.address, "asset": p.leaf.asset,
             "owner_ref": p.leaf.owner_ref, "amount": str(p.leaf.amount),
             "nonce": p.leaf.nonce, "leaf_hash": p.leaf.hash}
            for key in sorted(made.leaves)
            for p in sorted(made.leaves[key], key=lambda p: p.leaf.hash)]
    return rows, made.trees, made.exposed


def leaf_ref(owner: str, salt: bytes | None) -> str:
    """What `owner`'s leaves commit to: with a master `salt`, the owner-checkable ref of
    the secret derived for them; else their id (neutralized for spreadsheets)."""
    if salt is None:
        return neutralize(owner)
    return checked_ref(owner_secret(salt, owner), owner)


def _csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else
                         row[k] if k in NUMERIC else neutralize(str(row[k])) for k in columns})
    return buffer.getvalue().encode()


def neutralize(text: str) -> str:
    """`text` safe for a spreadsheet: a cell starting with = + - @ TAB or CR is read as a
    formula (`=HYPERLINK(...)`), so it is prefixed with an apostrophe."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_instant(value: Any) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (a naive one is UTC); None when absent
    or malformed."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


# --- writing: all or nothing ------------------------------------------------------------
def check_destination(out: Path) -> None:
    """Refuse an output that exists and is not empty (a .zip: that exists at all)."""
    if out.suffix == ".zip":
        if out.exists():
            raise InputError(f"--out {out}: exists; choose a new file")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: exists and is not an empty directory")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: directory {out.parent} does not exist")


def write_package(package: Package, out: Path) -> None:
    """Write into a temporary directory beside `out`, then move it into place (a .zip is
    written as a temporary file and renamed): a failure leaves nothing behind."""
    check_destination(out)
    work = Path(tempfile.mkdtemp(prefix=".segwatch-export-", dir=out.parent))
    try:
        if out.suffix == ".zip":
            target = work / "package.zip"
            signing.write_new(target, b"", "package")
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, content in sorted(package.files.items()):
                    zf.writestr(name, content)
            os.replace(target, out)
        else:
            folder = work / "package"
            folder.mkdir(mode=0o700)
            for name, content in package.files.items():
                signing.write_new(folder / name, content, "package file")
            if out.exists():
                out.rmdir()  # empty (checked)
            os.replace(folder, out)
        if package.salt is not None:
            signing.write_new(out.with_name(out.name + SALT_SUFFIX),
                              package.salt.hex().encode() + b"\n", "salt file")
    finally:
        shutil.rmtree(work, ignore_errors=True)


MAX_FILE_BYTES = 2 * 1024**3
"""The largest file of a package read into memory (a zip bomb is refused unread)."""


def read_package(path: Path) -> dict[str, bytes]:
    """Return the files of a package directory or .zip. Raises InputError for an
    unreadable package, a duplicate zip entry, an entry outside the package's top level
    (a folder, an absolute or `..` path), a link, or a file over MAX_FILE_BYTES. A file
    the package should not hold is returned empty, unread (verify names it)."""
    expected = {*FILES, "manifest.json", SIGNATURE}
    try:
        if path.is_dir():
            entries = sorted(path.iterdir())
            odd = [p.name for p in entries if p.is_symlink() or not p.is_file()]
            if odd:
                raise InputError(f"{path}: {odd[0]} is not a plain file (a package holds "
                                 "only its listed files)")
            _check_sizes(path, {p.name: p.stat().st_size for p in entries})
            return {p.name: p.read_bytes() if p.name in expected else b"" for p in entries}
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            twice = sorted(n for n, count in Counter(names).items() if count > 1)
            if twice:
                raise InputError(f"{path}: duplicate zip entry {twice[0]!r} (which one would "
                                 "an auditor open?)")
            nested = [n for n in names if "/" in n or "\\" in n or n.startswith(".")]
            if nested:
                raise InputError(f"{path}: zip entry {nested[0]!r} is not a top-level file")
            _check_sizes(path, {i.filename: i.file_size for i in zf.infolist()})
            return {name: zf.read(name) if name in expected else b"" for name in names}
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable package ({exc})") from None


def _check_sizes(path: Path, sizes: Mapping[str, int]) -> None:
    large = sorted(name for name, size in sizes.items() if size > MAX_FILE_BYTES)
    if large:
        raise InputError(f"{path}: {large[0]} is larger than {MAX_FILE_BYTES} bytes")
