"""`segwatch run` as operators start it (a subprocess of the real entry point) on a real
anvil: it serves /healthz, stops cleanly on SIGTERM within the bound, refuses a second
daemon on the same SQLite store, and refuses an unusable listen address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from eth_utils.address import to_checksum_address

from chains.evm.devnet import AnvilNode, free_port, install_multicall
from daemon import __version__
from tests.e2e.cli import feeder_env

pytestmark = pytest.mark.anvil
SECRET = "s3cr3t-key-123"
ALICE = "0x1000000000000000000000000000000000000001"
BOB = "0x1000000000000000000000000000000000000b0b"
"""Booked 1 ETH, holds none: a shortfall the daemon finds (and logs)."""


def write_config(cwd: Path, rpc_url: str, listen: str) -> None:
    (cwd / "segwatch.toml").write_text(f"""
[store]
url = "sqlite:///{cwd / 'segwatch.db'}"
[daemon]
listen = "{listen}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
poll_seconds = 0.5
sources = [{{ kind = "jsonrpc", url = "{rpc_url}/?apikey={SECRET}" }}]
""")
    (cwd / "ledger.csv").write_text("chain,address,structure,owner,asset,amount\n"
                                    f"devnet,{ALICE},segregated,alice,ETH,0\n"
                                    f"devnet,{BOB},segregated,bob,ETH,1\n")


def start(cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "run"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_healthy(listen: str, process: subprocess.Popen[str], timeout: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(f"http://{listen}/healthz", timeout=2) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError("the daemon never became healthy")


@pytest.fixture
def cwd(anvil_node: AnvilNode, tmp_path: Path) -> Path:
    install_multicall(anvil_node)
    write_config(tmp_path, anvil_node.url, f"127.0.0.1:{free_port()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    env.update(feeder_env(tmp_path))
    subprocess.run([sys.executable, "-m", "daemon.cli", "ledger", "import", "ledger.csv"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    return tmp_path


def listen_of(cwd: Path) -> str:
    text = (cwd / "segwatch.toml").read_text()
    return text.split('listen = "')[1].split('"')[0]


def test_sigterm_stops_the_daemon_cleanly_and_quickly(cwd: Path) -> None:
    """A running daemon is healthy, and SIGTERM makes it exit 0 well within 15 s; its
    logs are JSON lines (not a terminal) and never contain the source's API key."""
    daemon = start(cwd)
    try:
        health = wait_healthy(listen_of(cwd), daemon)
        assert health["status"] == "ok"
        time.sleep(1.0)  # a few cycles
        # issue 17 item 14: /healthz and `status` say the version, uptime and heartbeat
        assert health["version"] == __version__ and health["uptime_seconds"] >= 0
        assert health["heartbeat_at"] is not None and health["heartbeat_age_seconds"] < 60
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
        shown = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--json"],
                               cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        status = json.loads(shown.stdout)
        assert status["version"] == __version__ and status["daemon"]["version"] == __version__
        assert str(daemon.pid) in status["daemon"]["id"]
        assert 0 <= status["daemon"]["heartbeat_age_seconds"] < 60
        text = subprocess.run([sys.executable, "-m", "daemon.cli", "status"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=60).stdout
        assert f"daemon: segwatch {__version__}" in text and "last heartbeat" in text
        stopped = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert time.monotonic() - stopped < 15
    events = [json.loads(line)["event"] for line in err.splitlines() if line.strip()]
    assert "started" in events and "cycle" in events and events[-1] == "stopped"
    # issue 17 item 14: the finding the daemon opened is a log line of its own
    opened = [json.loads(line) for line in err.splitlines()
              if line.strip() and json.loads(line)["event"] == "finding_opened"]
    assert [(o["type"], o["address"], o["asset"]) for o in opened] == [
        ("balance_shortfall", to_checksum_address(BOB), "ETH")]
    assert SECRET not in out + err


def test_a_second_daemon_on_the_same_sqlite_store_refuses_to_start(cwd: Path) -> None:
    """While one daemon runs, a second on the same SQLite file exits 2 with one line, and
    so does `run --once` (issue 17 item 11: it would cycle the same chains a second time
    beside the daemon); once the daemon has stopped, `run --once` runs."""
    first = start(cwd)
    try:
        wait_healthy(listen_of(cwd), first)
        config = (cwd / "segwatch.toml").read_text()
        (cwd / "second.toml").write_text(config.replace(listen_of(cwd),
                                                        f"127.0.0.1:{free_port()}"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
        second = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", "second.toml",
                                 "run"], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=60)
        once = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--once"], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=60)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "another segwatch daemon is already running" in lines[0]
    assert once.returncode == 2, once.stderr
    (line,) = once.stderr.strip().splitlines()
    assert "already running" in line and "`run --once` included" in line
    after = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--once"], cwd=cwd,
                           env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode in (0, 1), after.stderr  # it cycled (1: the ledger's findings)


def test_a_listen_address_in_use_fails_at_start(cwd: Path) -> None:
    """A listen address another process holds is one line and exit 2, before any cycle."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = (cwd / "segwatch.toml").read_text().replace(listen_of(cwd), f"127.0.0.1:{port}")
        (cwd / "segwatch.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
        result = subprocess.run([sys.executable, "-m", "daemon.cli", "run"], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on" in lines[0], result.stderr
