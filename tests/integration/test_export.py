"""The auditor package on a real store (SQLite and PostgreSQL) with fake sources:
export → verify holds; every tampering is caught and named; pseudonymized packages hold
no owner id; proofs verify for every owner and fail when altered; bad input is refused
with nothing written."""

from __future__ import annotations

import copy
import csv
import io
import json
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from chains.types import ChainHead
from daemon.bootstrap import open_store
from daemon.errors import InputError
from daemon.export.package import SIGNATURE, load_private_key, read_package
from daemon.export.service import export, recheck
from daemon.export.signing import fingerprint, generate_key, sign
from daemon.export.verify import owner_proofs, verify_package
from daemon.inputs.config import Settings
from daemon.rules.merkle import verify_proof
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.principals import AUDITOR, FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)
OMNI = canonical_evm_address("0x" + "b2" * 20)
HOUSE = canonical_evm_address("0x" + "c3" * 20)
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
ETH = 10**18
OWNERS = ("alice", "bob", "carol-the-client")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def service(store_url: str, tmp_path: Path) -> Service:
    fake = FakeAdapter(head_block=ChainHead(100, "0x" + "ab" * 32, int(NOW.timestamp()) - 5),
                       balances_by_key={(ALICE, "ETH"): 15 * ETH // 10,
                                        (ALICE, "USDC"): 100_000_000,
                                        (OMNI, "ETH"): 4 * ETH, (HOUSE, "ETH"): 7 * ETH})
    settings = Settings(store={"url": store_url}, chains=[{  # type: ignore[arg-type, list-item]
        "name": "ethereum", "family": "evm", "chain_id": 1, "confirmations": 2,
        "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}],
        "tokens": [{"symbol": "USDC", "contract": USDC, "decimals": 6}]}])
    upgrade(make_engine(store_url))
    svc = Service(settings, open_store(store_url), lambda _c, _s: fake, Clock())
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n"
                      f"ethereum,{ALICE},segregated,alice,ETH,1.5\n"
                      f"ethereum,{ALICE},segregated,alice,USDC,100\n"
                      f"ethereum,{OMNI},omnibus,bob,ETH,2\n"
                      f"ethereum,{OMNI},omnibus,carol-the-client,ETH,3\n"
                      f"ethereum,{HOUSE},house,FIRM,ETH,7\n")
    svc.import_ledger(ledger, dry_run=False, actor=FEEDER)
    assert svc.run_cycle(settings.chains[0]).error is None  # omni: 1 ETH shortfall
    return svc


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def trust(key: Ed25519PrivateKey) -> frozenset[str]:
    """The trusted signers: this key's fingerprint only."""
    return frozenset({fingerprint(key.public_key())})


def rows(files: dict[str, bytes], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files[name].decode())))


