"""The auditor package with reconciling items (SPEC §8) on a real store (SQLite and
PostgreSQL) with a fake source: books cut an hour before the export, an approved
withdrawal (and its fee) mined after the cut-off at or below the pinned block, and a
deposit the books booked that is mined above the pinned block.

wallets.csv books the allocations, carries the items' net in transit and expects their
sum, and the on-chain balance matches the expected one (difference 0, ok); in_transit.csv
and the report list every item; the package verifies; an item a signer moved past the
pinned block or the cut-off, or added for a wallet the package does not hold, is caught.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, select

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from chains.types import ChainHead
from daemon.bootstrap import open_store
from daemon.export.package import SIGNATURE, read_package
from daemon.export.service import export
from daemon.export.signing import fingerprint, raw_public, sign
from daemon.export.verify import verify_package
from daemon.inputs.config import Settings
from daemon.service import Service
from daemon.store import models as m
from daemon.store.db import make_engine, upgrade
from tests.principals import AUDITOR, FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)
OMNI = canonical_evm_address("0x" + "b2" * 20)
OUTSIDE = canonical_evm_address("0x" + "ee" * 20)
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
CUT_OFF = NOW - timedelta(hours=1)
ETH = 10**18
WITHDRAWN, FEE, DEPOSIT = 3 * ETH // 10, ETH // 1000, ETH
PINNED = 98
"""Head 100, two confirmations."""


@pytest.fixture
def service(store_url: str, tmp_path: Path) -> Service:
    """Alice is booked 2 ETH and holds 2 - 0.3 - 0.001 at the pinned block: her approved
    0.3 ETH withdrawal (block 97, 10 minutes after the cut-off) and its fee are not booked
    yet. The omnibus wallet is booked 5 ETH and holds 4: the books have a 1 ETH deposit
    (10 minutes before the cut-off) mined in block 100, above the pinned block."""
    fake = FakeAdapter(head_block=ChainHead(100, "0x" + "ab" * 32, int(NOW.timestamp()) - 5),
                       balances_by_key={(ALICE, "ETH"): 2 * ETH - WITHDRAWN - FEE,
                                        (OMNI, "ETH"): 4 * ETH})
    settings = Settings(store={"url": store_url}, chains=[{
        "name": "ethereum", "family": "evm", "chain_id": 1, "confirmations": 2,
        "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}]}])
    upgrade(make_engine(store_url))
    svc = Service(settings, open_store(store_url), lambda _c, _s: fake, lambda: NOW)
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n"
                      f"ethereum,{ALICE},segregated,alice,ETH,2\n"
                      f"ethereum,{OMNI},omnibus,bob,ETH,2\n"
                      f"ethereum,{OMNI},omnibus,carol,ETH,3\n")
    svc.import_ledger(ledger, dry_run=False, actor=FEEDER, as_of=CUT_OFF)
    after, before = CUT_OFF + timedelta(minutes=10), CUT_OFF - timedelta(minutes=10)
    with Session(svc.store.engine) as session:
        chain_id = session.exec(select(m.Chain.id)).one()
        assert chain_id is not None
        approved = m.ApprovedWithdrawal(ext_id="W-1", chain_id=chain_id, from_address=ALICE,
                                        to_address=OUTSIDE, asset="ETH", amount=WITHDRAWN,
                                        approved_by="checker", approved_at=CUT_OFF,
                                        tx_hash="0xw1", imported_at=CUT_OFF)
        session.add(approved)
        session.flush()
        session.add(m.Transfer(chain_id=chain_id, key="0xw1:native:-1:", kind="native",
                               block_number=97, block_hash="0x" + "97" * 32, tx_hash="0xw1",
                               sender=ALICE, recipient=OUTSIDE, asset="ETH", amount=WITHDRAWN,
                               seen_at=NOW, block_time=after, withdrawal_id=approved.id))
        session.add(m.FeePaid(chain_id=chain_id, block_number=97, block_hash="0x" + "97" * 32,
                              tx_hash="0xw1", payer=ALICE, amount=FEE, success=True,
                              block_time=after))
        session.add(m.Transfer(chain_id=chain_id, key="0xd2:native:-1:", kind="native",
                               block_number=100, block_hash="0x" + "ab" * 32, tx_hash="0xd2",
                               sender=OUTSIDE, recipient=OMNI, asset="ETH", amount=DEPOSIT,
                               seen_at=NOW, block_time=before))
        session.commit()
    return svc


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def rows(files: dict[str, bytes], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files[name].decode())))


def resign(files: dict[str, bytes], key: Ed25519PrivateKey, change: dict[str, object]) -> None:
    """What the holder of the signing key can do: edit, list the new hashes, sign again."""
    manifest = json.loads(files["manifest.json"])
    manifest.update(change)
    manifest["files"] = {n: hashlib.sha256(files[n]).hexdigest() for n in manifest["files"]}
    manifest["signer"] = {"algorithm": "ed25519", "fingerprint": fingerprint(key.public_key()),
                          "public_key": raw_public(key.public_key()).hex()}
    files["manifest.json"] = json.dumps(manifest).encode()
    files[SIGNATURE] = sign(key, files["manifest.json"])


def edit_csv(files: dict[str, bytes], name: str, change: list[dict[str, str]]) -> None:
    header = files[name].decode().splitlines()[0].split(",")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(change)
    files[name] = buffer.getvalue().encode()


def packaged(service: Service, key: Ed25519PrivateKey, tmp_path: Path) -> dict[str, bytes]:
    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR)
    return read_package(out)


def test_wallets_book_carry_in_transit_and_expect_what_the_chain_holds(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    """Alice: booked 2, in transit -0.301 (the withdrawal and its fee, unbooked), expected
    1.699 = on-chain, difference 0, ok. The omnibus wallet: booked 5, in transit -1 (the
    deposit the books have ahead of the pinned block), expected 4 = on-chain, ok. The
    manifest names the books' cut-off and the package verifies."""
    files = packaged(service, key, tmp_path)
    wallets = {r["address"]: r for r in rows(files, "wallets.csv")}
    columns = ("allocation_total", "in_transit", "expected", "onchain", "difference", "status")
    assert tuple(wallets[ALICE][c] for c in columns) == (
        str(2 * ETH), str(-WITHDRAWN - FEE), str(2 * ETH - WITHDRAWN - FEE),
        str(2 * ETH - WITHDRAWN - FEE), "0", "ok")
    assert tuple(wallets[OMNI][c] for c in columns) == (
        str(5 * ETH), str(-DEPOSIT), str(4 * ETH), str(4 * ETH), "0", "ok")
    manifest = json.loads(files["manifest.json"])
    assert manifest["chains"][0]["block"]["height"] == PINNED
    assert datetime.fromisoformat(manifest["ledger"]["as_of"]).replace(tzinfo=UTC) == CUT_OFF
    assert verify_package(files, {fingerprint(key.public_key())}) == []


