"""pytest fixtures for two more real EVM node implementations beside anvil: the Hardhat
node (npm hardhat@2, EDR) and ganache (npm ganache@7), pinned in tests/evmnodes and
installed by `make test`. `dev_node(kind)` starts one on a free loopback port (chain id
31337, the well-known test mnemonic, automine) and returns an `AnvilNode` talking to it
(its JSON-RPC helpers are the standard eth_/evm_ ones). Without the npm packages the
tests skip; with CI=true they fail."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.errors import SourceUnavailable
from chains.evm.devnet import START_TIMEOUT, AnvilNode, free_port, start_anvil
from chains.jsonrpc import JsonRpcClient, RetryPolicy
from tests.anvil import require_anvil
from tests.realdeps import missing

NODES = Path(__file__).parent / "evmnodes"
BIN = NODES / "node_modules" / ".bin"
MNEMONIC = "test test test test test test test test test test test junk"
KINDS = ("anvil", "hardhat", "ganache")


def _command(kind: str, port: int) -> list[str]:
    if kind == "hardhat":
        return [str(BIN / "hardhat"), "node", "--hostname", "127.0.0.1", "--port", str(port)]
    return [str(BIN / "ganache"), "--server.host", "127.0.0.1", "--server.port", str(port),
            "--chain.chainId", "31337", "--wallet.mnemonic", MNEMONIC, "--logging.quiet"]


def dev_node(kind: str) -> AnvilNode:
    """Start a `kind` node (anvil, hardhat or ganache); skip (fail under CI) without it."""
    if kind == "anvil":
        return start_anvil(require_anvil())
    binary = BIN / kind
    if not binary.exists():
        missing(f"the {kind} node", f"{binary} not found: run `make test` (npm ci in "
                                    "tests/evmnodes)")
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by AnvilNode.stop)
    process = subprocess.Popen(_command(kind, port), cwd=NODES, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    rpc = JsonRpcClient(url, timeout=5, retry=RetryPolicy(attempts=1, initial_wait=0,
                                                          max_wait=0))
    node = AnvilNode(url, process, rpc, log)
    deadline = time.monotonic() + 4 * START_TIMEOUT  # node.js start-up is slow on 2 cores
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if node.call("eth_chainId") == hex(31337):
                return node
        except SourceUnavailable:
            time.sleep(0.2)
    log.seek(0)
    output = log.read()[-500:].decode(errors="replace")
    node.stop()
    raise RuntimeError(f"the {kind} node did not start: {output}")


@pytest.fixture(scope="session", params=KINDS)
def any_node(request: pytest.FixtureRequest) -> Iterator[AnvilNode]:
    """Each node implementation in turn, one process per test session (and xdist worker)."""
    node = dev_node(str(request.param))
    try:
        yield node
    finally:
        node.stop()