def test_export_then_verify_holds(service: Service, key: Ed25519PrivateKey,
                                  tmp_path: Path) -> None:
    """The package pins the block at confirmation depth, lists every wallet and asset with
    its status, one open discrepancy, one root per (chain, asset) whose total is the
    allocation total, and verifies clean."""
    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR)
    files = read_package(out)
    assert sorted(files) == ["allocations.csv", "discrepancies.csv", "in_transit.csv",
                             "manifest.json", "manifest.sig", "report.html", "wallets.csv"]
    assert verify_package(files, trust(key)) == []
    manifest = json.loads(files["manifest.json"])
    (chain,) = manifest["chains"]
    assert chain["block"]["height"] == 98 and chain["sources"] == ["fake://source"]
    totals = {(r["chain"], r["asset"]): r["total"] for r in manifest["liabilities"]}
    assert totals == {("ethereum", "ETH"): str(15 * ETH // 10 + 5 * ETH + 7 * ETH),
                      ("ethereum", "USDC"): "100000000"}
    statuses = {(r["address"], r["asset"]): r["status"] for r in rows(files, "wallets.csv")}
    assert statuses[(OMNI, "ETH")] == "shortfall" and statuses[(ALICE, "ETH")] == "ok"
    assert statuses[(HOUSE, "ETH")] == "house"
    (item,) = rows(files, "discrepancies.csv")
    assert (item["type"], item["address"]) == ("balance_shortfall", OMNI)
    html = files["report.html"].decode()
    assert "balance_shortfall" in html and "98" in html


def test_a_zip_package_verifies_and_proofs_hold_for_every_owner(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    """A .zip package verifies like a directory; each owner's proofs verify against the
    manifest's roots and totals, and fail with an altered amount or path."""
    out = tmp_path / "package.zip"
    export(service, out, key, actor=AUDITOR)
    files = read_package(out)
    assert verify_package(files, trust(key)) == []
    manifest = json.loads(files["manifest.json"])
    roots = {(r["chain"], r["asset"]): r for r in manifest["liabilities"]}
    salt = bytes.fromhex((tmp_path / "package.zip.owner-salt").read_text().strip())
    for owner in (*OWNERS, "FIRM"):
        for proof in owner_proofs(files, owner, salt):
            root = roots[(proof["chain"], proof["asset"])]
            assert verify_proof(proof, root["root"], int(root["total"])).ok
            lower = copy.deepcopy(proof)
            lower["leaf"]["amount"] = str(int(lower["leaf"]["amount"]) - 1)
            assert not verify_proof(lower, root["root"], int(root["total"])).ok
            if proof["path"]:
                moved = copy.deepcopy(proof)
                moved["path"][0]["sum"] = str(int(moved["path"][0]["sum"]) + 1)
                assert not verify_proof(moved, root["root"], int(root["total"])).ok
    with pytest.raises(InputError, match="no allocation"):
        owner_proofs(files, "mallory", salt)


def edit_csv_cell(files: dict[str, bytes], name: str, row: int, column: str,
                  value: str) -> None:
    table = rows(files, name)
    table[row][column] = value
    write_rows(files, name, table)


def write_rows(files: dict[str, bytes], name: str, table: list[dict[str, str]]) -> None:
    """Write `table` back as the CSV file `name` of the package (a forger's edit)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    files[name] = buffer.getvalue().encode()


def resign(files: dict[str, bytes], key: Ed25519PrivateKey, change: dict[str, object]) -> None:
    """Change the manifest, list the files' new hashes, name `key` as the signer and sign
    the new bytes with it: what the holder of a key can do (the original key: the
    recomputation still catches the edit; another key: the signer is not trusted)."""
    import hashlib

    from daemon.export.signing import raw_public

    manifest = json.loads(files["manifest.json"])
    manifest.update(change)
    manifest["files"] = {n: hashlib.sha256(files[n]).hexdigest() for n in manifest["files"]}
    manifest["signer"] = {"algorithm": "ed25519", "fingerprint": fingerprint(key.public_key()),
                          "public_key": raw_public(key.public_key()).hex()}
    files["manifest.json"] = json.dumps(manifest).encode()
    files[SIGNATURE] = sign(key, files["manifest.json"])


def test_every_tampering_is_caught_and_named(service: Service, key: Ed25519PrivateKey,
                                            tmp_path: Path) -> None:
    """A changed CSV cell, a dropped line, two swapped leaves, a changed root, a forged
    signature and an edited manifest are each detected, with the file named."""
    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR)
    clean = read_package(out)

    def problems(tamper):  # type: ignore[no-untyped-def]
        files = dict(clean)
        tamper(files)
        found = verify_package(files, trust(key))
        assert found, "tampering not detected"
        return " | ".join(found)

    assert "wallets.csv: SHA-256 differs" in problems(
        lambda f: edit_csv_cell(f, "wallets.csv", 0, "onchain", "1"))
    assert "allocations.csv: SHA-256 differs" in problems(
        lambda f: f.__setitem__("allocations.csv", b"\n".join(
            f["allocations.csv"].split(b"\n")[:-2]) + b"\n"))

    def swap(files: dict[str, bytes]) -> None:
        table = rows(files, "allocations.csv")
        eth = [i for i, r in enumerate(table) if r["asset"] == "ETH"]
        a = eth[0]  # and a leaf of another amount (two zero padding leaves swap to nothing)
        b = next(i for i in eth if table[i]["amount"] != table[a]["amount"])
        table[a]["amount"], table[b]["amount"] = table[b]["amount"], table[a]["amount"]
        write_rows(files, "allocations.csv", table)
        resign(files, key, {})
    swapped = problems(swap)
    assert "leaf_hash does not match" in swapped and "Merkle root" in swapped
    manifest = json.loads(clean["manifest.json"])
    manifest["liabilities"][0]["root"] = "0" * 64
    assert "signature does not match" in problems(
        lambda f: f.__setitem__("manifest.json", json.dumps(manifest).encode()))
    assert "differs from the manifest" in problems(
        lambda f: resign(f, key, {"liabilities": manifest["liabilities"]}))
    other = Ed25519PrivateKey.generate()

    def shortfall_turned_ok(files: dict[str, bytes]) -> None:  # then re-signed by `other`
        table = rows(files, "wallets.csv")
        for row in table:
            if row["status"] == "shortfall":
                row["onchain"], row["difference"], row["status"] = \
                    row["allocation_total"], "0", "ok"
        write_rows(files, "wallets.csv", table)
        resign(files, other, {})
    untrusted = problems(shortfall_turned_ok)
    assert untrusted.startswith("UNTRUSTED: signed by key " + fingerprint(other.public_key()))
    edited = json.loads(clean["manifest.json"])
    edited["as_of"] = "2020-01-01T00:00:00Z"
    assert "signature does not match" in problems(
        lambda f: f.__setitem__("manifest.json", json.dumps(edited).encode()))
    duplicated = b'{"liabilities": [], ' + clean["manifest.json"].lstrip()[1:]
    assert "duplicate key 'liabilities'" in problems(
        lambda f: f.__setitem__("manifest.json", duplicated))
    assert "not listed in the manifest" in problems(
        lambda f: f.__setitem__("extra.csv", b"x"))
    assert "manifest.sig: missing" in problems(lambda f: f.pop(SIGNATURE))


def test_only_a_trusted_signer_verifies(service: Service, key: Ed25519PrivateKey,
                                        tmp_path: Path) -> None:
    """The same intact package verifies against its signer's fingerprint and is
    UNTRUSTED (naming its signer) against any other set, the empty one included: the key
    a package names proves nothing by itself."""
    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR)
    files = read_package(out)
    assert verify_package(files, trust(key)) == []
    other = Ed25519PrivateKey.generate()
    for trusted in (trust(other), frozenset()):
        (problem,) = verify_package(files, trusted)
        assert problem.startswith(f"UNTRUSTED: signed by key {fingerprint(key.public_key())}")


def test_a_zip_with_two_entries_of_one_name_or_a_nested_path_is_refused(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    """A zip holding wallets.csv twice (the second one forged) is refused as such, and so
    is an entry outside the top level; a directory package with a subfolder too."""
    out = tmp_path / "p.zip"
    export(service, out, key, actor=AUDITOR)
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(twice, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zout.writestr("wallets.csv", b"forged")
    with pytest.raises(InputError, match=r"duplicate zip entry 'wallets\.csv'"):
        read_package(twice)
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(nested, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        zout.writestr("../evil.csv", b"x")
    with pytest.raises(InputError, match="is not a top-level file"):
        read_package(nested)
    folder = tmp_path / "dir"
    export(service, folder, key, actor=AUDITOR)
    (folder / "sub").mkdir()
    with pytest.raises(InputError, match="sub is not a plain file"):
        read_package(folder)


def test_packages_and_salts_are_private(service: Service, key: Ed25519PrivateKey,
                                        tmp_path: Path) -> None:
    """A package directory is 0700 and its files 0600 (client allocations), a zip 0600,
    the salt file beside a pseudonymized package 0600."""
    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR, pseudonymize=True)
    assert out.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}
    assert (tmp_path / "package.owner-salt").stat().st_mode & 0o777 == 0o600
    export(service, tmp_path / "p.zip", key, actor=AUDITOR)
    assert (tmp_path / "p.zip").stat().st_mode & 0o777 == 0o600


def test_a_pseudonymized_package_holds_no_owner_id(service: Service, key: Ed25519PrivateKey,
                                                   tmp_path: Path) -> None:
    """By default no owner id appears in any file; each allocation is split into several
    leaves. With the master salt beside the package the operator produces an owner's
    proofs and secret; the owner recomputes their ref from id and secret and sums their
    leaves to their allocation — another owner's secret gives another ref."""
    from daemon.rules.leaves import checked_ref, owner_secret

    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR)
    files = read_package(out)
    assert verify_package(files, trust(key)) == []
    blob = b"".join(files.values())
    for owner in OWNERS:
        assert owner.encode() not in blob
    salt = bytes.fromhex((tmp_path / "package.owner-salt").read_text().strip())
    proofs = owner_proofs(files, "carol-the-client", salt)
    assert len(proofs) >= 2  # split: no leaf holds carol's whole allocation
    secret = owner_secret(salt, "carol-the-client")
    mine = checked_ref(secret, "carol-the-client")
    assert {p["leaf"]["owner_ref"] for p in proofs} == {mine}
    assert sum(int(p["leaf"]["amount"]) for p in proofs) == 3 * ETH
    assert checked_ref(owner_secret(salt, "bob"), "carol-the-client") != mine
    assert checked_ref(secret, "bob") not in {r["owner_ref"] for r in rows(files,
                                                                            "allocations.csv")}


def test_a_named_package_reveals_owners_when_asked(service: Service, key: Ed25519PrivateKey,
                                                   tmp_path: Path) -> None:
    """`pseudonymize=False` (`--reveal-owners`) names the owners; no salt file is written;
    allocations are still split."""
    out = tmp_path / "named"
    export(service, out, key, actor=AUDITOR, pseudonymize=False)
    files = read_package(out)
    assert verify_package(files, trust(key)) == []
    assert not (tmp_path / "named.owner-salt").exists()
    refs = [r["owner_ref"] for r in rows(files, "allocations.csv")]
    assert refs.count("alice") >= 4  # ETH and USDC, each split into 2-4 leaves


def test_recheck_reads_the_pinned_block_again(service: Service, key: Ed25519PrivateKey,
                                              tmp_path: Path) -> None:
    """--recheck finds nothing while the source agrees, and names a wallet whose balance
    at the pinned block now reads differently."""
    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR)
    files = read_package(out)
    assert recheck(service, files) == []
    fake = service._adapters(service.settings.chains[0], service.settings.chains[0].sources[0])
    assert isinstance(fake, FakeAdapter)
    fake.balances_by_key = {**fake.balances_by_key, (OMNI, "ETH"): 5 * ETH}
    (problem,) = recheck(service, files)
    assert OMNI in problem and "ETH" in problem


