"""Fail closed through the real entry point, on a real anvil: when every balance read is
refused by the node (as ganache 7 refuses block-hash parameters), nothing is reported
as reconciled — `run --once`, `status` and `check` exit 3 and say the balances are
unverified. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chains.evm.devnet import AnvilNode, set_balances
from tests.e2e.cli import feeder_env, segwatch
from tests.liarproxy import LiarProxy

pytestmark = pytest.mark.anvil

ETH = 10**18
ALICE = "0x1000000000000000000000000000000000000001"


def test_unreadable_balances_are_never_reported_as_reconciled(
        anvil_node: AnvilNode, store_url: str, tmp_path: Path) -> None:
    """Every balance read refused: `run --once` exits 3 and logs the read errors as a
    warning, `status` says `unverified` (exit 3), `check` says `unverified` (exit 3) and
    shows the node's error text as written (its `[/bold]` is not Rich markup)."""
    set_balances(anvil_node, {ALICE: 10 * ETH})
    proxy = LiarProxy(anvil_node.url, "refuse").start()
    try:
        (tmp_path / "segwatch.toml").write_text(f"""
[store]
url = "{store_url}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
multicall = ""
sources = [{{ kind = "jsonrpc", url = "{proxy.url}" }}]
""")
        (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                             f"devnet,{ALICE},segregated,alice,ETH,10\n")
        assert segwatch("db", "upgrade", cwd=tmp_path).code == 0
        imported = segwatch("ledger", "import", "ledger.csv", cwd=tmp_path,
                            env=feeder_env(tmp_path))
        assert imported.code == 0, imported.stderr
        once = segwatch("--log-format", "json", "run", "--once", cwd=tmp_path)
        assert once.code == 3, once.stderr
        assert "1 read error," in once.stdout
        cycle = [json.loads(line) for line in once.stderr.splitlines()
                 if '"event": "cycle"' in line]
        assert cycle and cycle[0]["level"] == "warning" and cycle[0]["read_errors"] == 1
        status = segwatch("status", "--json", cwd=tmp_path)
        assert status.code == 3 and status.json()["status"] == "unverified"
        check = segwatch("check", "devnet", ALICE, "--json", cwd=tmp_path)
        assert check.code == 3 and check.json()["status"] == "unverified"
        assert "Cannot wrap" in check.json()["balances"][0]["error"]
        shown = segwatch("check", "devnet", ALICE, cwd=tmp_path, env={"COLUMNS": "300"})
        assert shown.code == 3 and "[/bold] [red]" in shown.stdout  # as written, not markup
        assert "status: unverified" in shown.stdout
    finally:
        proxy.stop()
