"""Bad input through the real entry point: one clear line, the documented exit code."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from daemon.store.db import head_revision
from tests.e2e.cli import feeder_env, segwatch

CHAIN = """
[store]
url = "sqlite:///sw.db"
[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
sources = [{ kind = "jsonrpc", url = "http://user:hunter2@127.0.0.1:9/rpc/SECRETKEY1234567890abcdef?apikey=TOPSECRET" }]
tokens = [{ symbol = "USDC", contract = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", decimals = 6 }]
"""
GOOD = "0x52908400098527886E0F7030069857D2E4169EE7"
SECRETS = ("hunter2", "SECRETKEY1234567890abcdef", "TOPSECRET")


def write_config(tmp_path: Path, text: str = CHAIN) -> None:
    (tmp_path / "segwatch.toml").write_text(text)


def assert_one_line_error(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr


def test_malformed_toml_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    """A TOML syntax error is one line naming the file, exit 2."""
    write_config(tmp_path, "[store\nurl=1")
    result = segwatch("status", cwd=tmp_path)
    assert result.code == 2
    assert_one_line_error(result.stderr)
    assert "segwatch.toml: malformed TOML" in result.stderr


def test_each_bad_config_value_gets_its_own_line(tmp_path: Path) -> None:
    """Unknown family, bad URL, negative interval and an unknown key are each named."""
    write_config(tmp_path, """
[[chains]]
name = "x"
family = "solana"
poll_seconds = -5
colour = "red"
sources = [{ kind = "jsonrpc", url = "not a url" }]
""")
    result = segwatch("status", cwd=tmp_path)
    assert result.code == 2
    err = result.stderr
    assert "chains['x'].family: unknown family 'solana'" in err
    assert "chains['x'].poll_seconds" in err
    assert "chains['x'].colour: unknown key" in err
    assert "chains['x'].sources[0].url: bad URL" in err
    assert "Traceback" not in err


def test_duplicate_chain_and_token_without_decimals(tmp_path: Path) -> None:
    """A duplicate chain name and a token without decimals are configuration errors."""
    write_config(tmp_path, CHAIN + CHAIN.split("[store]\nurl = \"sqlite:///sw.db\"")[1])
    result = segwatch("status", cwd=tmp_path)
    assert result.code == 2 and "duplicate chain name 'ethereum'" in result.stderr
    write_config(tmp_path, CHAIN.replace(", decimals = 6", ""))
    result = segwatch("status", cwd=tmp_path)
    assert result.code == 2 and "tokens[0].decimals: required key is missing" in result.stderr


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    """A command that needs configuration says where it looked."""
    result = segwatch("--config", "nope.toml", "status", cwd=tmp_path)
    assert result.code == 2
    assert "nope.toml: configuration file not found" in result.stderr


def test_unknown_chain_in_check_is_exit_2(tmp_path: Path) -> None:
    """`check` on a chain neither configured nor built in is a usage error."""
    write_config(tmp_path)
    result = segwatch("check", "dogechain", GOOD, cwd=tmp_path)
    assert result.code == 2
    assert_one_line_error(result.stderr)
    assert "unknown chain 'dogechain'" in result.stderr


def test_bad_checksum_address_is_exit_2(tmp_path: Path) -> None:
    """A mixed-case EVM address with a wrong EIP-55 checksum is rejected before any read."""
    write_config(tmp_path)
    bad = GOOD[:-1] + "e"
    result = segwatch("check", "ethereum", bad, cwd=tmp_path)
    assert result.code == 2
    assert_one_line_error(result.stderr)
    assert "checksum" in result.stderr


def test_unreachable_source_is_exit_3_without_secrets(tmp_path: Path) -> None:
    """A source that does not answer is exit 3, named without credentials or keys."""
    write_config(tmp_path)
    result = segwatch("check", "ethereum", GOOD.lower(), cwd=tmp_path)
    assert result.code == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert "source jsonrpc-1 unavailable" in result.stderr
    for secret in SECRETS:
        assert secret not in result.stderr + result.stdout


def test_run_once_with_unreachable_source_is_exit_3_without_secrets(tmp_path: Path) -> None:
    """A cycle whose every source fails exits 3; logs and output never carry the secrets."""
    write_config(tmp_path)
    result = segwatch("run", "--once", "--json", cwd=tmp_path)
    assert result.code == 3
    (cycle,) = result.json()
    assert cycle["chain"] == "ethereum" and "unavailable" in cycle["error"]
    for secret in SECRETS:
        assert secret not in result.stderr + result.stdout


def test_check_without_config_needs_a_builtin_chain_and_source(tmp_path: Path) -> None:
    """Without a configuration, `check` works only on a built-in chain with --source."""
    result = segwatch("check", "ethereum", GOOD, cwd=tmp_path)
    assert result.code == 2 and "configuration file not found" in result.stderr
    result = segwatch("check", "ethereum", GOOD, "--source", "ftp://x", cwd=tmp_path)
    assert result.code == 2 and "--source: bad URL" in result.stderr


def test_usage_error_is_exit_2(tmp_path: Path) -> None:
    """An unknown option is a usage error with exit 2 and no traceback."""
    result = segwatch("status", "--bogus", cwd=tmp_path)
    assert result.code == 2
    assert "Traceback" not in result.stderr and "bogus" in result.stderr


def test_bad_ledger_is_rejected_whole(tmp_path: Path) -> None:
    """A ledger with bad lines lists each with its line number, exits 2, writes nothing."""
    write_config(tmp_path)
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n"
                      f"ethereum,{GOOD},segregated,alice,ETH,1\n"
                      f"ethereum,{GOOD[:-1]}e,segregated,bob,ETH,1\n"
                      f"ethereum,{GOOD},segregated,alice,USDC,1.1234567\n")
    result = segwatch("ledger", "import", "ledger.csv", cwd=tmp_path)
    assert result.code == 2
    assert "ledger.csv:3:" in result.stderr and "ledger.csv:4:" in result.stderr
    assert "Traceback" not in result.stderr
    listed = segwatch("discrepancies", "list", "--json", cwd=tmp_path)
    assert listed.code == 0 and listed.json() == []
    status = segwatch("status", "--json", cwd=tmp_path)
    assert status.json()["chains"][0]["status"] == "stale"


def test_ledger_dry_run_validates_without_writing(tmp_path: Path) -> None:
    """--dry-run reports a valid ledger and leaves the store without a snapshot."""
    write_config(tmp_path)
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(f"chain,address,structure,owner,asset,amount\nethereum,{GOOD},segregated,"
                      "alice,ETH,1\n")
    result = segwatch("ledger", "import", "ledger.csv", "--dry-run", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["dry_run"] is True and doc["snapshot"] is None
    real = segwatch("ledger", "import", "ledger.csv", "--json", cwd=tmp_path,
                    env=feeder_env(tmp_path))
    assert real.code == 0 and real.json()["snapshot"] == 1


def test_unknown_discrepancy_id_is_exit_2(tmp_path: Path) -> None:
    """`discrepancies show` of an id that does not exist is one line, exit 2."""
    write_config(tmp_path)
    assert segwatch("db", "upgrade", cwd=tmp_path).code == 0
    result = segwatch("discrepancies", "show", "42", cwd=tmp_path)
    assert result.code == 2
    assert_one_line_error(result.stderr)
    assert "no discrepancy with id 42" in result.stderr


def test_db_upgrade_reports_the_revision(tmp_path: Path) -> None:
    """`db upgrade --json` migrates and names the revision."""
    write_config(tmp_path)
    result = segwatch("db", "upgrade", "--json", cwd=tmp_path)
    assert result.code == 0 and result.json() == {"revision": head_revision()}


def test_ledger_cut_off_through_the_cli(tmp_path: Path) -> None:
    """`ledger import --as-of`: stored and echoed; without it the CLI says the import time
    is the cut-off; no timezone, not a time, or the future: one line, exit 2, nothing
    imported."""
    write_config(tmp_path)
    (tmp_path / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                         f"ethereum,{GOOD},segregated,alice,ETH,1\n")
    env = feeder_env(tmp_path)
    for bad, why in (("2026-11-20T10:00:00", "give a timezone"), ("yesterday", "ISO-8601"),
                     ("2999-01-01T00:00:00Z", "in the future")):
        refused = segwatch("ledger", "import", "ledger.csv", "--as-of", bad, cwd=tmp_path,
                           env=env)
        lines = refused.stderr.strip().splitlines()
        assert refused.code == 2 and len(lines) == 1 and why in lines[0], refused
    plain = segwatch("ledger", "import", "ledger.csv", cwd=tmp_path, env=env)
    assert plain.code == 0 and "the import time is the books' cut-off" in plain.stdout
    cut = segwatch("ledger", "import", "ledger.csv", "--as-of", "2999-01-01T00:00:00+00:00",
                   "--dry-run", "--json", cwd=tmp_path)
    assert cut.code == 2
    given = segwatch("ledger", "import", "ledger.csv", "--as-of",
                     datetime.now(UTC).isoformat(), "--json", cwd=tmp_path, env=env)
    assert given.code == 0 and given.json()["as_of_given"] is True
    assert given.json()["snapshot"] == 2
