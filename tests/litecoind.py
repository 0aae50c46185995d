"""pytest fixtures for tests against a real Litecoin Core node in regtest.

Loaded as a plugin from tests/conftest.py: `litecoind` is one node per session, started
in a temporary data directory on free loopback ports, with a `miner` wallet holding
mature coinbase coins. Tests that need their own coins create a wallet of their own
(`LitecoinNode.create_wallet`), so that no other wallet's coin selection spends them.
The binary is `SEGWATCH_LITECOIND`, else `litecoind` on PATH; without one the tests
skip, and with `CI=true` they fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import pytest

from chains.errors import SourceUnavailable
from chains.evm.devnet import free_port
from chains.jsonrpc import JsonRpcClient, RetryPolicy, RpcError
from chains.utxo.core_rpc import coins_to_sats
from tests.realdeps import missing

RPC_USER = "segwatch"
MINER = "miner"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
MATURE_BLOCKS = 110
"""Coinbase outputs mature after 100 blocks: 110 leave ten spendable 50-LTC coinbases."""


def find_litecoind() -> str | None:
    """Return the path of a litecoind binary, or None if there is none."""
    configured = os.environ.get("SEGWATCH_LITECOIND")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("litecoind")


def require_litecoind() -> str:
    """Return the litecoind binary; skip the test without one (fail when CI=true)."""
    binary = find_litecoind()
    if binary is None:
        missing("litecoind", "not found: `apt-get install litecoind` or set SEGWATCH_LITECOIND")
        raise AssertionError("unreachable")
    return binary


class NodeRpcError(RuntimeError):
    """The node answered a helper's call with a JSON-RPC error."""


@dataclass
class LitecoinNode:
    """A running regtest litecoind, its credentials and helpers to fund and spend."""

    rpc_port: int
    password: str
    process: subprocess.Popen[bytes]
    datadir: tempfile.TemporaryDirectory[str]
    log: IO[bytes]
    _clients: dict[str, JsonRpcClient] = field(default_factory=dict)
    _miner_address: str = ""

    @property
    def url(self) -> str:
        """The RPC URL with its credentials: what a segwatch config's `url` holds."""
        return f"http://{RPC_USER}:{self.password}@127.0.0.1:{self.rpc_port}"

    def call(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        """Return the result of one call (amounts as exact decimal strings).

        Raises NodeRpcError for an RPC error, SourceUnavailable when the node is down.
        """
        (result,) = self._client(wallet).batch([(method, list(params))])
        if isinstance(result, RpcError):
            raise NodeRpcError(f"{method}: {result}")
        return result

    def create_wallet(self, name: str | None = None) -> str:
        """Create and load an empty wallet; return its name."""
        wallet = name or f"w{uuid.uuid4().hex[:10]}"
        self.call("createwallet", wallet)
        return wallet

    def new_address(self, wallet: str, kind: str = "bech32") -> str:
        """Return a new address of `wallet`: `bech32` (rltc1…), `legacy` or `p2sh-segwit`."""
        return str(self.call("getnewaddress", "", kind, wallet=wallet))

    def send(self, address: str, amount: Decimal | str, wallet: str = MINER) -> str:
        """Send `amount` LTC (exact decimal) from `wallet` to `address`; return the txid."""
        return str(self.call("sendtoaddress", address, str(Decimal(amount)), wallet=wallet))

    def mine(self, blocks: int = 1) -> list[str]:
        """Mine `blocks` blocks to the miner wallet; return their hashes."""
        return [str(h) for h in self.call("generatetoaddress", blocks, self._miner_address)]

    def height(self) -> int:
        return int(self.call("getblockcount"))

    def unspent_sats(self, address: str, wallet: str, minconf: int = 1) -> int:
        """Return the sum of `wallet`'s unspent outputs at `address`, in litoshis."""
        unspent = self.call("listunspent", minconf, 9_999_999, [address], wallet=wallet)
        return sum(coins_to_sats(u["amount"], "litecoind", "amount") for u in unspent)

    def received_sats(self, address: str, wallet: str, minconf: int = 1) -> int:
        """Return what `address` of `wallet` has received in total, in litoshis."""
        received = self.call("getreceivedbyaddress", address, minconf, wallet=wallet)
        return coins_to_sats(received, "litecoind", "amount")

    def start_mining_wallet(self) -> None:
        """Create the miner wallet and mine until ten coinbases are spendable."""
        self.create_wallet(MINER)
        self._miner_address = self.new_address(MINER)
        self.mine(MATURE_BLOCKS)

    def stop(self) -> None:
        """Stop the node (`stop` RPC, then terminate, then kill) and delete its data."""
        try:
            self.call("stop")
        except (SourceUnavailable, NodeRpcError):
            self.process.terminate()
        for client in self._clients.values():
            client.close()  # litecoind waits for open keep-alive connections before exiting
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.log.close()
        self.datadir.cleanup()

    def output(self) -> str:
        """The node's console output so far (for error messages)."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def _client(self, wallet: str | None) -> JsonRpcClient:
        key = wallet or ""
        if key not in self._clients:
            url = self.url + (f"/wallet/{wallet}" if wallet else "/")
            self._clients[key] = JsonRpcClient(
                url, timeout=60.0, retry=RetryPolicy(attempts=1), parse_float=Decimal)
        return self._clients[key]


def node_args(binary: str, datadir: str, rpc_port: int, password: str) -> list[str]:
    """The command line of a private regtest node listening on loopback only."""
    return [
        binary, "-regtest", "-server", f"-datadir={datadir}", "-printtoconsole",
        "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", f"-rpcport={rpc_port}",
        f"-port={free_port()}", "-listen=0", "-dnsseed=0", "-discover=0",
        f"-rpcuser={RPC_USER}", f"-rpcpassword={password}", "-fallbackfee=0.0001",
        "-txindex=0", "-debug=0",
    ]


def start_litecoind(binary: str, extra_args: Sequence[str] = ()) -> LitecoinNode:
    """Start a regtest node, wait until its RPC answers, fund a miner wallet.

    Raises RuntimeError when it exits or does not answer within START_TIMEOUT seconds.
    """
    datadir = tempfile.TemporaryDirectory(prefix="segwatch-ltc-")
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the node; stop() closes it
    port, password = free_port(), secrets.token_hex(16)
    args = [*node_args(binary, datadir.name, port, password), *extra_args]
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    node = LitecoinNode(port, password, process, datadir, log)
    try:
        _wait_for_rpc(node)
        node.start_mining_wallet()
    except BaseException:
        output = node.output()
        node.stop()
        raise RuntimeError(f"litecoind did not start: {output}") from None
    return node


def _wait_for_rpc(node: LitecoinNode) -> None:
    """Poll until the node answers RPC calls (not warming up). Raises RuntimeError."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"litecoind exited with {node.process.returncode}")
        try:
            node.call("getblockchaininfo")
            return
        except (SourceUnavailable, NodeRpcError):
            time.sleep(0.1)
    raise RuntimeError(f"litecoind did not answer within {START_TIMEOUT} s")


@pytest.fixture(scope="session")
def litecoind() -> Iterator[LitecoinNode]:
    """One regtest litecoind for the whole session, with a funded `miner` wallet."""
    node = start_litecoind(require_litecoind())
    try:
        yield node
    finally:
        node.stop()