def test_bad_input_is_refused_with_nothing_written(service: Service, key: Ed25519PrivateKey,
                                                   tmp_path: Path) -> None:
    """A non-empty output directory, an existing zip, --as-of in the future or before the
    first observation: one clear error, nothing written."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep")
    with pytest.raises(InputError, match="not an empty directory"):
        export(service, busy, key, actor=AUDITOR)
    assert sorted(p.name for p in busy.iterdir()) == ["x"]
    (tmp_path / "old.zip").write_bytes(b"zip")
    with pytest.raises(InputError, match="exists"):
        export(service, tmp_path / "old.zip", key, actor=AUDITOR)
    with pytest.raises(InputError, match="in the future"):
        export(service, tmp_path / "p1", key, actor=AUDITOR, as_of=NOW + timedelta(days=1))
    with pytest.raises(InputError, match="before the store's first observation"):
        export(service, tmp_path / "p2", key, actor=AUDITOR, as_of=NOW - timedelta(days=1))
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".segwatch-export")]
    assert leftovers == []


def test_keys_load_from_openssl_and_from_keys_generate(tmp_path: Path) -> None:
    """An `openssl genpkey -algorithm ed25519` key and a generated key both load; a
    missing, garbage or RSA key is refused with the file named."""
    openssl = tmp_path / "openssl.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(openssl)],
                   check=True, capture_output=True, timeout=30)
    openssl.chmod(0o644)
    with pytest.raises(InputError, match="readable by group or others"):
        load_private_key(openssl)
    openssl.chmod(0o600)
    assert isinstance(load_private_key(openssl), Ed25519PrivateKey)
    generated = tmp_path / "gen.pem"
    made = generate_key(generated)
    assert "BEGIN PUBLIC KEY" in made.public_pem and len(made.fingerprint) == 64
    assert (tmp_path / "gen.pem.pub").read_text() == made.public_pem
    assert generated.stat().st_mode & 0o777 == 0o600
    assert isinstance(load_private_key(generated), Ed25519PrivateKey)
    with pytest.raises(InputError, match="exists"):
        generate_key(generated)
    with pytest.raises(InputError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk")
    (tmp_path / "junk.pem").chmod(0o600)
    with pytest.raises(InputError, match="not an unencrypted PEM"):
        load_private_key(tmp_path / "junk.pem")
    rsa = tmp_path / "rsa.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(rsa)], check=True,
                   capture_output=True, timeout=60)
    rsa.chmod(0o600)
    with pytest.raises(InputError, match="not an Ed25519 key"):
        load_private_key(rsa)


def test_zip_members_are_exactly_the_package(service: Service, key: Ed25519PrivateKey,
                                             tmp_path: Path) -> None:
    """The zip holds the five files at its root, nothing else."""
    out = tmp_path / "p.zip"
    export(service, out, key, actor=AUDITOR)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["allocations.csv", "discrepancies.csv",
                                         "in_transit.csv", "manifest.json", "manifest.sig",
                                         "report.html", "wallets.csv"]


def test_with_verify_two_the_export_reads_every_balance_from_two_sources(
        store_url: str, tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """With `verify = 2` the pinned balances are read from two sources and both are named
    in the manifest; a balance they read differently, or that the second cannot read, is
    `unreadable` in wallets.csv, never `ok` on one source's word."""
    head = ChainHead(100, "0x" + "ab" * 32, int(NOW.timestamp()) - 5)
    balances = {(ALICE, "ETH"): 15 * ETH // 10, (OMNI, "ETH"): 5 * ETH, (HOUSE, "ETH"): 7 * ETH}
    fakes = {"primary": FakeAdapter(name="primary", head_block=head, balances_by_key=balances),
             "second": FakeAdapter(name="second", head_block=head,
                                   balances_by_key={**balances, (OMNI, "ETH"): 9 * ETH})}
    settings = Settings(store={"url": store_url}, chains=[{  # type: ignore[arg-type, list-item]
        "name": "ethereum", "family": "evm", "chain_id": 1, "confirmations": 2, "verify": 2,
        "sources": [{"kind": "jsonrpc", "name": name, "url": f"http://127.0.0.1:{n}/"}
                    for n, name in enumerate(fakes, start=1)]}])
    upgrade(make_engine(store_url))
    svc = Service(settings, open_store(store_url), lambda _c, s: fakes[s.name], Clock())
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n"
                      f"ethereum,{ALICE},segregated,alice,ETH,1.5\n"
                      f"ethereum,{OMNI},omnibus,bob,ETH,5\n"
                      f"ethereum,{HOUSE},house,FIRM,ETH,7\n")
    svc.import_ledger(ledger, dry_run=False, actor=FEEDER)
    assert svc.run_cycle(settings.chains[0]).error is None
    out = tmp_path / "package"
    export(svc, out, key, actor=AUDITOR)
    files = read_package(out)
    assert verify_package(files, trust(key)) == []
    (chain,) = json.loads(files["manifest.json"])["chains"]
    assert chain["sources"] == ["primary", "second"]
    statuses = {(r["address"], r["asset"]): r["status"] for r in rows(files, "wallets.csv")}
    assert statuses[(ALICE, "ETH")] == "ok" and statuses[(OMNI, "ETH")] == "unreadable"
    fakes["second"].fail_balances = True
    export(svc, tmp_path / "p2", key, actor=AUDITOR)
    statuses = {(r["address"], r["asset"]): r["status"]
                for r in rows(read_package(tmp_path / "p2"), "wallets.csv")}
    assert set(statuses.values()) == {"unreadable"}


