"""End to end on a real regtest litecoind: the CLI imports a ledger, reconciles through a
`core-rpc` source, reports one shortfall, and never prints the RPC password.

Runs on SQLite and on PostgreSQL (the `store_url` fixture), through the real entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cli import Result, feeder_env, segwatch
from tests.litecoind import LitecoinNode

pytestmark = pytest.mark.litecoind


@dataclass
class Env:
    node: LitecoinNode
    cwd: Path
    alice: str
    bob: str

    def cli(self, *args: str, feeder: bool = False) -> Result:
        return segwatch(*args, cwd=self.cwd, env=feeder_env(self.cwd) if feeder else None)


def write_config(cwd: Path, store_url: str, rpc_url: str) -> None:
    (cwd / "segwatch.toml").write_text(f"""
[store]
url = "{store_url}"
[[chains]]
name = "litecoin"
family = "utxo"
network = "litecoin-regtest"
confirmations = 0
sources = [{{ kind = "core-rpc", url = "{rpc_url}" }}]
""")


@pytest.fixture
def env(litecoind: LitecoinNode, store_url: str, tmp_path: Path) -> Env:
    wallet = litecoind.create_wallet()
    alice = litecoind.new_address(wallet, "bech32")
    bob = litecoind.new_address(wallet, "legacy")
    litecoind.send(alice, "1.5")
    litecoind.send(alice, "0.25")
    litecoind.send(bob, "0.3")
    litecoind.mine(1)
    write_config(tmp_path, store_url, litecoind.url)
    (tmp_path / "ledger.csv").write_text(
        "chain,address,structure,owner,asset,amount\n"
        f"litecoin,{alice},segregated,alice,LTC,1.75\n"
        f"litecoin,{bob},omnibus,bob,LTC,0.2\n"
        f"litecoin,{bob},omnibus,carol,LTC,0.15\n"
    )
    e = Env(litecoind, tmp_path, alice, bob)
    assert e.cli("db", "upgrade").code == 0
    return e


def test_cycle_finds_the_one_shortfall_and_never_prints_the_password(env: Env) -> None:
    """One cycle over two funded wallets opens exactly bob's 0.05 LTC shortfall, status
    says discrepancy, and no output contains the RPC password."""
    imported = env.cli("ledger", "import", "ledger.csv", feeder=True)
    assert imported.code == 0, imported.stderr
    run = env.cli("run", "--once", "--json", "-v")
    assert run.code == 1, run.stderr
    (cycle,) = run.json()
    assert cycle["error"] is None and cycle["wallets"] == 2 and cycle["read_errors"] == 0
    (finding,) = cycle["findings"]
    assert (finding["type"], finding["address"], finding["asset"]) == (
        "balance_shortfall", env.bob, "LTC")
    assert (finding["onchain"], finding["ledger"], finding["difference"]) == (
        "30000000", "35000000", "-5000000")
    assert finding["block_number"] == env.node.height()
    status = env.cli("status", "--json")
    assert status.code == 1 and status.json()["status"] == "discrepancy"
    for result in (imported, run, status):
        assert env.node.password not in result.stdout + result.stderr


def test_check_on_a_utxo_chain_lists_the_deposits_with_output_indexes(env: Env) -> None:
    """`check` on a core-rpc chain reads the live balance and lists the wallet's transfers
    in the SPEC §5 shape: kind native, log_index the output index, from/to as lists."""
    result = env.cli("check", "litecoin", env.bob, "--json")
    assert result.code == 0, result.stderr  # no ledger imported in this test
    doc = result.json()
    assert doc["balances"][0]["onchain"] == "30000000"
    (deposit,) = doc["transfers"]
    tx = env.node.call("getrawtransaction", deposit["tx_hash"], True,
                       env.node.call("getbestblockhash"))
    paying = [o["n"] for o in tx["vout"] if o["scriptPubKey"].get("addresses") == [env.bob]]
    assert (deposit["kind"], deposit["direction"], deposit["amount"]) == (
        "native", "in", "30000000")
    assert [deposit["log_index"]] == paying and deposit["to"] == [env.bob]
    assert isinstance(deposit["from"], list) and deposit["confirmations"] == 1
    assert any("core-rpc" in note for note in doc["notes"])


def test_ad_hoc_check_through_esplora_lists_confirmed_and_pending_transfers(
        litecoind: LitecoinNode, esplora: str, tmp_path: Path) -> None:
    """`check litecoin-regtest ADDRESS --source ESPLORA` needs no configuration: it reads
    the balance and lists the address's transfers, a mined deposit with its confirmations
    and output index, and a pending one with no block and 0 confirmations."""
    wallet = litecoind.create_wallet()
    address = litecoind.new_address(wallet)
    mined = litecoind.send(address, "0.4")
    litecoind.mine(2)
    pending = litecoind.send(address, "0.1")
    result = segwatch("check", "litecoin-regtest", address, "--source", esplora, "--json",
                      cwd=tmp_path)
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["balances"][0]["onchain"] == "40000000"
    by_tx = {t["tx_hash"]: t for t in doc["transfers"]}
    assert set(by_tx) == {mined, pending}
    assert (by_tx[mined]["confirmations"], by_tx[mined]["direction"], by_tx[mined]["to"]) == (
        2, "in", [address])
    assert by_tx[mined]["block_number"] == litecoind.height() - 1
    assert (by_tx[pending]["block_number"], by_tx[pending]["confirmations"]) == (None, 0)
    assert by_tx[pending]["amount"] == "10000000" and by_tx[mined]["from"]
