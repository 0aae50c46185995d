"""The export use cases over the service: gather the pinned balances, the ledger and
the findings, then build, write, verify (with `--recheck`) or prove (daemon/export/package.py,
daemon/export/verify.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chains.errors import DecodeError, SourceUnavailable
from chains.types import Address, ChainHead
from daemon.auth.policy import Principal
from daemon.cli.present import discrepancy_json
from daemon.errors import InputError
from daemon.export.package import (
    ChainPin,
    Package,
    PackageInput,
    WalletLedger,
    build_package,
    check_destination,
    write_package,
)
from daemon.export.pinning import pinned_balances
from daemon.inputs.chain_settings import ChainSettings
from daemon.service import Service
from daemon.store.heads import current as current_head

log = structlog.get_logger("segwatch")
CLOCK_SKEW = timedelta(minutes=2)
GATHER_ATTEMPTS = 3
"""Books imported while a package is gathered would leave its wallets, items and manifest
naming different snapshots: it is gathered again, at most this many times in all."""


def export(service: Service, out: Path, key: Ed25519PrivateKey, *, actor: Principal | None,
           as_of: datetime | None = None, pseudonymize: bool = True) -> Package:
    """Build the package of every configured chain and write it to `out` (all or nothing),
    as `actor` (the auditor role; the export is audited). Each wallet line books the
    snapshot current at `as_of` (default: now) and carries the reconciling items' net at
    the chain's pinned block: expected = booked + in_transit, difference = onchain -
    expected (daemon/export/package.py).

    Raises Unauthenticated or Forbidden without an auditor, InputError (bad destination,
    `as_of` in the future or before the first observation, a block a source cannot
    reach, books imported during every attempt to gather), SourceUnavailable, DecodeError.
    """
    who = service.identity.require(actor, "export", "exporting a package")
    check_destination(out)
    now = service.now()
    if as_of is not None:
        if as_of > now + CLOCK_SKEW:
            raise InputError(f"--as-of {as_of.isoformat()} is in the future")
        first = service.store.first_observation_at()
        if first is None or as_of < first:
            raise InputError(f"--as-of {as_of.isoformat()} is before the store's first "
                             f"observation ({first.isoformat() if first else 'none yet'})")
    moment = as_of or now
    for _attempt in range(GATHER_ATTEMPTS):
        books = service.store.snapshot_at(as_of)
        pins, wallets = _gather(service, as_of, moment)
        if service.store.snapshot_at(as_of) == books:
            break
        log.warning("export_books_changed", snapshot=books)
    else:
        raise InputError("new books were imported while exporting, each of "
                         f"{GATHER_ATTEMPTS} times: export again")
    open_then = [_discrepancy_row(r.chain, discrepancy_json(r, moment))
                 for r in service.store.discrepancies()
                 if r.row.detected_at <= moment and (r.row.closed_at is None
                                                     or r.row.closed_at > moment)]
    data = PackageInput(
        generated_at=now, as_of=moment, chains=pins, wallets=wallets,
        discrepancies=open_then,
        decimals={(c.name, a.symbol): a.decimals for c in service.settings.chains
                  for a in c.assets},
        assets={c.name: [a.symbol for a in c.assets] for c in service.settings.chains},
        audit_head=_audit_head(service), ledger=books)
    package = build_package(data, key, pseudonymize=pseudonymize)
    write_package(package, out)
    service.identity.store.audit(who.name, "exported", {
        "package": out.name, "pseudonymized": pseudonymize, "as_of": moment.isoformat(),
        "manifest_sha256": hashlib.sha256(package.files["manifest.json"]).hexdigest()},
        service.now())
    service.sign_head()
    log.info("exported", out=str(out), chains=len(pins), wallets=len(wallets),
             allocations=sum(r["leaves"] for r in package.roots))
    return package


def _gather(service: Service, as_of: datetime | None, moment: datetime
            ) -> tuple[list[ChainPin], list[WalletLedger]]:
    """Each chain's pinned block, its balances and its reconciling items (SPEC §8: the
    transfers booked on one side only, for the books the package exports, at the pinned
    block; their age at `moment`), and the wallets of those books."""
    pins: list[ChainPin] = []
    wallets: list[WalletLedger] = []
    for chain in service.settings.chains:
        ledger = service.store.ledger_view(chain.name, as_of)
        addresses = sorted(ledger.wallets)
        pin = _pin(service, chain, addresses, as_of=as_of)
        items = service.store.reconciling_items(ledger, pin.height, chain.native_asset.symbol)
        pins.append(dataclasses.replace(pin, items=tuple(i.as_json(moment) for i in items)))
        wallets += [WalletLedger(chain.name, w.address, w.structure,
                                 {a: dict(o) for a, o in w.allocations.items()})
                    for w in ledger.wallets.values()]
    return pins, wallets


def _audit_head(service: Service) -> dict[str, Any] | None:
    head = service.sign_head() or current_head(service.store.engine)
    return head.as_json() if head else None


def _pin(service: Service, chain: ChainSettings, addresses: list[Address], *,
         as_of: datetime | None = None, height: int | None = None) -> ChainPin:
    adapter = service.connect(chain)
    try:
        block, observations = pinned_balances(adapter, chain, service.store, addresses,
                                              height=height, as_of=as_of)
    finally:
        adapter.close()
    balances: dict[tuple[str, str], int | None] = {
        (o.address, o.asset.symbol): o.amount for o in observations}
    sources: tuple[str, ...] = (adapter.source,)
    if chain.verify >= 2:
        second, theirs = _second_read(service, chain, adapter.source, addresses, block)
        sources += (second,)
        balances = {pair: amount if amount is not None and theirs.get(pair) == amount
                    else None for pair, amount in balances.items()}
    return ChainPin(chain.name, chain.family, chain.chain_id, chain.network, block.height,
                    block.hash, block.timestamp, sources, balances)


def _second_read(service: Service, chain: ChainSettings, first: str,
                 addresses: list[Address], block: ChainHead
                 ) -> tuple[str, dict[tuple[str, str], int | None]]:
    """`verify = 2`: the same balances at the same block (same hash) from the next source
    that can read them, as (its name, balances); a pair it reads otherwise, or every pair
    when no other source can read the block, is then unreadable in the package (fail
    closed: never `ok` on one source's word). Returns ("none", {}) without a reader."""
    for source in chain.sources:
        try:
            adapter = service.connect(chain, source)
        except SourceUnavailable as exc:
            log.warning("export_second_source_failed", chain=chain.name, error=exc.user_message)
            continue
        try:
            if adapter.source == first:
                continue
            pinned, observations = pinned_balances(adapter, chain, service.store, addresses,
                                                   height=block.height)
            if pinned.hash != block.hash:
                log.warning("export_sources_disagree", chain=chain.name, block=block.height)
                return adapter.source, {}
            return adapter.source, {(o.address, o.asset.symbol): o.amount
                                    for o in observations}
        except (SourceUnavailable, DecodeError) as exc:
            log.warning("export_second_source_failed", chain=chain.name, error=exc.user_message)
        finally:
            adapter.close()
    return "none", {}


def _discrepancy_row(chain: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    return {**doc, "chain": chain}


def recheck(service: Service, files: Mapping[str, bytes]) -> list[str]:
    """Re-read every wallet's balance at each pinned block from the configured sources
    and compare with wallets.csv; return the differences (and unreachable chains)."""
    import csv
    import io

    manifest = json.loads(files["manifest.json"])
    rows = list(csv.DictReader(io.StringIO(files["wallets.csv"].decode())))
    problems: list[str] = []
    for pinned in manifest.get("chains", []):
        chain = service.settings.chain(pinned["name"])
        if chain is None:
            problems.append(f"--recheck: chain {pinned['name']!r} is not configured here")
            continue
        mine = [r for r in rows if r["chain"] == chain.name]
        addresses = sorted({Address(r["address"]) for r in mine})
        pin = _pin(service, chain, addresses, height=pinned["block"]["height"])
        if pin.hash != pinned["block"]["hash"]:
            problems.append(f"{chain.name}: block {pin.height} is now {pin.hash}, the package "
                            f"pinned {pinned['block']['hash']} (reorganized?)")
            continue
        for row in mine:
            now = pin.balances.get((row["address"], row["asset"]))
            if ("" if now is None else str(now)) != row["onchain"]:
                problems.append(f"{chain.name} {row['address']} {row['asset']}: the source "
                                f"reads {now} at block {pin.height}, wallets.csv says "
                                f"{row['onchain'] or 'unreadable'}")
    return problems

