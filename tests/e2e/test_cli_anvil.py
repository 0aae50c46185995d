"""End to end on a real anvil node: the CLI imports a ledger, reconciles, reports.

Runs on SQLite and on PostgreSQL (the `store_url` fixture), through the real entry point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chains.evm.devnet import (
    AnvilNode,
    deploy_contract,
    deploy_test_token,
    impersonate,
    install_multicall,
    mint_many,
    send_eth,
    set_bad_token_mode,
    set_balances,
)
from tests.e2e.cli import Result, feeder_env, segwatch

pytestmark = pytest.mark.anvil

ETH = 10**18
ALICE = "0x1000000000000000000000000000000000000001"
OMNI = "0x1000000000000000000000000000000000000002"
HOUSE = "0x1000000000000000000000000000000000000009"
SECRET = "pa55w0rd-xyz"
PAYEE = "0x20000000000000000000000000000000000000AA"


@dataclass
class Env:
    node: AnvilNode
    cwd: Path
    token: str

    def cli(self, *args: str, feeder: bool = False) -> Result:
        return segwatch(*args, cwd=self.cwd, env=feeder_env(self.cwd) if feeder else None)


def write_config(cwd: Path, store_url: str, rpc_url: str, token: str, *,
                 confirmations: int = 0, multicall: str | None = None,
                 extra_tokens: str = "", second_source: str | None = None) -> None:
    mc = "" if multicall is None else f'multicall = "{multicall}"\n'
    if second_source:
        rpc_url += f'" }}, {{ kind = "jsonrpc", url = "{second_source}'
    (cwd / "segwatch.toml").write_text(f"""
