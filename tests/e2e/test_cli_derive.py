"""`segwatch derive CHAIN KEY` through the real entry point (daemon.cli.app.main)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cli import Result, segwatch
from tests.litecoind import LitecoinNode

ZPUB = ("zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUU"
        "kgDKf31mGDtKsAYz2oz2AGutZYs")
BIP84 = ["bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu",
         "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"]
TPUB_DESCRIPTOR = (
    "wpkh([6f2fa1b2/84'/0'/0']tpubDDDDGYiFda8HfJRc2AHFJDxVzzEtBPrKsbh35EaW2UGd5qfzrF2G87ewAgee"
    "RyHEz4iB3kvhAYW1sH6dpLepTkFUzAktumBN8AXeXWE9nd1/0/*)#l6n08zmr")
XPRV = ("xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF"
        "5kejMRNNU3TGtRBeJgk33yuGBxrMPHi")
CONFIG = """
[[chains]]
name = "btc-regtest"
family = "utxo"
network = "regtest"
sources = [{ kind = "esplora", url = "http://127.0.0.1:9/api" }]

[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
sources = [{ kind = "jsonrpc", url = "http://127.0.0.1:9/rpc" }]
"""


def derive(*args: str, cwd: Path) -> Result:
    """Run `segwatch … derive …` in `cwd` (global options may come first)."""
    return segwatch(*args, cwd=cwd)


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_builtin_bitcoin_without_config_lists_bip84_addresses(tmp_path: Path) -> None:
    """A zpub on the built-in bitcoin chain gives BIP-84's receive addresses as JSON."""
    result = derive("derive", "bitcoin", ZPUB, "--count", "2", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.json() == [{"index": 0, "address": BIP84[0]},
                             {"index": 1, "address": BIP84[1]}]
    assert not (tmp_path / "segwatch.db").exists()


def test_start_and_count_pick_a_window(tmp_path: Path) -> None:
    """--start 1 --count 1 is index 1 only."""
    result = derive("derive", "bitcoin", ZPUB, "--start", "1", "--count", "1", "--json",
                    cwd=tmp_path)
    assert result.json() == [{"index": 1, "address": BIP84[1]}]


def test_table_shows_descriptor_paths_and_addresses(tmp_path: Path) -> None:
    """Without --json: the equivalent descriptor, then index, path and address per row."""
    result = derive("derive", "bitcoin", ZPUB, "--count", "2", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "wpkh(xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3X" in result.stdout
    assert "0/1" in result.stdout
    for address in BIP84:
        assert address in result.stdout


def test_configured_chain_gives_its_network(tmp_path: Path) -> None:
    """A configured regtest chain derives bcrt1 addresses from a tpub descriptor."""
    (tmp_path / "segwatch.toml").write_text(CONFIG)
    result = derive("derive", "btc-regtest", TPUB_DESCRIPTOR, "--count", "3", "--json",
                    cwd=tmp_path)
    assert result.code == 0, result.stderr
    rows = result.json()
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert all(row["address"].startswith("bcrt1q") for row in rows)
    other = tmp_path / "elsewhere"
    other.mkdir()
    again = derive("--config", str(tmp_path / "segwatch.toml"), "derive", "btc-regtest",
                   TPUB_DESCRIPTOR, "--count", "3", "--json", cwd=other)
    assert again.json() == rows


def test_private_key_is_refused_and_not_echoed(tmp_path: Path) -> None:
    """An xprv is exit 2 with one line; the key never appears in the output."""
    result = derive("derive", "bitcoin", XPRV, cwd=tmp_path)
    assert_one_line_error(result, "private key", "public keys only")
    assert XPRV[4:] not in result.stderr + result.stdout


def test_key_of_another_network_is_exit_2(tmp_path: Path) -> None:
    """A mainnet zpub on a regtest chain is a usage error naming both."""
    (tmp_path / "segwatch.toml").write_text(CONFIG)
    result = derive("derive", "btc-regtest", ZPUB, cwd=tmp_path)
    assert_one_line_error(result, "a mainnet key (zpub…) on a regtest chain")


def test_bad_descriptor_checksum_is_exit_2(tmp_path: Path) -> None:
    """A descriptor whose checksum does not match is refused."""
    (tmp_path / "segwatch.toml").write_text(CONFIG)
    result = derive("derive", "btc-regtest", TPUB_DESCRIPTOR[:-1] + "q", cwd=tmp_path)
    assert_one_line_error(result, "checksum")


def test_unknown_and_evm_chains_are_exit_2(tmp_path: Path) -> None:
    """derive needs a utxo chain: configured or built in."""
    assert_one_line_error(derive("derive", "dogechain", ZPUB, cwd=tmp_path),
                          "unknown chain 'dogechain'")
    assert_one_line_error(derive("derive", "ethereum", ZPUB, cwd=tmp_path),
                          "chain 'ethereum' is an evm chain")
    (tmp_path / "segwatch.toml").write_text(CONFIG)
    assert_one_line_error(derive("derive", "ethereum", ZPUB, cwd=tmp_path),
                          "chain 'ethereum' is an evm chain")


def test_named_config_must_exist_and_count_is_bounded(tmp_path: Path) -> None:
    """An explicit --config that is missing, or --count 0, is a usage error."""
    assert_one_line_error(derive("--config", "nope.toml", "derive", "bitcoin", ZPUB,
                                 cwd=tmp_path), "configuration file not found")
    assert_one_line_error(derive("derive", "bitcoin", ZPUB, "--count", "0", cwd=tmp_path),
                          "--count")


LTC_REGTEST_KEY = TPUB_DESCRIPTOR.split("#")[0].replace("/0/*)", "/7/*)")
"""A key of this test alone (branch 7), so that no other test pays its addresses."""


def test_gap_discovery_finds_every_used_address_through_esplora(
        litecoind: LitecoinNode, esplora: str, tmp_path: Path) -> None:
    """`derive CHAIN KEY --gap 5` reads the chain's Esplora source: with addresses 0 and 3
    of the key used on the node, it lists addresses 0..3 and stops after five unused in
    a row (the node here has no descriptor wallets, so segwatch's own derivation, tested
    against published vectors elsewhere, names the addresses to pay)."""
    config = tmp_path / "segwatch.toml"
    config.write_text(f"""
[[chains]]
name = "ltc"
family = "utxo"
network = "litecoin-regtest"
sources = [{{ kind = "esplora", url = "{esplora}" }}]
""")
    listed = derive("derive", "ltc", LTC_REGTEST_KEY, "--count", "4", "--json", cwd=tmp_path)
    expected = [row["address"] for row in listed.json()]
    for index in (0, 3):
        litecoind.send(expected[index], "0.01")
    litecoind.mine(1)
    result = derive("derive", "ltc", LTC_REGTEST_KEY, "--gap", "5", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert [row["address"] for row in result.json()] == expected


def test_gap_discovery_without_an_esplora_source_is_a_usage_error(tmp_path: Path) -> None:
    """--gap on a chain without an esplora source (and no --source) is one line, exit 2."""
    (tmp_path / "segwatch.toml").write_text(CONFIG.replace('kind = "esplora"', 'kind = "core-rpc"'))
    result = derive("derive", "btc-regtest", TPUB_DESCRIPTOR, "--gap", "5", cwd=tmp_path)
    assert_one_line_error(result, "--gap needs an esplora source")
