"""Issue 17, a new user's first hour, through the real entry point (`python -m
daemon.cli` in a subprocess) on a SQLite store whose findings a fake source produced:
`discrepancies show` for people (display units, no Python reprs, markup shown as
written, `final` as in `list`), plurals, the amount of a transfer finding in `list`,
errors as JSON on stdout with `--json`, and an empty set of withdrawals accepted."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from chains.types import BaseUnits, ChainHead, TransferObservation
from daemon.bootstrap import open_store
from daemon.inputs.config import load_settings
from daemon.service import Service
from tests.e2e.cli import Result, feeder_env, segwatch, signed_up
from tests.principals import FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)
THIEF = canonical_evm_address("0x" + "b2" * 20)
ETH = 10**18
CONFIG = """
[store]
url = "sqlite:///{db}"
[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
confirmations = 2
sources = [{{ kind = "jsonrpc", url = "http://127.0.0.1:9/" }}]
"""
NOTE = "see ticket [OPS-17] and [bold]x[/bold] [/bold]"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A store with a shortfall (alice: 0.75 ETH of 1) and an unauthorized 0.25 ETH
    outflow mined 10 blocks below the head (final at depth 2)."""
    (tmp_path / "segwatch.toml").write_text(CONFIG.format(db=tmp_path / "segwatch.db"))
    settings = load_settings(tmp_path / "segwatch.toml")
    fake = FakeAdapter(balances_by_key={(ALICE, "ETH"): ETH})
    service = Service(settings, open_store(settings.store.url), lambda _c, _s: fake)
    (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                         f"ethereum,{ALICE},segregated,client-x,ETH,1\n")
    service.import_ledger(tmp_path / "ledger.csv", dry_run=False, actor=FEEDER)
    service.run_cycle(settings.chains[0])  # pins the scan cursor at block 100
    mined = ChainHead(101, f"0x{101:064x}")
    fake.transfers.append(TransferObservation(
        kind="native", block=mined, tx_hash="0x" + "cd" * 32, log_index=None, sender=ALICE,
        recipient=THIEF, contract=None, amount=BaseUnits(ETH // 4), source="fake"))
    fake.balances_by_key = {(ALICE, "ETH"): 3 * ETH // 4}
    fake.head_block = dataclasses.replace(fake.head_block, height=110,
                                          hash=f"0x{110:064x}")
    service.run_cycle(settings.chains[0])
    return tmp_path


def ids(cwd: Path) -> dict[str, int]:
    listed = segwatch("discrepancies", "list", "--json", cwd=cwd)
    assert listed.code == 0, listed.stderr
    return {item["type"]: item["id"] for item in listed.json()}


def test_show_agrees_with_list_and_reads_like_list(cwd: Path) -> None:
    """Item 1 and 3: `show` says `final` as `list` does (the depth is passed), in JSON and
    for people; for people it shows amounts in display units with the asset, `—` for
    nothing, owners joined, yes/no for flags; never a Python repr."""
    found = ids(cwd)
    outflow = str(found["unauthorized_outflow"])
    listed = {i["type"]: i for i in segwatch("discrepancies", "list", "--json",
                                             cwd=cwd).json()}
    shown = segwatch("discrepancies", "show", outflow, "--json", cwd=cwd).json()
    assert listed["unauthorized_outflow"]["final"] is True and shown["final"] is True
    text = segwatch("discrepancies", "show", outflow, cwd=cwd, env={"COLUMNS": "200"})
    assert text.code == 0, text.stderr
    lines = dict(line.split(": ", 1) for line in text.stdout.splitlines()
                 if ": " in line and not line.startswith("  #"))
    assert lines["amount"] == "0.25 ETH" and lines["final"] == "yes"
    assert lines["owners"] == "client-x" and lines["contract"] == "—"
    for repr_ in ("None", "['", "{'", "True", "False"):
        assert repr_ not in text.stdout.replace("[OPS", ""), (repr_, text.stdout)
    shortfall = segwatch("discrepancies", "show", str(found["balance_shortfall"]), cwd=cwd)
    assert "difference: -0.25 ETH" in shortfall.stdout


def test_untrusted_notes_are_shown_as_written(cwd: Path) -> None:
    """Item 2: a note with Rich markup (and a stray closing tag) is printed as written by
    `show`, for the maker and for the checker; nothing crashes."""
    tokens = signed_up(cwd, {"mia": ["maker"], "carl": ["checker"]})
    outflow = str(ids(cwd)["unauthorized_outflow"])
    proposed = segwatch("discrepancies", "propose", outflow, "--reason", "ledger_corrected",
                        "--note", NOTE, cwd=cwd, env={"SEGWATCH_TOKEN": tokens["mia"]})
    assert proposed.code == 0, proposed.stderr
    for user in ("mia", "carl"):
        shown = segwatch("discrepancies", "show", outflow, cwd=cwd,
                         env={"SEGWATCH_TOKEN": tokens[user], "COLUMNS": "300"})
        assert shown.code == 0, shown.stderr
        assert NOTE in shown.stdout and "Traceback" not in shown.stderr


def test_list_shows_transfer_amounts_and_counts_in_words(cwd: Path) -> None:
    """Item 15: the title says "2 discrepancies" / "1 discrepancy", and an unauthorized
    outflow's row shows its amount instead of `—` everywhere."""
    listed = segwatch("discrepancies", "list", cwd=cwd, env={"COLUMNS": "250"})
    assert "2 discrepancies" in listed.stdout
    (row,) = [line for line in listed.stdout.splitlines() if "unauthorized_outflow" in line]
    assert "0.25" in row
    one = segwatch("discrepancies", "list", "--type", "balance_shortfall", cwd=cwd,
                   env={"COLUMNS": "250"})
    assert "1 discrepancy " in one.stdout or one.stdout.strip().startswith("1 discrepancy")


def test_errors_with_json_are_a_document_on_stdout(cwd: Path) -> None:
    """Item 13: with --json, a failing command still writes a JSON document on stdout,
    {"error": {"code", "message"}}, besides its one line on stderr."""
    failed = segwatch("discrepancies", "show", "999", "--json", cwd=cwd)
    assert failed.code == 2
    assert json.loads(failed.stdout) == {"error": {"code": 2,
                                                   "message": "no discrepancy with id 999"}}
    assert failed.stderr.strip() == "segwatch: no discrepancy with id 999"
    plain = segwatch("discrepancies", "show", "999", cwd=cwd)
    assert plain.code == 2 and plain.stdout == ""


def test_a_header_only_withdrawals_file_is_an_empty_valid_set(cwd: Path) -> None:
    """Item 16: withdrawals with a header and no line (or `[]`) import nothing, exit 0."""
    (cwd / "none.csv").write_text("id,chain,from_address,to_address,asset,amount,"
                                  "approved_by,approved_at,tx_hash\n")
    (cwd / "none.json").write_text("[]")
    for name in ("none.csv", "none.json"):
        result: Result = segwatch("withdrawals", "import", name, "--json", cwd=cwd,
                                  env=feeder_env(cwd))
        assert result.code == 0, result.stderr
        assert (result.json()["withdrawals"], result.json()["new"]) == (0, 0), result.stdout
    shown = segwatch("withdrawals", "import", "none.csv", cwd=cwd, env=feeder_env(cwd))
    assert shown.code == 0 and "0 withdrawals imported (0 new)" in shown.stdout


def test_queries_exit_0_with_open_findings_while_status_exits_1(cwd: Path) -> None:
    """Item 12, decided: `discrepancies list` is a query and exits 0 whatever it lists;
    `status` judges the chain and exits 1 with open findings (README, exit codes)."""
    assert segwatch("discrepancies", "list", cwd=cwd).code == 0
    assert segwatch("status", cwd=cwd).code == 1


@pytest.mark.parametrize("command", [("status",), ("discrepancies", "list"),
                                     ("audit", "verify")])
def test_a_missing_store_is_one_line_and_is_not_created(tmp_path: Path,
                                                        command: tuple[str, ...]) -> None:
    """Item 4: a typo in --db or SEGWATCH_STORE__URL no longer creates a new, empty store
    that reports `stale`: read-only commands say the file does not exist (exit 2, one
    line, with --json a JSON error) and create nothing."""
    (tmp_path / "segwatch.toml").write_text(CONFIG.format(db=tmp_path / "segwatch.db"))
    typo = tmp_path / "segwach.db"
    for how in ({"args": ("--db", f"sqlite:///{typo}")},
                {"env": {"SEGWATCH_STORE__URL": f"sqlite:///{typo}"}}):
        args = (*how.get("args", ()), *command, "--json")
        result = segwatch(*args, cwd=tmp_path, env=how.get("env"))  # type: ignore[arg-type]
        assert result.code == 2, result
        assert result.stderr.count("\n") == 1 and "no such file" in result.stderr
        assert "no such file" in json.loads(result.stdout)["error"]["message"]
        assert not typo.exists()


def test_a_corrupt_store_is_one_line_exit_2(tmp_path: Path) -> None:
    """Item 4: a file that is not a database is a one-line error with exit 2, not an
    internal error (70)."""
    (tmp_path / "segwatch.toml").write_text(CONFIG.format(db=tmp_path / "corrupt.db"))
    (tmp_path / "corrupt.db").write_bytes(b"this is not a database" * 100)
    result = segwatch("status", cwd=tmp_path)
    assert result.code == 2, result
    assert result.stderr.count("\n") == 1 and "cannot open the database" in result.stderr


def _leaf_commands() -> list[tuple[str, ...]]:
    """Every command of the CLI, as its path of names (`discrepancies list`, …)."""
    import typer

    from daemon.cli.app import app

    found: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        children = getattr(command, "commands", None)
        if children is None:
            found.append(path)
            return
        for name, child in children.items():
            walk(child, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def test_every_command_takes_json_and_verbose() -> None:
    """Item 7: `--json` and `-v` are accepted by every command, as the README says (the
    options of each command read from the CLI itself, so a new command is checked too)."""
    import typer

    from daemon.cli.app import app

    root = typer.main.get_command(app)
    commands = _leaf_commands()
    assert len(commands) >= 25 and ("keys", "generate") in commands
    for path in commands:
        command: object = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        options = {o for p in command.params for o in getattr(p, "opts", ())}  # type: ignore[attr-defined]
        assert {"--json", "-v", "--verbose"} <= options, path


def test_help_is_plain_text_with_every_documented_choice() -> None:
    """Item 7 and 2: help shows no `<bool>` metavar on flags and no Rich markup (a
    bracketed default is shown as written); `list --chain/--type` are described and
    `--type` names every discrepancy type; `derive --help` names every built-in UTXO
    chain; `version` is in the command list and in the README's command table."""
    from daemon.inputs.builtin import BUILTIN_CHAINS
    from daemon.rules.reconcile import SEVERITY

    root = segwatch("--help", cwd=Path.cwd(), env={"COLUMNS": "200"})
    assert root.code == 0 and "version" in root.stdout and "<bool>" not in root.stdout
    listing = segwatch("discrepancies", "list", "--help", cwd=Path.cwd(),
                       env={"COLUMNS": "400"})
    assert "<bool>" not in listing.stdout
    text = " ".join(listing.stdout.split())
    assert "Only this configured chain." in text
    assert all(kind in text for kind in SEVERITY), text
    derive = " ".join(segwatch("derive", "--help", cwd=Path.cwd(),
                               env={"COLUMNS": "400"}).stdout.split())
    assert all(name in derive for name, spec in BUILTIN_CHAINS.items()
               if spec["family"] == "utxo"), derive
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "| `segwatch version` |" in readme
    verify = " ".join(segwatch("export", "verify", "--help", cwd=Path.cwd(),
                               env={"COLUMNS": "400"}).stdout.split())
    assert "--fingerprint or [export] trusted_keys" in verify  # not eaten as a style tag


def test_an_unknown_type_filter_is_refused_like_an_unknown_status(cwd: Path) -> None:
    """Item 7: `list --type bogus` is refused (exit 2, naming the types) as `--status
    bogus` is, instead of answering with no rows."""
    bad_type = segwatch("discrepancies", "list", "--type", "bogus", cwd=cwd)
    assert bad_type.code == 2 and "unknown discrepancy type 'bogus'" in bad_type.stderr
    assert "balance_shortfall" in bad_type.stderr
    assert segwatch("discrepancies", "list", "--status", "bogus", cwd=cwd).code == 2
    good = segwatch("discrepancies", "list", "--type", "balance_shortfall", "--json", cwd=cwd)
    assert [i["type"] for i in good.json()] == ["balance_shortfall"]


def test_a_global_option_after_the_command_gets_a_hint(cwd: Path) -> None:
    """Item 15: `status --db URL` is a usage error (exit 2) that says --db is a global
    option and where it goes."""
    result = segwatch("status", "--db", "sqlite:///other.db", cwd=cwd)
    assert result.code == 2
    assert "--db is a global option: give it before the command" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_keys_generate_and_audit_head_answer_in_json(tmp_path: Path, cwd: Path) -> None:
    """Item 7: `keys generate --json` is a document naming both files and the
    fingerprint; `audit head` is readable lines without --json and the head with it."""
    made = segwatch("keys", "generate", "--out", str(tmp_path / "k.pem"), "--json", cwd=cwd)
    assert made.code == 0, made.stderr
    doc = made.json()
    assert Path(doc["public_key_file"]).read_text() == doc["public_key"]
    assert len(doc["fingerprint"]) == 64 and doc["private_key_file"].endswith("k.pem")
    head = segwatch("audit", "head", "--json", cwd=cwd)
    assert head.code == 0 and isinstance(head.json()["seq"], int)
    lines = segwatch("audit", "head", cwd=cwd).stdout
    assert f"seq: {head.json()['seq']}" in lines and "{" not in lines


@pytest.fixture
def silent_source() -> Iterator[str]:
    """A loopback HTTP source that accepts connections and never answers."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_check_gives_up_after_timeout_and_says_how_long(tmp_path: Path,
                                                        silent_source: str) -> None:
    """Item 10: `check --timeout 1` against a source that never answers exits 3 in a few
    seconds (not 33) with one line saying how long it waited, not a bare ReadTimeout."""
    import time

    started = time.monotonic()
    result = segwatch("check", "anvil", "0x" + "11" * 20, "--source", silent_source,
                      "--timeout", "1", cwd=tmp_path, timeout=30)
    assert result.code == 3, result.stderr
    assert time.monotonic() - started < 15
    assert "within the request deadline of 1 s" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # no store written by a spot check


def test_check_shows_a_spinner_on_a_terminal(tmp_path: Path, silent_source: str) -> None:
    """Item 10: on a terminal, `check` says what it is waiting for while it waits (a
    spinner on stderr naming the chain and the source); piped, it prints no spinner."""
    import os
    import subprocess
    import sys
    import time

    primary, secondary = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    env.update(TERM="xterm", COLUMNS="120")
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "check", "anvil",
                             "0x" + "11" * 20, "--source", silent_source, "--timeout", "2"],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 20
    try:
        while b"reading anvil through 127.0.0.1" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(primary, 4096)
            except OSError:
                break
    finally:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
        os.close(primary)
    assert b"reading anvil through 127.0.0.1" in seen
    piped = segwatch("check", "anvil", "0x" + "11" * 20, "--source", silent_source,
                     "--timeout", "1", cwd=tmp_path, timeout=30)
    assert "reading anvil" not in piped.stderr