def test_in_transit_csv_and_the_report_list_every_item(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    """in_transit.csv holds the withdrawal, its fee (both unbooked, out) and the deposit
    (ahead, in); the report lists each with its wallet, transaction, direction, amount in
    ETH, block, block time and age at the as-of time (50 and 70 minutes)."""
    files = packaged(service, key, tmp_path)
    items = sorted((r["address"], r["what"], r["direction"], r["amount"], r["side"],
                    r["block"], r["tx_hash"]) for r in rows(files, "in_transit.csv"))
    assert items == sorted([
        (ALICE, "transfer", "out", str(WITHDRAWN), "unbooked", "97", "0xw1"),
        (ALICE, "fee", "out", str(FEE), "unbooked", "97", "0xw1"),
        (OMNI, "transfer", "in", str(DEPOSIT), "ahead", "100", "0xd2")])
    page = files["report.html"].decode()
    section = page[page.index("Reconciling items (in transit)"):].split("</section>")[0]
    withdrawal = next(r for r in section.split("<tr>") if "0xw1" in r and "transfer" in r)
    assert ALICE in withdrawal and ">out<" in withdrawal and ">0.3<" in withdrawal
    assert ">97<" in withdrawal and "2026-11-20 14:10:00 UTC" in withdrawal
    assert ">50m 0s<" in withdrawal and ">unbooked<" in withdrawal
    deposit = next(r for r in section.split("<tr>") if "0xd2" in r)
    assert OMNI in deposit and ">in<" in deposit and ">1<" in deposit and ">ahead<" in deposit
    assert ">1h 10m<" in deposit
    assert "Items per chain: ethereum 3." in section


def test_an_item_placed_against_its_block_or_the_cut_off_is_caught(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    """Re-signed by the package's own key: an unbooked item moved above the pinned block,
    an ahead one moved after the cut-off, an item for a wallet the package does not hold,
    and a manifest without the books' cut-off are each named (the wallet lines still
    follow from the items' amounts: only the placement gives them away)."""
    files = packaged(service, key, tmp_path)
    trusted = {fingerprint(key.public_key())}
    items = rows(files, "in_transit.csv")

    def verify_with(change: list[dict[str, str]], manifest: dict[str, object] | None = None
                    ) -> list[str]:
        forged = dict(files)
        edit_csv(forged, "in_transit.csv", change)
        resign(forged, key, manifest or {})
        return verify_package(forged, trusted)

    moved = [{**r, "block": "99"} if r["side"] == "unbooked" and r["what"] == "fee" else r
             for r in items]
    problems = verify_with(moved)
    assert len(problems) == 1 and "unbooked item in block 99" in problems[0], problems
    late = [{**r, "block_time": NOW.isoformat()} if r["side"] == "ahead" else r for r in items]
    problems = verify_with(late)
    assert len(problems) == 1 and "ahead item in block 100" in problems[0], problems
    stranger = {**items[0], "address": OUTSIDE, "direction": "in"}
    problems = verify_with([*items, stranger])
    assert len(problems) == 1 and "has no line in wallets.csv" in problems[0], problems
    manifest = json.loads(files["manifest.json"])
    manifest.pop("ledger")
    forged = dict(files)
    forged["manifest.json"] = json.dumps(manifest).encode()
    resign(forged, key, {})
    problems = verify_package(forged, trusted)
    assert len(problems) == 3 and all("no books' cut-off" in p for p in problems), problems


def test_books_imported_while_exporting_are_gathered_again(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Books imported between reading the ledger and naming it in the manifest would make
    a package whose wallets and items follow other books than the ones it names: the
    export gathers everything again, and the package names the books it used."""
    ledger = tmp_path / "later.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n"
                      f"ethereum,{ALICE},segregated,alice,ETH,1.699\n"
                      f"ethereum,{OMNI},omnibus,bob,ETH,2\n"
                      f"ethereum,{OMNI},omnibus,carol,ETH,3\n")
    store = service.store
    real = store.ledger_view
    calls: list[int] = []

    def import_during_the_first(chain: str, as_of: datetime | None = None):  # type: ignore[no-untyped-def]
        view = real(chain, as_of)
        calls.append(1)
        if len(calls) == 1:
            service.import_ledger(ledger, dry_run=False, actor=FEEDER,
                                  as_of=CUT_OFF + timedelta(minutes=30))
        return view

    monkeypatch.setattr(store, "ledger_view", import_during_the_first)
    files = packaged(service, key, tmp_path)
    assert len(calls) == 2
    wallets = {r["address"]: r for r in rows(files, "wallets.csv")}
    # the later books have the withdrawal and its fee: nothing of alice's is in transit
    assert (wallets[ALICE]["allocation_total"], wallets[ALICE]["in_transit"],
            wallets[ALICE]["status"]) == (str(2 * ETH - WITHDRAWN - FEE), "0", "ok")
    manifest = json.loads(files["manifest.json"])
    assert datetime.fromisoformat(manifest["ledger"]["as_of"]).replace(tzinfo=UTC) == \
        CUT_OFF + timedelta(minutes=30)
    assert verify_package(files, {fingerprint(key.public_key())}) == []
