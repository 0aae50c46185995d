"""The maker-checker commands and `audit verify` through the real entry point, on a
store whose findings a fake source produced (SQLite file shared with the subprocess)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from daemon.bootstrap import open_store
from daemon.inputs.config import load_settings
from daemon.service import Service
from tests.e2e.cli import Result, segwatch

ALICE = canonical_evm_address("0x" + "a1" * 20)
CONFIG = """
[store]
url = "sqlite:///{db}"
[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
sources = [{{ kind = "jsonrpc", url = "http://127.0.0.1:9/" }}]
[[users]]
name = "mia"
roles = ["maker"]
[[users]]
name = "carl"
roles = ["checker"]
"""


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "segwatch.toml").write_text(CONFIG.format(db=tmp_path / "segwatch.db"))
    settings = load_settings(tmp_path / "segwatch.toml")
    fake = FakeAdapter(balances_by_key={(ALICE, "ETH"): 1})
    service = Service(settings, open_store(settings.store.url), lambda _c, _s: fake)
    (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                         f"ethereum,{ALICE},segregated,alice,ETH,1\n")
    service.import_ledger(tmp_path / "ledger.csv", dry_run=False)
    service.run_cycle(settings.chains[0])
    return tmp_path


def cli(cwd: Path, *args: str) -> Result:
    return segwatch(*args, cwd=cwd)


def one_line(result: Result, needle: str) -> None:
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def test_propose_approve_and_verify_through_the_cli(cwd: Path) -> None:
    """propose → approve with --json shapes; a self-approval or a missing role is one line
    and exit 2; `show` lists the history including refusals; `audit verify` exits 0."""
    (item,) = cli(cwd, "discrepancies", "list", "--json").json()
    id_ = str(item["id"])
    proposed = cli(cwd, "discrepancies", "propose", id_, "--reason", "ledger_corrected",
                   "--note", "ticket 7", "--as", "mia", "--json")
    assert proposed.code == 0, proposed.stderr
    assert proposed.json()["status"] == "proposed"
    assert proposed.json()["proposal"]["reason"] == "ledger_corrected"
    one_line(cli(cwd, "discrepancies", "approve", id_, "--as", "mia"), "checker role")
    approved = cli(cwd, "discrepancies", "approve", id_, "--as", "carl", "--json")
    assert approved.code == 0 and approved.json()["status"] == "resolved"
    one_line(cli(cwd, "discrepancies", "reject", id_, "--as", "carl", "--note", "x"),
             "that is resolved")
    history = cli(cwd, "discrepancies", "show", id_, "--json").json()["history"]
    assert [e["action"] for e in history] == ["detected", "proposed", "refused", "resolved",
                                              "refused"]
    verified = cli(cwd, "audit", "verify", "--json")
    assert verified.code == 0 and verified.json()["ok"] is True


def test_unknown_id_and_reason_are_one_line_errors(cwd: Path) -> None:
    """An unknown id or reason code is exit 2, one line."""
    one_line(cli(cwd, "discrepancies", "approve", "999", "--as", "carl"),
             "no discrepancy with id 999")
    (item,) = cli(cwd, "discrepancies", "list", "--json").json()
    one_line(cli(cwd, "discrepancies", "propose", str(item["id"]), "--reason", "oops",
                 "--note", "n", "--as", "mia"), "unknown reason code")


def test_audit_verify_names_the_first_tampered_entry(cwd: Path) -> None:
    """An entry edited directly in the database makes `audit verify` exit 1 naming it."""
    db = sqlite3.connect(cwd / "segwatch.db")
    with db:
        db.execute("UPDATE audit_entry SET actor = 'mallory' WHERE seq = 2")
    db.close()
    result = cli(cwd, "audit", "verify")
    assert result.code == 1
    assert "broken at entry 2" in result.stdout and "edited" in result.stdout
