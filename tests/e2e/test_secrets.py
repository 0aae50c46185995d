"""No API key ever leaves segwatch: keys of 8, 12, 16 and 32 characters in a source URL's
path, query and user info and in `headers_env` headers, and in a dead source's and an
alert sink's URL, must not appear in any output of the real CLI, in the SQLite file, on
/metrics or /healthz, or in any file of an export package (issue 12, SPEC §11).

The sources are a real anvil behind a loopback forwarder (tests/faultproxy.py with no
faults) that ignores the path, query and user info, so every key-laden URL really works.
"""

from __future__ import annotations

import os
import secrets
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from chains.evm.devnet import AnvilNode, free_port, install_multicall, set_balances
from tests.e2e.cli import Result, feeder_env, segwatch, token_env
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.anvil

ETH = 10**18
ALICE = "0x1000000000000000000000000000000000000001"
OMNI = "0x1000000000000000000000000000000000000002"
LENGTHS = (8, 12, 16, 32)
PLACES = ("path", "query", "user", "header")
_ALPHABET = string.ascii_letters + string.digits


def _key(length: int) -> str:
    """A random key: no accidental match in block hashes (hex) or other output."""
    while True:
        key = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if any(c.isupper() for c in key) and any(c.isdigit() for c in key):
            return key


@dataclass
class World:
    cwd: Path
    listen: str
    keys: dict[str, str]
    """`place-length` (and `dead-…`, `alert-…`, `sign`, `metrics`) → the key."""
    env: dict[str, str]
    adhoc: str
    """A dead source URL with keys, for `check --source`."""
    captured: list[tuple[str, str]] = field(default_factory=list)
    """(what, text) of everything segwatch printed or served."""
    store_while_running: list[tuple[str, bytes]] = field(default_factory=list)
    """(file name, bytes) of the SQLite files while the daemon ran."""

    def cli(self, *args: str, expect: int | tuple[int, ...] = 0) -> Result:
        result = segwatch(*args, cwd=self.cwd, env=self.env)
        label = " ".join(args)
        self.captured += [(f"{label}: stdout", result.stdout),
                          (f"{label}: stderr", result.stderr)]
        codes = (expect,) if isinstance(expect, int) else expect
        assert result.code in codes, (label, result.code, result.stdout, result.stderr)
        return result

    def leaks(self) -> list[str]:
        """`what: key` for every captured text holding any key."""
        return [f"{what}: {name}" for what, text in self.captured
                for name, key in self.keys.items() if key in text]


def _config(cwd: Path, proxy: str, dead: str, sink: str, listen: str,
            keys: dict[str, str]) -> str:
    """Four live sources (one per key length, each with its key in path, query, user info
    and a header), a chain whose only source is dead, and a webhook sink that is dead."""
    host = proxy.removeprefix("http://")
    live = []
    for index, n in enumerate(LENGTHS):
        user = (f"{keys[f'user-{n}']}:x" if index % 2 else f"ops:{keys[f'user-{n}']}")
        url = f"http://{user}@{host}/v3/{keys[f'path-{n}']}?apikey={keys[f'query-{n}']}"
        live.append(f'{{ kind = "jsonrpc", url = "{url}", '
                    f'headers_env = {{ "X-Api-Key" = "SW_TEST_HEADER_{n}" }} }}')
    d = dead.removeprefix("http://")
    dead_url = (f"http://ops:{keys['dead-user']}@{d}/rpc/{keys['dead-path']}"
                f"?key={keys['dead-query']}")
    sink_url = f"{sink}/hooks/{keys['alert-path']}?token={keys['alert-query']}"
    return f"""
[store]
url = "sqlite:///{cwd / 'segwatch.db'}"
[daemon]
listen = "{listen}"
metrics_token_env = "SW_TEST_METRICS"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
poll_seconds = 0.5
verify = 2
sources = [{", ".join(live)}]
[[alerts]]
kind = "webhook"
url = "{sink_url}"
secret_env = "SW_TEST_ALERT_SECRET"
# the dead chain (left out of live.toml, which the export reads)
[[chains]]
name = "deadnet"
family = "evm"
chain_id = 31337
confirmations = 0
sources = [{{ kind = "jsonrpc", name = "dead-rpc", url = "{dead_url}", headers_env = {{ "Authorization" = "SW_TEST_DEAD_HEADER" }} }}]
"""


