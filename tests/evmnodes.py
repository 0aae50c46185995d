"""pytest fixtures for two more real EVM dev nodes next to anvil: Hardhat Network and Ganache.

Install (from the repo root; tests/evmnodes/package-lock.json pins every package):

    cd tests/evmnodes && npm ci --no-audit --no-fund --silent

Loaded as a plugin from tests/conftest.py: `hardhat` and `ganache` are one node each per
session (per pytest-xdist worker), on a free loopback port, chain id 31337, with the
well-known test mnemonic, so the dev account is anvil's (`chains.evm.devnet.DEV_ACCOUNT`).
Each is an `AnvilNode` whose cheat methods are renamed to the node's own (`HardhatNode`,
`GanacheNode`), so the `chains.evm.devnet` helpers that go through `node.call` and
`node.mine` (deploy_test_token, mint, install_multicall, ...) work on all three.
`set_balances` batches `anvil_setBalance` past `call`; use `set_balance` here instead.
Without node or the npm packages the tests skip; with `CI=true` they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from eth_abi.abi import encode
from eth_utils.address import to_checksum_address

from chains.errors import SourceUnavailable
from chains.evm.adapter import CANONICAL_MULTICALL3
from chains.evm.devnet import ANVIL_CHAIN_ID, AnvilNode, free_port
from chains.jsonrpc import JsonRpcClient, RetryPolicy
from chains.types import Address
from tests.realdeps import missing

NODES_DIR = Path(__file__).resolve().parent / "evmnodes"
BIN_DIR = NODES_DIR / "node_modules" / ".bin"
INSTALL_COMMAND = "cd tests/evmnodes && npm ci --no-audit --no-fund --silent"
TEST_MNEMONIC = "test test test test test test test test test test test junk"
START_TIMEOUT = 60.0
"""Hardhat takes 2-5 s to answer on an idle machine; two xdist workers starting four
Node.js processes at once on two cores take longer."""


class HardhatNode(AnvilNode):
    """Hardhat Network (EDR): the anvil_* cheats are hardhat_* here.

    `mine` seals blocks with a batch of `evm_mine`, not `hardhat_mine`: hardhat_mine of 8
    or more blocks from head H serves blocks H+3..H+n-1 with an all-zero parentHash
    (measured with hardhat 2.29.1, EDR 0.12.0-next.23; see test_evm_nodes.py)."""

    aliases: ClassVar[dict[str, str]] = {
        "anvil_setBalance": "hardhat_setBalance",
        "anvil_setCode": "hardhat_setCode",
        "anvil_setNonce": "hardhat_setNonce",
        "anvil_setStorageAt": "hardhat_setStorageAt",
        "anvil_setCoinbase": "hardhat_setCoinbase",
        "anvil_impersonateAccount": "hardhat_impersonateAccount",
        "anvil_stopImpersonatingAccount": "hardhat_stopImpersonatingAccount",
    }

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Return the result of one JSON-RPC call, anvil_* cheats renamed. Raises
        SourceUnavailable."""
        return self.rpc.call(self.aliases.get(method, method), list(params))

    def mine(self, blocks: int = 1) -> None:
        """Seal `blocks` new blocks, each linked to the one before."""
        replies = self.rpc.batch([("evm_mine", [])] * blocks)
        if any(not isinstance(reply, str) for reply in replies):
            raise RuntimeError(f"evm_mine failed: {replies[:3]}")