[store]
url = "{store_url}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = {confirmations}
{mc}sources = [{{ kind = "jsonrpc", url = "{rpc_url}" }}]
tokens = [{{ symbol = "USDC", contract = "{token}", decimals = 6 }}{extra_tokens}]
[[users]]
name = "carol"
roles = ["checker"]
""")


LEDGER = f"""chain,address,structure,owner,asset,amount
devnet,{ALICE},segregated,alice,ETH,10
devnet,{ALICE},segregated,alice,USDC,2500
devnet,{OMNI},omnibus,bob,ETH,5
devnet,{OMNI},omnibus,carol,ETH,7.25
devnet,{HOUSE},house,FIRM,ETH,100
"""


@pytest.fixture
def env(anvil_node: AnvilNode, store_url: str, tmp_path: Path) -> Env:
    token = deploy_test_token(anvil_node, "USD Coin", "USDC", 6)
    install_multicall(anvil_node)
    set_balances(anvil_node, {ALICE: 10 * ETH, OMNI: 12 * ETH + ETH // 4, HOUSE: 3 * ETH})
    mint_many(anvil_node, token, [ALICE], [2_400 * 10**6])
    url = anvil_node.url.replace("http://", f"http://ops:{SECRET}@") + f"/?key={SECRET}"
    write_config(tmp_path, store_url, url, token)
    (tmp_path / "ledger.csv").write_text(LEDGER)
    e = Env(anvil_node, tmp_path, token)
    assert e.cli("db", "upgrade").code == 0
    assert e.cli("ledger", "import", "ledger.csv", feeder=True).code == 0
    return e


def test_cycle_finds_the_shortfall_and_status_reports_it(env: Env) -> None:
    """One cycle opens exactly the USDC shortfall; status and list say so; no secret leaks."""
    run = env.cli("run", "--once", "--json", "-v")
    assert run.code == 1, run.stderr
    (cycle,) = run.json()
    assert cycle["error"] is None and cycle["wallets"] == 3 and cycle["read_errors"] == 0
    (finding,) = cycle["findings"]
    assert (finding["type"], finding["asset"], finding["difference"]) == (
        "balance_shortfall", "USDC", str(-100 * 10**6))
    assert cycle["rpc_requests"] <= 6
    status = env.cli("status", "--json")
    assert status.code == 1
    assert status.json()["status"] == "discrepancy"
    listed = env.cli("discrepancies", "list", "--json")
    (item,) = listed.json()
    required = {"id", "type", "severity", "status", "chain", "address", "asset", "owners",
                "onchain", "ledger", "difference", "tx_hash", "block_number", "confirmations",
                "detected_at", "last_seen_at", "cure_deadline"}
    assert required <= set(item)
    assert item["owners"] == ["alice"] and item["onchain"] == str(2_400 * 10**6)
    assert item["cure_deadline"].endswith("Z") and item["status"] == "open"
    for result in (run, status, listed):
        assert SECRET not in result.stdout + result.stderr


def test_second_cycle_updates_and_restored_funds_go_to_a_checker(env: Env) -> None:
    """The same shortfall twice stays one item. Funds returned after the books' cut-off
    are a deposit in transit (SPEC §8: expected = booked + the deposit), so the shortfall
    stays. Books cut after the deposit that do not book it lower the expected balance to
    what the chain holds: that is the books' decision (an insider could otherwise let a
    client's unbooked deposit cover a theft), so the finding goes to a checker as
    `ledger_corrected` instead of clearing itself."""
    assert env.cli("run", "--once").code == 1
    assert env.cli("run", "--once").code == 1
    assert len(env.cli("discrepancies", "list", "--json").json()) == 1
    head = int(env.node.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    env.node.call("evm_setNextBlockTimestamp", [max(head, int(time.time())) + 2])
    mint_many(env.node, env.token, [ALICE], [100 * 10**6])  # after the cut-off, surely
    assert env.cli("run", "--once").code == 1
    (open_,) = env.cli("discrepancies", "list", "--json").json()
    assert (open_["status"], open_["in_transit"], open_["difference"]) == (
        "open", str(100 * 10**6), str(-100 * 10**6))
    assert env.cli("ledger", "import", "ledger.csv", feeder=True).code == 0
    env.cli("run", "--once")
    (item,) = env.cli("discrepancies", "list", "--json").json()
    assert (item["status"], item["proposal"]["reason"]) == ("proposed", "ledger_corrected")
    assert "in transit 0" in item["proposal"]["note"]
    shown = env.cli("discrepancies", "show", str(item["id"]), "--json").json()
    assert [h["action"] for h in shown["history"]] == ["detected", "proposed"]


def test_a_withdrawal_in_transit_is_shown_everywhere_and_explains_only_itself(
        env: Env) -> None:
    """An approved 0.3 ETH withdrawal mined after the books' cut-off raises nothing: `check`,
    `status` and the ETH balance carry it (and its fee) as unbooked items. A theft after it
    is a shortfall at once, which `discrepancies show` lists beside the items that do not
    explain it."""
    assert env.cli("run", "--once").code == 1  # the first cycle starts the transfer scan
    head = int(env.node.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    env.node.call("evm_setNextBlockTimestamp", [max(head, int(time.time())) + 2])
    (env.cwd / "approved.csv").write_text(
        "id,chain,from_address,to_address,asset,amount,approved_by,approved_at\n"
        f"w-1,devnet,{ALICE},{PAYEE},ETH,0.3,carol,"
        f"{datetime.fromtimestamp(head, UTC).isoformat()}\n")
    assert env.cli("withdrawals", "import", "approved.csv", feeder=True).code == 0
    impersonate(env.node, ALICE)
    receipt = env.node.transact(PAYEE, value=3 * ETH // 10, sender=ALICE)
    fee = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    assert env.cli("run", "--once").code == 1  # the fixture's USDC shortfall only
    listed = env.cli("discrepancies", "list", "--json").json()
    assert [(f["type"], f["asset"], f["in_transit"]) for f in listed] == [
        ("balance_shortfall", "USDC", "0")], listed
    checked = env.cli("check", "devnet", ALICE, "--json").json()
    eth = next(b for b in checked["balances"] if b["asset"] == "ETH")
    assert (eth["ledger"], eth["in_transit"], eth["difference"]) == (
        str(10 * ETH), str(-3 * ETH // 10 - fee), "0")
    assert sorted((i["what"], i["direction"], i["amount"], i["side"])
                  for i in checked["reconciling_items"]) == [
        ("fee", "out", str(fee), "unbooked"), ("transfer", "out", str(3 * ETH // 10),
                                                "unbooked")]
    status = env.cli("status", "--json").json()
    assert len(status["chains"][0]["reconciling_items"]) == 2
    assert "2 reconciling items" in env.cli("status").stdout
    env.node.transact(PAYEE, value=ETH, sender=ALICE)  # no instruction: a theft
    assert env.cli("run", "--once").code == 1
    found = {f["type"]: f for f in env.cli("discrepancies", "list", "--json").json()
             if f["asset"] == "ETH"}
    assert set(found) == {"unauthorized_outflow", "balance_shortfall"}
    short = found["balance_shortfall"]
    assert short["in_transit"] == str(-3 * ETH // 10 - fee)
    assert int(short["expected"]) == 10 * ETH - 3 * ETH // 10 - fee
    shown = env.cli("discrepancies", "show", str(short["id"]), "--json").json()
    assert len(shown["reconciling_items"]) == 2  # the withdrawal's, not the theft's


def test_check_reports_balances_ledger_and_findings(env: Env) -> None:
    """`check --json` has the SPEC shape: head, balances with ledger and difference, findings."""
    result = env.cli("check", "devnet", ALICE.lower(), "--json")
    assert result.code == 1, result.stderr
    doc = result.json()
    assert doc["address"] == ALICE and doc["chain"] == "devnet"
    assert set(doc["head"]) == {"height", "hash"}
    balances = {b["asset"]: b for b in doc["balances"]}
    assert balances["ETH"] == {"asset": "ETH", "contract": None, "onchain": str(10 * ETH),
                               "ledger": str(10 * ETH), "in_transit": "0",
                               "expected": str(10 * ETH), "difference": "0", "error": None}
    assert doc["reconciling_items"] == []  # nothing moved since the books were cut
    assert balances["USDC"]["difference"] == str(-100 * 10**6)
    assert [f["type"] for f in doc["findings"]] == ["balance_shortfall"]
    assert doc["status"] == "discrepancy"
    assert ("token", "in", str(2_400 * 10**6)) in {
        (t["kind"], t["direction"], t["amount"]) for t in doc["transfers"]}  # the mint
    assert env.cli("discrepancies", "list", "--json").json() == []  # check persists nothing


def test_check_house_wallet_and_unknown_wallet(env: Env) -> None:
    """A house wallet never shows client findings; an unknown wallet is reported as such."""
    house = env.cli("check", "devnet", HOUSE, "--json")
    assert house.code == 0 and house.json()["findings"] == []
    stranger = env.cli("check", "devnet", "0x" + "77" * 20, "--json")
    assert stranger.code == 0
    assert stranger.json()["status"] == "unknown"
    assert stranger.json()["balances"][0]["ledger"] is None


def test_check_ad_hoc_without_configuration(env: Env, tmp_path: Path) -> None:
    """`check anvil ADDRESS --source URL` works with no configuration file at all."""
    bare = tmp_path / "bare"
    bare.mkdir()
    result = segwatch("check", "anvil", ALICE, "--source", env.node.url, "--json", cwd=bare)
    assert result.code == 0, result.stderr
    assert result.json()["balances"][0]["onchain"] == str(10 * ETH)
    assert list(bare.iterdir()) == []  # an ad-hoc check leaves no store behind


def test_balances_are_read_at_confirmation_depth(env: Env, store_url: str) -> None:
    """With confirmations = 3 a deposit in the newest block is not counted yet."""
    write_config(env.cwd, store_url, env.node.url, env.token, confirmations=3)
    env.node.mine(3)
    send_eth(env.node, ALICE, ETH)  # alice now holds 11 ETH at the head
    run = env.cli("run", "--once", "--json")
    (cycle,) = run.json()
    head = env.node.block_number()
    assert cycle["block"]["height"] == head - 3
    assert [f["asset"] for f in cycle["findings"]] == ["USDC"]  # no ETH surplus yet


def test_without_multicall_plain_batches_give_the_same_result(env: Env, store_url: str) -> None:
    """Disabling Multicall3 falls back to plain JSON-RPC batches with the same findings."""
    write_config(env.cwd, store_url, env.node.url, env.token, multicall="")
    (cycle,) = env.cli("run", "--once", "--json").json()
    assert [(f["type"], f["asset"]) for f in cycle["findings"]] == [("balance_shortfall",
                                                                     "USDC")]


def test_reverting_token_is_an_error_for_that_pair_only(env: Env, store_url: str) -> None:
    """A token whose balanceOf reverts gives a read error; the other balances still reconcile."""
    bad = deploy_contract(env.node, "BadToken")
    set_bad_token_mode(env.node, bad, ALICE, 5, 1)
    extra = f', {{ symbol = "BAD", contract = "{bad}", decimals = 0 }}'
    write_config(env.cwd, store_url, env.node.url, env.token, extra_tokens=extra)
    (cycle,) = env.cli("run", "--once", "--json").json()
    assert cycle["error"] is None and cycle["read_errors"] >= 1
    assert [f["asset"] for f in cycle["findings"]] == ["USDC"]


def test_every_source_chain_id_is_checked_at_start(env: Env, store_url: str) -> None:
    """A second source serving another chain is a configuration error (exit 2) at start-up,
    named without its credentials, even though the first source is fine."""
    from chains.evm.devnet import start_anvil
    from tests.anvil import require_anvil

    other = start_anvil(require_anvil(), "--chain-id", "5")
    try:
        wrong = other.url.replace("http://", f"http://ops:{SECRET}@")
        write_config(env.cwd, store_url, env.node.url, env.token, second_source=wrong)
        result = env.cli("run", "--once")
    finally:
        other.stop()
    assert result.code == 2, result.stderr
    assert "serves chain 5" in result.stderr and "31337" in result.stderr
    assert SECRET not in result.stderr


def test_daemon_runs_cycles_and_stops_cleanly_on_sigterm(env: Env) -> None:
    """`segwatch run` reconciles on its interval and exits 0 soon after SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--log-format", "json", "run"],
                            cwd=env.cwd, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("SEGWATCH_")})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if env.cli("status", "--json").json()["chains"][0]["last_cycle_at"]:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr
    assert '"event": "cycle"' in stderr and '"event": "stopped"' in stderr
    assert SECRET not in stderr


