"""The auditor proof package (SPEC §6): build it, verify it, prove one owner's share.

A package is a directory (or a .zip of one) holding `manifest.json`, `wallets.csv`,
`allocations.csv`, `discrepancies.csv` and `report.html`. The manifest lists every
file's SHA-256, each chain's pinned block and sources, one Merkle-sum root and total
per (chain, asset) over `allocations.csv` (daemon/merkle.py), and an Ed25519 signature
over its own canonical encoding (JSON, keys sorted, no spaces, UTF-8, without the
`signature` member). Everything an auditor needs to recompute is in the package;
nothing needs segwatch's database.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import secrets
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from daemon import __version__
from daemon.errors import InputError
from daemon.merkle import Leaf, MerkleSumTree, build, owner_ref, system_nonce

FORMAT = "segwatch-export-v1"
WALLET_COLUMNS = ("chain", "network", "address", "structure", "asset", "onchain",
                  "allocation_total", "difference", "status")
ALLOCATION_COLUMNS = ("chain", "address", "asset", "owner_ref", "amount", "nonce", "leaf_hash")
DISCREPANCY_COLUMNS = ("id", "type", "severity", "status", "chain", "address", "asset",
                       "onchain", "ledger", "difference", "tx_hash", "detected_at",
                       "cure_deadline")
FILES = ("wallets.csv", "allocations.csv", "discrepancies.csv", "report.html")
SALT_SUFFIX = ".owner-salt"
"""Beside a pseudonymized package (never inside it): the salt that maps owners to refs."""


# --- keys -----------------------------------------------------------------------------
def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM, e.g. `openssl genpkey -algorithm ed25519`).
    Raises InputError naming the file for a missing, unreadable or non-Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InputError(f"--sign-key {path}: cannot read it ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"--sign-key {path}: not an unencrypted PEM private key "
                         f"({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"--sign-key {path}: not an Ed25519 key")
    return key


def generate_key(path: Path) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) to `path`, refusing to overwrite;
    return the public key (PEM)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{path} exists; not overwriting a key") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_pem(key.public_key())


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The signed bytes: the manifest without `signature`, canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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


@dataclass
class Package:
    """The files of a package, in memory, and what the caller may need afterwards."""

    files: dict[str, bytes] = field(default_factory=dict)
    salt: bytes | None = None
    roots: list[dict[str, Any]] = field(default_factory=list)


# --- building -------------------------------------------------------------------------
def build_package(data: PackageInput, key: Ed25519PrivateKey, *, pseudonymize: bool,
                  nonce: Callable[[], bytes] = system_nonce,
                  salt: bytes | None = None) -> Package:
    """Return every file of the package (pure apart from `nonce`/`salt` randomness)."""
    from daemon.report import render_report

    salt = (salt or secrets.token_bytes(32)) if pseudonymize else None
    pins = {c.name: c for c in data.chains}
    wallet_rows = _wallet_rows(data, pins)
    allocation_rows, trees = _allocations(data.wallets, salt, nonce)
    liabilities = [{"chain": chain, "asset": asset, "root": tree.root_hash,
                    "total": str(tree.total), "leaves": len(tree.leaves)}
                   for (chain, asset), tree in sorted(trees.items())]
    files = {
        "wallets.csv": _csv(WALLET_COLUMNS, wallet_rows),
        "allocations.csv": _csv(ALLOCATION_COLUMNS, allocation_rows),
        "discrepancies.csv": _csv(DISCREPANCY_COLUMNS, data.discrepancies),
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "generator": {"name": "segwatch", "version": __version__},
        "generated_at": _iso(data.generated_at), "as_of": _iso(data.as_of),
        "pseudonymized": pseudonymize,
        "chains": [{"name": c.name, "family": c.family, "chain_id": c.chain_id,
                    "network": c.network,
                    "block": {"height": c.height, "hash": c.hash, "timestamp": c.timestamp},
                    "sources": list(c.sources)} for c in data.chains],
        "liabilities": liabilities,
    }
    files["report.html"] = render_report(
        manifest, wallet_rows, [dict(d) for d in data.discrepancies],
        dict(data.decimals)).encode()
    manifest["files"] = {name: hashlib.sha256(files[name]).hexdigest() for name in FILES}
    signature = key.sign(canonical(manifest))
    manifest["signature"] = {"algorithm": "ed25519",
                             "public_key": public_pem(key.public_key()),
                             "value": base64.b64encode(signature).decode()}
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True,
                                         ensure_ascii=False) + "\n").encode()
    return Package(files, salt, liabilities)


def _wallet_rows(data: PackageInput, pins: Mapping[str, ChainPin]) -> list[dict[str, str]]:
    rows = []
    for wallet in sorted(data.wallets, key=lambda w: (w.chain, w.address)):
        pin = pins[wallet.chain]
        network = str(pin.chain_id if pin.chain_id is not None else pin.network)
        for asset in data.assets.get(wallet.chain, ()):
            total = sum(wallet.allocations.get(asset, {}).values())
            onchain = pin.balances.get((wallet.address, asset))
            difference = None if onchain is None else onchain - total
            rows.append({"chain": wallet.chain, "network": network, "address": wallet.address,
                         "structure": wallet.structure, "asset": asset,
                         "onchain": "" if onchain is None else str(onchain),
                         "allocation_total": str(total),
                         "difference": "" if difference is None else str(difference),
                         "status": wallet_status(wallet.structure, onchain, total)})
    return rows


def wallet_status(structure: str, onchain: int | None, total: int) -> str:
    """`unreadable`, `ok`, `shortfall` or `surplus` (house wallets: `house`)."""
    if onchain is None:
        return "unreadable"
    if structure == "house":
        return "house"
    return "ok" if onchain == total else ("shortfall" if onchain < total else "surplus")


def _allocations(wallets: Sequence[WalletLedger], salt: bytes | None,
                 nonce: Callable[[], bytes]
                 ) -> tuple[list[dict[str, str]], dict[tuple[str, str], MerkleSumTree]]:
    rows: list[dict[str, str]] = []
    leaves: dict[tuple[str, str], list[Leaf]] = defaultdict(list)
    for wallet in sorted(wallets, key=lambda w: (w.chain, w.address)):
        for asset, owners in sorted(wallet.allocations.items()):
            for owner, amount in sorted(owners.items()):
                leaf = Leaf(wallet.chain, asset, owner_ref(owner, salt), amount, nonce().hex())
                leaves[(wallet.chain, asset)].append(leaf)
                rows.append({"chain": wallet.chain, "address": wallet.address, "asset": asset,
                             "owner_ref": leaf.owner_ref, "amount": str(amount),
                             "nonce": leaf.nonce, "leaf_hash": leaf.hash})
    return rows, {key: build(items) for key, items in leaves.items()}


def _csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue().encode()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, content in sorted(package.files.items()):
                    zf.writestr(name, content)
            os.replace(target, out)
        else:
            folder = work / "package"
            folder.mkdir()
            for name, content in package.files.items():
                (folder / name).write_bytes(content)
            if out.exists():
                out.rmdir()  # empty (checked)
            os.replace(folder, out)
        if package.salt is not None:
            salt_file = out.with_name(out.name + SALT_SUFFIX)
            fd = os.open(salt_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(package.salt.hex() + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_package(path: Path) -> dict[str, bytes]:
    """Return the files of a package directory or .zip. Raises InputError."""
    try:
        if path.is_dir():
            return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name in zf.namelist() if not name.endswith("/")}
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable package ({exc})") from None


# --- verifying --------------------------------------------------------------------------
def verify_package(files: Mapping[str, bytes], trusted_key: str | None = None) -> list[str]:
    """Return every problem found (empty: the package holds): file hashes, the signature
    (and, with `trusted_key`, that the manifest was signed by it), every leaf hash, the
    roots and totals recomputed from allocations.csv, and wallets.csv against them."""
    problems: list[str] = []
    try:
        manifest = json.loads(files["manifest.json"])
    except (KeyError, ValueError) as exc:
        return [f"manifest.json: missing or not JSON ({type(exc).__name__})"]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return ["manifest.json: not a segwatch export manifest"]
    problems += _check_signature(manifest, trusted_key)
    listed = manifest.get("files") or {}
    for name in FILES:
        if name not in files:
            problems.append(f"{name}: missing")
        elif hashlib.sha256(files[name]).hexdigest() != listed.get(name):
            problems.append(f"{name}: SHA-256 differs from the manifest (the file was altered)")
    for name in sorted(set(files) - set(FILES) - {"manifest.json"}):
        problems.append(f"{name}: not listed in the manifest")
    allocations = _rows(files, "allocations.csv", ALLOCATION_COLUMNS, problems)
    wallets = _rows(files, "wallets.csv", WALLET_COLUMNS, problems)
    problems += _check_liabilities(manifest, allocations)
    problems += _check_wallets(wallets, allocations)
    return problems


def _check_signature(manifest: Mapping[str, Any], trusted_key: str | None) -> list[str]:
    signature = manifest.get("signature")
    if not isinstance(signature, dict) or signature.get("algorithm") != "ed25519":
        return ["manifest.json: no Ed25519 signature"]
    try:
        key = serialization.load_pem_public_key(str(signature.get("public_key", "")).encode())
        if not isinstance(key, Ed25519PublicKey):
            return ["manifest.json: the signature's key is not an Ed25519 key"]
        key.verify(base64.b64decode(str(signature.get("value", "")), validate=True),
                   canonical(manifest))
    except (ValueError, TypeError, InvalidSignature):
        return ["manifest.json: the signature does not match the manifest (altered or forged)"]
    if trusted_key is not None and public_pem(key).strip() != trusted_key.strip():
        return ["manifest.json: signed by another key than the trusted one"]
    return []


def _rows(files: Mapping[str, bytes], name: str, columns: Sequence[str],
          problems: list[str]) -> list[dict[str, str]]:
    if name not in files:
        return []
    try:
        reader = csv.DictReader(io.StringIO(files[name].decode()))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{name}: unreadable ({exc})")
        return []
    if tuple(reader.fieldnames or ()) != tuple(columns):
        problems.append(f"{name}: columns are not {', '.join(columns)}")
        return []
    return rows


def _check_liabilities(manifest: Mapping[str, Any],
                       allocations: Sequence[Mapping[str, str]]) -> list[str]:
    problems: list[str] = []
    leaves: dict[tuple[str, str], list[Leaf]] = defaultdict(list)
    for n, row in enumerate(allocations, start=2):
        try:
            leaf = Leaf(row["chain"], row["asset"], row["owner_ref"], int(row["amount"]),
                        row["nonce"])
        except (ValueError, KeyError) as exc:
            problems.append(f"allocations.csv line {n}: malformed ({exc})")
            continue
        if leaf.hash != row["leaf_hash"]:
            problems.append(f"allocations.csv line {n}: leaf_hash does not match the line")
        leaves[(leaf.chain, leaf.asset)].append(leaf)
    published = {(r.get("chain"), r.get("asset")): r for r in manifest.get("liabilities", [])}
    for key in sorted(set(published) | set(leaves), key=str):
        root = published.get(key)
        if root is None:
            problems.append(f"allocations.csv: {key[0]} {key[1]} has no root in the manifest")
            continue
        if key not in leaves:
            problems.append(f"manifest: root for {key[0]} {key[1]} but no allocations")
            continue
        try:
            tree = build(leaves[key])
        except ValueError as exc:
            problems.append(f"allocations.csv: {key[0]} {key[1]}: {exc}")
            continue
        if (tree.root_hash, str(tree.total), len(tree.leaves)) != (
                root.get("root"), root.get("total"), root.get("leaves")):
            problems.append(f"{key[0]} {key[1]}: the Merkle root or total recomputed from "
                            "allocations.csv differs from the manifest")
    return problems


def _check_wallets(wallets: Sequence[Mapping[str, str]],
                   allocations: Sequence[Mapping[str, str]]) -> list[str]:
    totals: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in allocations:
        try:
            totals[(row["chain"], row["address"], row["asset"])] += int(row["amount"])
        except (KeyError, ValueError):
            continue  # reported by the liabilities check
    problems: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for n, row in enumerate(wallets, start=2):
        key = (row["chain"], row["address"], row["asset"])
        seen.add(key)
        try:
            total = int(row["allocation_total"])
            onchain = int(row["onchain"]) if row["onchain"] else None
            difference = int(row["difference"]) if row["difference"] else None
        except ValueError:
            problems.append(f"wallets.csv line {n}: malformed amounts")
            continue
        if total != totals.get(key, 0):
            problems.append(f"wallets.csv line {n}: allocation_total {total} but allocations.csv "
                            f"sums to {totals.get(key, 0)}")
        if (onchain is None) != (difference is None) or (
                onchain is not None and difference != onchain - total):
            problems.append(f"wallets.csv line {n}: difference is not onchain - allocation_total")
        if row["status"] != wallet_status(row["structure"], onchain, total):
            problems.append(f"wallets.csv line {n}: status {row['status']!r} does not follow "
                            "from its amounts")
    for key in sorted(set(totals) - seen):
        problems.append(f"allocations.csv: {key} has no line in wallets.csv")
    return problems


# --- proofs -----------------------------------------------------------------------------
def owner_proofs(files: Mapping[str, bytes], owner: str, salt: bytes | None
                 ) -> list[dict[str, Any]]:
    """Return `owner`'s inclusion proofs (one per allocation line), each with the root the
    manifest publishes. Raises InputError when the owner has no allocation."""
    manifest = json.loads(files["manifest.json"])
    ref = owner_ref(owner, salt) if manifest.get("pseudonymized") else owner
    problems: list[str] = []
    allocations = _rows(files, "allocations.csv", ALLOCATION_COLUMNS, problems)
    if problems:
        raise InputError("; ".join(problems))
    leaves: dict[tuple[str, str], list[Leaf]] = defaultdict(list)
    for row in allocations:
        leaves[(row["chain"], row["asset"])].append(
            Leaf(row["chain"], row["asset"], row["owner_ref"], int(row["amount"]), row["nonce"]))
    proofs = []
    for _key, items in sorted(leaves.items()):
        tree = build(items)
        proofs += [p.to_json() for p in tree.proofs_for(ref)]
    if not proofs:
        raise InputError(f"owner {owner!r} has no allocation in this package"
                         + (" (pseudonymized: is the salt file the package's?)"
                            if manifest.get("pseudonymized") else ""))
    return proofs
