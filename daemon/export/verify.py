"""Verify an auditor proof package (SPEC §6) and prove one owner's share in it.

`verify_package` recomputes what a package claims from its own files, as an auditor
would, and returns every problem found: the manifest's exact bytes and their detached
signature by a trusted signer (daemon/export/signing.py), every listed file's SHA-256,
the leaf hashes and the Merkle-sum roots and totals over `allocations.csv`
(daemon/rules/merkle.py), every `wallets.csv` line against them and `in_transit.csv`,
and every reconciling item against the pinned blocks and the books' cut-off.
`owner_proofs` gives one owner's inclusion proofs. The format, and how a package is
built, written and read, are in daemon/export/package.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from daemon.errors import InputError
from daemon.export import signing
from daemon.export.package import (
    ALLOCATION_COLUMNS,
    FILES,
    FORMAT,
    SIGNATURE,
    TRANSIT_COLUMNS,
    WALLET_COLUMNS,
    leaf_ref,
    parse_instant,
    transit_net,
    wallet_status,
)
from daemon.rules.merkle import Leaf, build


# --- verifying --------------------------------------------------------------------------
def verify_package(files: Mapping[str, bytes], trusted: Iterable[str] = ()) -> list[str]:
    """Return every problem found (empty: the package holds): the manifest parses
    without duplicate keys, its detached signature covers its exact bytes and comes from
    a `trusted` signer (fingerprints; a valid signature by another key is UNTRUSTED),
    exactly the listed files are present with their hashes, every leaf hash, the roots
    and totals recomputed from allocations.csv, every wallets.csv line against them and
    in_transit.csv (booked, in transit, expected, difference = onchain - expected, status),
    and every reconciling item against the pinned blocks and the books' cut-off."""
    problems: list[str] = []
    try:
        manifest = signing.strict_json(files["manifest.json"])
    except KeyError:
        return ["manifest.json: missing"]
    except signing.DuplicateKey as exc:
        return [f"manifest.json: {exc} (a second member could say something else)"]
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"manifest.json: not JSON ({type(exc).__name__})"]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        return [f"manifest.json: format {found!r} is not {FORMAT} (older packages were not "
                "signed over their exact bytes: export again)"]
    problems += _check_signer(manifest, files, trusted)
    listed = manifest.get("files") or {}
    if not isinstance(listed, dict) or set(listed) != set(FILES):
        problems.append(f"manifest.json: lists {sorted(listed)} instead of {list(FILES)}")
    for name in FILES:
        if name not in files:
            problems.append(f"{name}: missing")
        elif hashlib.sha256(files[name]).hexdigest() != listed.get(name):
            problems.append(f"{name}: SHA-256 differs from the manifest (the file was altered)")
    for name in sorted(set(files) - set(FILES) - {"manifest.json", SIGNATURE}):
        problems.append(f"{name}: not listed in the manifest")
    allocations = _rows(files, "allocations.csv", ALLOCATION_COLUMNS, problems)
    wallets = _rows(files, "wallets.csv", WALLET_COLUMNS, problems)
    transit = _rows(files, "in_transit.csv", TRANSIT_COLUMNS, problems)
    problems += _check_liabilities(manifest, allocations)
    try:
        net = transit_net(transit)
    except (ValueError, KeyError) as exc:
        problems.append(f"in_transit.csv: malformed line ({exc})")
        net = {}
    problems += _check_wallets(wallets, allocations, net)
    problems += _check_items(manifest, transit, wallets)
    return problems