def test_check_blocks_lists_transfers_in_the_spec_shape(env: Env) -> None:
    """`check --blocks` lists native and token transfers with direction, log index and
    confirmations, for a wallet in the ledger or not."""
    from chains.evm.devnet import mint

    send_eth(env.node, ALICE, ETH)
    mint(env.node, env.token, ALICE, 7)
    head = env.node.block_number()
    result = env.cli("check", "devnet", ALICE, "--blocks", f"1:{head}", "--json")
    doc = result.json()
    kinds = {(t["kind"], t["asset"], t["direction"], t["amount"]) for t in doc["transfers"]}
    assert ("native", "ETH", "in", str(ETH)) in kinds
    assert ("token", "USDC", "in", "7") in kinds
    token = next(t for t in doc["transfers"] if t["amount"] == "7")
    assert isinstance(token["log_index"], int) and token["confirmations"] == 1
    assert set(token) == {"tx_hash", "block_number", "block_hash", "log_index", "kind", "asset",
                          "contract", "from", "to", "amount", "direction", "confirmations"}
    assert doc["traces"] == "parity"  # anvil serves both; trace_block is probed first
    bad = env.cli("check", "devnet", ALICE, "--blocks", "9:1")
    assert bad.code == 2 and "--blocks" in bad.stderr


def test_withdrawals_import_is_all_or_nothing(env: Env) -> None:
    """A withdrawals file with bad lines is rejected whole with line numbers; a good one
    imports, and importing it again changes nothing."""
    header = "id,chain,from_address,to_address,asset,amount,approved_by,approved_at\n"
    good = f"w1,devnet,{ALICE},{HOUSE},ETH,1,carol,2026-11-20T10:00:00Z\n"
    (env.cwd / "bad.csv").write_text(header + good +
                                     f"w2,devnet,{ALICE},{HOUSE},ETH,-1,carol,2026-11-20\n")
    bad = env.cli("withdrawals", "import", "bad.csv")
    assert bad.code == 2 and "bad.csv:3:" in bad.stderr and "Traceback" not in bad.stderr
    (env.cwd / "good.csv").write_text(header + good)
    first = env.cli("withdrawals", "import", "good.csv", "--json", feeder=True)
    assert first.code == 0, first.stderr
    assert first.json()["new"] == 1
    again = env.cli("withdrawals", "import", "good.csv", "--json", feeder=True)
    assert again.json()["new"] == 0 and again.json()["already_imported"] == 1
