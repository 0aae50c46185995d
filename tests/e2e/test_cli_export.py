"""The export commands through the real entry point on real nodes: anvil (EVM balances
read at the pinned block) and litecoind (UTXO balances rolled back from the tip to the
block at confirmation depth)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from chains.evm.devnet import AnvilNode, install_multicall, set_balances
from tests.e2e.cli import Result, feeder_env, segwatch, token_env
from tests.litecoind import LitecoinNode

ALICE = "0x1000000000000000000000000000000000000001"
OMNI = "0x1000000000000000000000000000000000000002"
ETH = 10**18


def cli(cwd: Path, *args: str) -> Result:
    return segwatch(*args, cwd=cwd, timeout=180)


@pytest.mark.anvil
def test_export_verify_recheck_and_prove_on_anvil(anvil_node: AnvilNode,
                                                  tmp_path: Path) -> None:
    """keys generate → export → verify (and --recheck against anvil) → proof → verify-proof
    against the package; an altered CSV makes verify exit 1 naming it; a missing key or a
    non-empty output is one line and exit 2."""
    install_multicall(anvil_node)
    set_balances(anvil_node, {ALICE: 2 * ETH, OMNI: 3 * ETH})
    anvil_node.mine(3)
    (tmp_path / "segwatch.toml").write_text(f"""
[store]
url = "sqlite:///{tmp_path / 'segwatch.db'}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 2
sources = [{{ kind = "jsonrpc", url = "{anvil_node.url}" }}]
""")
    (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                         f"devnet,{ALICE},segregated,alice,ETH,2\n"
                                         f"devnet,{OMNI},omnibus,bob,ETH,1\n"
                                         f"devnet,{OMNI},omnibus,carol,ETH,2\n")
    assert segwatch("ledger", "import", "ledger.csv", cwd=tmp_path,
                    env=feeder_env(tmp_path)).code == 0
    generated = cli(tmp_path, "keys", "generate", "--out", "sign.pem")
    assert generated.code == 0
    fingerprint = generated.stdout.split("fingerprint: ")[1].split()[0]
    missing = cli(tmp_path, "export", "--out", "pkg")
    assert missing.code == 2 and "--sign-key" in missing.stderr
    anonymous = cli(tmp_path, "export", "--out", "pkg", "--sign-key", "sign.pem")
    assert anonymous.code == 2 and "needs credentials" in anonymous.stderr
    auditor = token_env(tmp_path, "auditor")
    made = segwatch("export", "--out", "pkg", "--sign-key", "sign.pem", "--json",
                    cwd=tmp_path, env=auditor, timeout=180)
    assert made.code == 0, made.stderr
    head = anvil_node.block_number()
    assert made.json()["chains"][0]["block"]["height"] == head - 2
    verified = cli(tmp_path, "export", "verify", "pkg", "--recheck", "--json",
                   "--public-key", "sign.pem.pub")
    assert verified.code == 0 and verified.json() == {"ok": True, "problems": []}
    unpinned = cli(tmp_path, "export", "verify", "pkg")  # no trusted signer given
    assert unpinned.code == 1 and "UNTRUSTED: signed by key " + fingerprint in unpinned.stdout
    by_print = cli(tmp_path, "export", "verify", "pkg", "--fingerprint", fingerprint)
    assert by_print.code == 0, by_print.stdout
    private = cli(tmp_path, "export", "verify", "pkg", "--public-key", "sign.pem")
    assert private.code == 2 and "this is a private key" in private.stderr
    proofs = cli(tmp_path, "export", "proof", "pkg", "--owner", "carol")
    assert proofs.code == 0
    (tmp_path / "carol.json").write_text(proofs.stdout)
    document = json.loads(proofs.stdout)
    assert document["owner"] == "carol" and len(document["secret"]) == 64
    assert sum(int(p["leaf"]["amount"]) for p in document["proofs"]) == 2 * ETH
    checked = cli(tmp_path, "export", "verify-proof", "carol.json", "--package", "pkg",
                  "--fingerprint", fingerprint)
    assert checked.code == 0, checked.stdout
    alone = cli(tmp_path, "export", "verify-proof", "carol.json")  # only proof and secret
    assert alone.code == 0, alone.stdout
    bob = json.loads(cli(tmp_path, "export", "proof", "pkg", "--owner", "bob").stdout)
    (tmp_path / "shown.json").write_text(json.dumps({**document, "proofs": bob["proofs"]}))
    shown = cli(tmp_path, "export", "verify-proof", "shown.json")  # bob's leaves as carol's
    assert shown.code == 1 and "is not carol's" in shown.stdout
    again = segwatch("export", "--out", "pkg", "--sign-key", "sign.pem", cwd=tmp_path,
                     env=auditor, timeout=180)
    assert again.code == 2 and len(again.stderr.strip().splitlines()) == 1
    wallets = tmp_path / "pkg" / "wallets.csv"
    wallets.write_text(wallets.read_text().replace(str(3 * ETH), str(4 * ETH)))
    broken = cli(tmp_path, "export", "verify", "pkg", "--fingerprint", fingerprint)
    assert broken.code == 1 and "wallets.csv" in broken.stdout


@pytest.mark.litecoind
def test_utxo_export_rolls_balances_back_to_the_pinned_block(litecoind: LitecoinNode,
                                                            tmp_path: Path) -> None:
    """With confirmations = 2 the package pins tip - 2; a deposit in the two newer blocks
    is not in the pinned balance (rolled back through the transfer scan), and
    `verify --recheck` agrees."""
    wallet = litecoind.create_wallet()
    address = litecoind.new_address(wallet)
    litecoind.send(address, Decimal("0.7"))
    litecoind.mine(1)
    (tmp_path / "segwatch.toml").write_text(f"""
[store]
url = "sqlite:///{tmp_path / 'segwatch.db'}"
[[chains]]
name = "ltc"
family = "utxo"
network = "litecoin-regtest"
confirmations = 2
sources = [{{ kind = "core-rpc", url = "{litecoind.url}" }}]
""")
    (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                         f"ltc,{address},segregated,alice,LTC,0.7\n")
    assert segwatch("ledger", "import", "ledger.csv", cwd=tmp_path,
                    env=feeder_env(tmp_path)).code == 0
    assert cli(tmp_path, "run", "--once").code in (0, 1)  # tracks the wallet's outputs
    litecoind.mine(2)
    litecoind.send(address, Decimal("0.2"))
    litecoind.mine(2)
    assert cli(tmp_path, "keys", "generate", "--out", "k.pem").code == 0
    made = segwatch("export", "--out", "pkg.zip", "--sign-key", "k.pem", "--json",
                    cwd=tmp_path, env=token_env(tmp_path, "auditor"), timeout=180)
    assert made.code == 0, made.stderr
    assert made.json()["chains"][0]["block"]["height"] == litecoind.height() - 2
    verified = cli(tmp_path, "export", "verify", "pkg.zip", "--recheck", "--json",
                   "--public-key", "k.pem.pub")
    assert verified.json() == {"ok": True, "problems": []}, verified.stdout
    import zipfile
    with zipfile.ZipFile(tmp_path / "pkg.zip") as zf:
        wallets = zf.read("wallets.csv").decode()
    assert f"{address},segregated,LTC,70000000,70000000,0,70000000,0,ok" in wallets