def _check_signer(manifest: Mapping[str, Any], files: Mapping[str, bytes],
                  trusted: Iterable[str]) -> list[str]:
    signer = manifest.get("signer")
    if not isinstance(signer, dict) or signer.get("algorithm") != "ed25519" or \
            not isinstance(signer.get("public_key"), str):
        return ["manifest.json: names no Ed25519 signer"]
    if SIGNATURE not in files:
        return [f"{SIGNATURE}: missing (the package is unsigned)"]
    problem = signing.check_signature(files["manifest.json"], files[SIGNATURE],
                                      signer["public_key"], trusted)
    return [problem] if problem else []


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
                   allocations: Sequence[Mapping[str, str]],
                   net: Mapping[tuple[str, str, str], int]) -> list[str]:
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
            moving, expected = int(row["in_transit"]), int(row["expected"])
            onchain = int(row["onchain"]) if row["onchain"] else None
            difference = int(row["difference"]) if row["difference"] else None
        except ValueError:
            problems.append(f"wallets.csv line {n}: malformed amounts")
            continue
        if total != totals.get(key, 0):
            problems.append(f"wallets.csv line {n}: allocation_total {total} but allocations.csv "
                            f"sums to {totals.get(key, 0)}")
        if moving != net.get(key, 0) or expected != total + moving:
            problems.append(f"wallets.csv line {n}: in_transit {moving} / expected {expected} "
                            f"do not follow from in_transit.csv ({net.get(key, 0)}) and "
                            "allocation_total")
        if (onchain is None) != (difference is None) or (
                onchain is not None and difference != onchain - expected):
            problems.append(f"wallets.csv line {n}: difference is not onchain - expected")
        if row["status"] != wallet_status(row["structure"], onchain, expected):
            problems.append(f"wallets.csv line {n}: status {row['status']!r} does not follow "
                            "from its amounts")
    for key in sorted(set(totals) - seen):
        problems.append(f"allocations.csv: {key} has no line in wallets.csv")
    return problems


def _check_items(manifest: Mapping[str, Any], transit: Sequence[Mapping[str, str]],
                 wallets: Sequence[Mapping[str, str]]) -> list[str]:
    """Every reconciling item names a pinned chain and a wallets.csv line, and its side
    follows from its block and block time: unbooked at or below the chain's pinned block
    and after the books' cut-off (the manifest's `ledger.as_of`), ahead above the pinned
    block and at or before the cut-off, reorged (removed by a reorg) at or before it."""
    pinned: dict[str, Any] = {}
    for chain in manifest.get("chains") or []:
        if isinstance(chain, dict) and isinstance(chain.get("block"), dict):
            pinned[str(chain.get("name"))] = chain["block"].get("height")
    ledger = manifest.get("ledger")
    cut_off = parse_instant(ledger.get("as_of")) if isinstance(ledger, dict) else None
    lines = {(r.get("chain"), r.get("address"), r.get("asset")) for r in wallets}
    problems: list[str] = []
    for n, row in enumerate(transit, start=2):
        where = f"in_transit.csv line {n}"
        height = pinned.get(row["chain"])
        if not isinstance(height, int) or isinstance(height, bool):
            problems.append(f"{where}: chain {row['chain']!r} has no pinned block in the "
                            "manifest")
            continue
        if (row["chain"], row["address"], row["asset"]) not in lines:
            problems.append(f"{where}: {row['address']} {row['asset']} has no line in "
                            "wallets.csv")
        when = parse_instant(row["block_time"])
        try:
            block = int(row["block"])
        except ValueError:
            block = None
        if when is None or block is None:
            problems.append(f"{where}: malformed block or block_time")
            continue
        if cut_off is None:
            problems.append(f"{where}: an item, but the manifest names no books' cut-off "
                            "(ledger.as_of)")
            continue
        side = row["side"]
        if side not in ("unbooked", "ahead", "reorged"):
            continue  # reported as malformed by transit_net
        placed = (block <= height and when > cut_off) if side == "unbooked" else \
            (block > height and when <= cut_off) if side == "ahead" else when <= cut_off
        if not placed:
            problems.append(f"{where}: a {side} item in block {block} at {row['block_time']} "
                            f"does not follow from the pinned block {height} and the books' "
                            f"cut-off {ledger.get('as_of') if isinstance(ledger, dict) else ''}")
    return problems


# --- proofs -----------------------------------------------------------------------------
def owner_proofs(files: Mapping[str, bytes], owner: str, salt: bytes | None
                 ) -> list[dict[str, Any]]:
    """Return `owner`'s inclusion proofs (one per allocation line), each with the root the
    manifest publishes. Raises InputError when the owner has no allocation."""
    manifest = json.loads(files["manifest.json"])
    ref = leaf_ref(owner, salt if manifest.get("pseudonymized") else None)
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