class GanacheNode(AnvilNode):
    """Ganache 7: the anvil_* cheats are evm_* / miner_* here; there is no impersonation
    (ganache's answer is `evm_addAccount` with a passphrase) and no
    `evm_setNextBlockTimestamp` (ganache has `evm_setTime`). Its EVM stops at Shanghai:
    deploy contracts with `deploy_shanghai` (segwatch's artifacts use Cancun's MCOPY)."""

    aliases: ClassVar[dict[str, str]] = {
        "anvil_setBalance": "evm_setAccountBalance",
        "anvil_setCode": "evm_setAccountCode",
        "anvil_setNonce": "evm_setAccountNonce",
        "anvil_setStorageAt": "evm_setAccountStorageAt",
        "anvil_setCoinbase": "miner_setEtherbase",
    }

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Return the result of one JSON-RPC call, anvil_* cheats renamed. Raises
        SourceUnavailable."""
        return self.rpc.call(self.aliases.get(method, method), list(params))

    def mine(self, blocks: int = 1) -> None:
        """Seal `blocks` new blocks (ganache's evm_mine takes a count)."""
        self.call("evm_mine", [{"blocks": blocks}])


def set_balance(node: AnvilNode, address: str, wei: int) -> None:
    """Set `address`'s native balance on any of the three nodes, then mine a block."""
    node.call("anvil_setBalance", [address, hex(wei)])
    node.mine()


def deploy_shanghai(node: AnvilNode, name: str, arg_types: Sequence[str] = (),
                    args: Sequence[Any] = ()) -> Address:
    """Deploy tests/evmnodes/shanghai/`name`.json (built for EVM version shanghai by
    build-shanghai.sh, for Ganache 7); return its checksummed address."""
    artifact = json.loads((NODES_DIR / "shanghai" / f"{name}.json").read_text())
    bytecode = bytes.fromhex(str(artifact["bytecode"]).removeprefix("0x"))
    receipt = node.transact(None, bytecode + encode(list(arg_types), list(args)))
    return Address(to_checksum_address(receipt["contractAddress"]))


def deploy_test_token_shanghai(node: AnvilNode, name: str = "Test USD", symbol: str = "TUSD",
                               decimals: int = 6) -> Address:
    """`chains.evm.devnet.deploy_test_token` with the Shanghai build of TestToken."""
    return deploy_shanghai(node, "TestToken", ["string", "string", "uint8"],
                           [name, symbol, decimals])


def install_multicall_shanghai(node: AnvilNode, address: str = CANONICAL_MULTICALL3) -> Address:
    """`chains.evm.devnet.install_multicall` with the Shanghai build of Multicall3."""
    deployed = deploy_shanghai(node, "Multicall3")
    code = node.call("eth_getCode", [deployed, "latest"])
    node.call("anvil_setCode", [address, code])
    node.mine()
    return Address(to_checksum_address(address))


def require_node_binary(name: str) -> str:
    """Return tests/evmnodes/node_modules/.bin/`name`; skip without it (fail when CI=true)."""
    if shutil.which("node") is None:
        missing(name, "node is not on PATH")
    binary = BIN_DIR / name
    if not binary.is_file():
        missing(name, f"{binary} not found: run `{INSTALL_COMMAND}` (or `make evm-nodes`)")
    return str(binary)


def start_node(cls: type[AnvilNode], label: str, args: Sequence[str], port: int) -> AnvilNode:
    """Start a Node.js dev node with `args` on `port` (cwd: tests/evmnodes, where Hardhat
    finds its config) and wait until it answers eth_chainId with 31337.

    Raises RuntimeError when it exits, serves another chain id or does not answer within
    START_TIMEOUT seconds; the log's tail is in the message."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the node; stop() closes it
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "DO_NOT_TRACK": "1"}
    process = subprocess.Popen(list(args), cwd=NODES_DIR, env=env, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    rpc = JsonRpcClient(url, timeout=30.0, retry=RetryPolicy(attempts=1))
    node = cls(url=url, process=process, rpc=rpc, log=log)

    def failed(why: str) -> RuntimeError:
        log.seek(0)
        output = log.read().decode(errors="replace")
        node.stop()
        return RuntimeError(f"{label} {why}: {output[-2000:]}")

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise failed(f"exited with {process.returncode}")
        try:
            chain_id = int(node.call("eth_chainId"), 16)
        except SourceUnavailable:
            time.sleep(0.1)
            continue
        if chain_id != ANVIL_CHAIN_ID:
            raise failed(f"serves chain id {chain_id}, expected {ANVIL_CHAIN_ID}")
        return node
    raise failed(f"did not answer on {url} within {START_TIMEOUT} s")


def start_hardhat() -> AnvilNode:
    """Start `hardhat node` (config: tests/evmnodes/hardhat.config.js) on loopback."""
    port = free_port()
    args = [require_node_binary("hardhat"), "node", "--hostname", "127.0.0.1",
            "--port", str(port)]
    return start_node(HardhatNode, "hardhat node", args, port)


def start_ganache() -> AnvilNode:
    """Start ganache on loopback with the test mnemonic and 10,000 ETH per dev account."""
    port = free_port()
    args = [require_node_binary("ganache"), "--server.host", "127.0.0.1",
            "--server.port", str(port), "--chain.chainId", str(ANVIL_CHAIN_ID),
            "--wallet.mnemonic", TEST_MNEMONIC, "--wallet.defaultBalance", "10000",
            "--miner.defaultTransactionGasLimit", "estimate", "--logging.quiet"]
    return start_node(GanacheNode, "ganache", args, port)


@pytest.fixture(scope="session")
def hardhat() -> Iterator[AnvilNode]:
    """One Hardhat Network node for the whole session (chain id 31337)."""
    node = start_hardhat()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def ganache() -> Iterator[AnvilNode]:
    """One Ganache node for the whole session (chain id 31337)."""
    node = start_ganache()
    try:
        yield node
    finally:
        node.stop()