def test_oversized_or_unlisted_entries_are_not_read_and_a_wide_manifest_is_quick(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unlisted zip entry (here 50 MB of zeros, a few KB compressed) is named but never
    decompressed; an entry over the size limit is refused before it is read; a manifest
    with 50,000 members and one duplicate is refused within seconds (the duplicate check
    is linear, not quadratic)."""
    import time

    from daemon.export import package as package_module

    out = tmp_path / "p.zip"
    export(service, out, key, actor=AUDITOR)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        zout.writestr("zeros.bin", b"\0" * (50 * 1024 * 1024))
    files = read_package(bomb)
    assert files["zeros.bin"] == b""
    assert "zeros.bin: not listed in the manifest" in verify_package(files, trust(key))
    wide = b"{" + b",".join(b'"k%d": 0' % n for n in range(50_000)) + b', "k7": 1}'
    started = time.monotonic()
    problems = verify_package({**read_package(out), "manifest.json": wide}, trust(key))
    assert time.monotonic() - started < 5.0 and "duplicate key 'k7'" in problems[0]
    monkeypatch.setattr(package_module, "MAX_FILE_BYTES", 1024)
    with pytest.raises(InputError, match="is larger than 1024 bytes"):
        read_package(bomb)


def test_wallets_carry_booked_in_transit_and_expected_and_the_items_are_evidence(
        service: Service, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    """A deposit of 0.5 ETH to alice after the books' cut-off, at or below the pinned
    block, is a reconciling item: wallets.csv books 1.5, carries 0.5 in transit and
    expects 2 (on-chain 1.5: a 0.5 shortfall against expected); in_transit.csv holds the
    item and the report lists it; the package verifies. A holder of the signing key who
    drops the item from in_transit.csv (so that wallets.csv no longer follows from it)
    is caught by the recomputation."""
    from sqlmodel import Session, select

    from daemon.store import models as m

    with Session(service.store.engine) as session:
        chain_id = session.exec(select(m.Chain.id)).one()
        session.add(m.Transfer(chain_id=chain_id, key="0xd1:native:-1:", kind="native",
                               block_number=97, block_hash="0x" + "97" * 32, tx_hash="0xd1",
                               sender="0x" + "ee" * 20, recipient=ALICE, asset="ETH",
                               amount=ETH // 2, seen_at=NOW, block_time=NOW + timedelta(1)))
        session.commit()
    out = tmp_path / "package"
    export(service, out, key, actor=AUDITOR)
    files = read_package(out)
    eth = next(r for r in rows(files, "wallets.csv")
               if (r["address"], r["asset"]) == (ALICE, "ETH"))
    assert (eth["allocation_total"], eth["in_transit"], eth["expected"], eth["difference"],
            eth["status"]) == (str(3 * ETH // 2), str(ETH // 2), str(2 * ETH),
                               str(-ETH // 2), "shortfall")
    (item,) = rows(files, "in_transit.csv")
    assert (item["address"], item["direction"], item["amount"], item["side"],
            item["tx_hash"]) == (ALICE, "in", str(ETH // 2), "unbooked", "0xd1")
    assert "Reconciling items (in transit)" in files["report.html"].decode()
    assert "0xd1" in files["report.html"].decode()
    assert verify_package(files, trust(key)) == []
    forged = dict(files)
    forged["in_transit.csv"] = files["in_transit.csv"].decode().splitlines()[0].encode() + b"\n"
    resign(forged, key, {})
    problems = verify_package(forged, trust(key))
    assert any("in_transit" in p and "do not follow" in p for p in problems), problems