@pytest.fixture
def world(anvil_node: AnvilNode, tmp_path: Path) -> Iterator[World]:
    install_multicall(anvil_node)
    set_balances(anvil_node, {ALICE: 9 * ETH, OMNI: 12 * ETH})  # alice 1 ETH short
    keys = {f"{place}-{n}": _key(n) for place in PLACES for n in LENGTHS}
    keys |= {"dead-user": _key(8), "dead-path": _key(12), "dead-query": _key(16),
             "dead-header": _key(32), "alert-path": _key(12), "alert-query": _key(8),
             "alert-secret": _key(32), "metrics": _key(16), "adhoc-path": _key(8),
             "adhoc-user": _key(12), "adhoc-query": _key(16)}
    env = {f"SW_TEST_HEADER_{n}": keys[f"header-{n}"] for n in LENGTHS}
    env |= {"SW_TEST_DEAD_HEADER": f"Bearer {keys['dead-header']}",
            "SW_TEST_ALERT_SECRET": keys["alert-secret"], "SW_TEST_METRICS": keys["metrics"]}
    listen = f"127.0.0.1:{free_port()}"
    with FaultProxy(anvil_node.url, seed=12, rate=0.0, timeout=10.0) as proxy:
        dead, sink = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        config = _config(tmp_path, proxy.url, dead, sink, listen, keys)
        (tmp_path / "segwatch.toml").write_text(config)
        (tmp_path / "live.toml").write_text(config.split("# the dead chain")[0])
        (tmp_path / "ledger.csv").write_text(
            "chain,address,structure,owner,asset,amount\n"
            f"devnet,{ALICE},segregated,alice,ETH,10\n"
            f"devnet,{OMNI},omnibus,bob,ETH,5\n"
            f"devnet,{OMNI},omnibus,carol,ETH,7\n")
        adhoc = (f"http://{keys['adhoc-user']}@127.0.0.1:{free_port()}/"
                 f"{keys['adhoc-path']}?k={keys['adhoc-query']}")
        yield World(tmp_path, listen, keys, env, adhoc)


def _get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=timeout)
    return response.status_code, response.text


def _serve(world: World) -> None:
    """A short real `segwatch run`: GET /healthz and /metrics (with and without the
    token) while it reconciles, then SIGTERM; everything it logged is captured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")} | world.env
    daemon = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run"], cwd=world.cwd,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    base = f"http://{world.listen}"
    try:
        deadline = time.monotonic() + 30
        health: tuple[int, str] | None = None
        while time.monotonic() < deadline and health is None:
            assert daemon.poll() is None, daemon.communicate()
            try:
                health = _get(f"{base}/healthz")
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, "the daemon never answered /healthz"
        time.sleep(1.5)  # a few cycles, and the dead chain's failures
        metrics = _get(f"{base}/metrics", world.keys["metrics"])
        anonymous = _get(f"{base}/metrics")
        health = _get(f"{base}/healthz")
        world.captured += [("/healthz", health[1]), ("/metrics", metrics[1]),
                           ("/metrics without token", anonymous[1])]
        # the store as the running daemon left it: the -wal file is still there
        world.store_while_running = [(name, data) for name, data in _files(world.cwd)
                                     if name.split("/")[-1].startswith("segwatch.db")]
        assert metrics[0] == 200 and "segwatch_" in metrics[1], metrics
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    world.captured += [("run (daemon): stdout", out), ("run (daemon): stderr", err)]
    assert daemon.returncode == 0, err


def _files(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield str(path.relative_to(root.parent)), path.read_bytes()


def test_no_key_appears_in_output_store_metrics_or_export(world: World) -> None:
    """Every command an operator runs, the daemon and its listener, the store file and an
    export package: none holds any of the keys."""
    world.env.update(feeder_env(world.cwd, env=world.env))
    world.cli("ledger", "import", "ledger.csv")
    world.cli("run", "--once", expect=(1, 3))  # alice's shortfall; deadnet unavailable
    world.cli("run", "--once", "--json", expect=(1, 3))
    world.cli("status", expect=(0, 1, 3))
    status = world.cli("status", "--json", expect=(0, 1, 3)).json()
    assert "devnet" in str(status)
    checked = world.cli("check", "devnet", ALICE, "--json", expect=1).json()
    assert checked  # a shortfall, read through the keyed sources
    world.cli("check", "devnet", ALICE, expect=1)
    failed = world.cli("check", "deadnet", ALICE, expect=3)
    # one line naming the source: by name (source names) or by its redacted URL's host
    assert len(failed.stderr.strip().splitlines()) == 1
    assert "dead-rpc" in failed.stderr or "127.0.0.1" in failed.stderr
    world.cli("check", "deadnet", ALICE, "--json", expect=3)
    world.cli("check", "devnet", ALICE, "--source", world.adhoc, expect=3)
    found = world.cli("discrepancies", "list", "--json").json()
    assert found, "the shortfall should be listed"
    world.cli("discrepancies", "list")
    world.cli("keys", "generate", "--out", "sign.pem")
    world.env.update(token_env(world.cwd, "auditor", "live.toml", env=world.env))
    world.cli("--config", "live.toml", "export", "--out", "pkg", "--sign-key", "sign.pem",
              "--json")
    world.cli("--config", "live.toml", "export", "verify", "pkg", expect=(0, 1))
    _serve(world)

    stored = [(name, data) for name, data in _files(world.cwd)
              if name.split("/")[-1].startswith("segwatch.db")]
    assert any(n.endswith("segwatch.db") for n, _ in stored)
    assert any(n.endswith("segwatch.db-wal") for n, _ in world.store_while_running)
    stored += world.store_while_running
    package = list(_files(world.cwd / "pkg"))
    assert any(n.endswith("manifest.json") for n, _ in package)
    assert any(n.endswith("report.html") for n, _ in package)
    leaked = world.leaks() + [f"{name}: {key_name}" for name, data in stored + package
                              for key_name, key in world.keys.items() if key.encode() in data]
    assert leaked == []
