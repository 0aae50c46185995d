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
from tests.e2e.cli import Result, segwatch, signed_up
from tests.principals import FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)
CONFIG = """
[store]
url = "sqlite:///{db}"
[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
sources = [{{ kind = "jsonrpc", url = "http://127.0.0.1:9/" }}]
"""
TOKENS: dict[str, str] = {}


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "segwatch.toml").write_text(CONFIG.format(db=tmp_path / "segwatch.db"))
    settings = load_settings(tmp_path / "segwatch.toml")
    fake = FakeAdapter(balances_by_key={(ALICE, "ETH"): 1})
    service = Service(settings, open_store(settings.store.url), lambda _c, _s: fake)
    (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                         f"ethereum,{ALICE},segregated,alice,ETH,1\n")
    service.import_ledger(tmp_path / "ledger.csv", dry_run=False, actor=FEEDER)
    service.run_cycle(settings.chains[0])
    TOKENS.clear()
    TOKENS.update(signed_up(tmp_path, {"mia": ["maker"], "carl": ["checker"]}))
    return tmp_path


def cli(cwd: Path, *args: str, user: str | None = None) -> Result:
    return segwatch(*args, cwd=cwd, env={"SEGWATCH_TOKEN": TOKENS[user]} if user else None)


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
                   "--note", "ticket 7", "--json", user="mia")
    assert proposed.code == 0, proposed.stderr
    assert proposed.json()["status"] == "proposed"
    assert proposed.json()["proposal"]["reason"] == "ledger_corrected"
    one_line(cli(cwd, "discrepancies", "approve", id_, user="mia"), "checker role")
    approved = cli(cwd, "discrepancies", "approve", id_, "--json", user="carl")
    assert approved.code == 0 and approved.json()["status"] == "resolved"
    one_line(cli(cwd, "discrepancies", "reject", id_, "--note", "x", user="carl"),
             "that is resolved")
    history = cli(cwd, "discrepancies", "show", id_, "--json").json()["history"]
    assert [e["action"] for e in history] == ["detected", "proposed", "refused", "resolved",
                                              "refused"]
    verified = cli(cwd, "audit", "verify", "--json")
    assert verified.code == 0 and verified.json()["ok"] is True


def test_unknown_id_and_reason_are_one_line_errors(cwd: Path) -> None:
    """An unknown id or reason code is exit 2, one line."""
    one_line(cli(cwd, "discrepancies", "approve", "999", user="carl"),
             "no discrepancy with id 999")
    (item,) = cli(cwd, "discrepancies", "list", "--json").json()
    one_line(cli(cwd, "discrepancies", "propose", str(item["id"]), "--reason", "oops",
                 "--note", "n", user="mia"), "unknown reason code")


def test_audit_verify_names_the_first_tampered_entry(cwd: Path) -> None:
    """An entry edited directly in the database makes `audit verify` exit 1 naming it."""
    db = sqlite3.connect(cwd / "segwatch.db")
    with db:
        db.execute("UPDATE audit_entry SET actor = 'mallory' WHERE seq = 2")
    db.close()
    result = cli(cwd, "audit", "verify")
    assert result.code == 1
    assert "broken at entry 2" in result.stdout and "edited" in result.stdout


def test_credentials_decide_who_acts(cwd: Path) -> None:
    """`--as` is gone; without a token a workflow command is refused (exit 2, one line);
    a bad token is refused; a revoked token stops working at once, and its refusal is
    audited; a token file works like SEGWATCH_TOKEN."""
    (item,) = cli(cwd, "discrepancies", "list", "--json").json()
    id_ = str(item["id"])
    gone = cli(cwd, "discrepancies", "propose", id_, "--reason", "false_positive", "--note",
               "n", "--as", "mia")
    assert gone.code == 2 and "--as" in gone.stderr and "Traceback" not in gone.stderr
    one_line(cli(cwd, "discrepancies", "propose", id_, "--reason", "false_positive",
                 "--note", "n"), "needs credentials")
    one_line(segwatch("discrepancies", "propose", id_, "--reason", "false_positive", "--note",
                      "n", cwd=cwd, env={"SEGWATCH_TOKEN": "swt_x"}), "invalid token")
    token_id = TOKENS["mia"].split("_")[1]
    revoked = cli(cwd, "tokens", "revoke", token_id, "--json", user="root")
    assert revoked.code == 0 and revoked.json()["user"] == "mia"
    one_line(cli(cwd, "discrepancies", "propose", id_, "--reason", "false_positive",
                 "--note", "n", user="mia"), "token revoked")
    (cwd / "carl.token").write_text(TOKENS["carl"] + "\n")
    via_file = segwatch("--token-file", str(cwd / "carl.token"), "discrepancies", "propose",
                        id_, "--reason", "false_positive", "--note", "n", cwd=cwd)
    one_line(via_file, "needs the maker role")
    actions = [(e["actor"], e["action"]) for e in
               cli(cwd, "discrepancies", "show", id_, "--json").json()["history"]]
    assert actions[-1] == ("carl", "refused")
    db = sqlite3.connect(cwd / "segwatch.db")
    failures = db.execute("SELECT actor, payload FROM audit_entry WHERE action = "
                          "'sign_in_failed'").fetchall()
    db.close()
    assert [actor for actor, _ in failures] == ["mia"] and "token revoked" in failures[0][1]


def test_only_an_admin_manages_users_and_the_bootstrap_happens_once(cwd: Path) -> None:
    """A maker cannot add users or create tokens; the no-token bootstrap is refused once a
    user exists; an admin's grants are listed."""
    one_line(cli(cwd, "users", "add", "eve", "--role", "checker", user="mia"),
             "needs the admin role")
    one_line(cli(cwd, "tokens", "create", "--user", "mia", user="mia"), "needs the admin role")
    again = segwatch("users", "add", "eve", "--role", "admin", "--password-stdin", cwd=cwd,
                     input="another long password\n")
    one_line(again, "already has users")
    one_line(cli(cwd, "users", "add", "both", "--role", "maker", "--role", "checker",
                 user="root"), "both maker and checker")
    listed = cli(cwd, "users", "list", "--json", user="root").json()
    assert {u["name"]: u["roles"] for u in listed} == {
        "carl": ["checker"], "mia": ["maker"], "root": ["admin"]}


def test_show_prints_untrusted_notes_as_text_not_markup(cwd: Path) -> None:
    """A maker's note with console markup is printed as written, never interpreted."""
    (item,) = cli(cwd, "discrepancies", "list", "--json").json()
    note = "[link=http://evil.example]click[/link] [red]x[/red]"
    assert cli(cwd, "discrepancies", "propose", str(item["id"]), "--reason",
               "false_positive", "--note", note, user="mia").code == 0
    shown = cli(cwd, "discrepancies", "show", str(item["id"]))
    assert shown.code == 0 and note in shown.stdout
