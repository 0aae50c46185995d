"""A local anvil devnet: start it, deploy segwatch's test contracts, fund wallets.

Used by `make demo`, the benchmarks and the integration tests. The binary is taken
from `SEGWATCH_ANVIL`, else the npm package installed under `<repo>/.tools` by
`make install` (`@foundry-rs/anvil`, whose platform package ships the binary),
else `anvil` on PATH.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any

from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from chains.errors import SourceUnavailable
from chains.evm.adapter import CANONICAL_MULTICALL3
from chains.jsonrpc import JsonRpcClient, RetryPolicy
from chains.types import Address

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
TOOLS_DIR = Path(__file__).resolve().parents[2] / ".tools" / "node_modules" / "@foundry-rs"
DEV_ACCOUNT = Address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
"""anvil's first unlocked, funded dev account (well-known test mnemonic)."""
ANVIL_CHAIN_ID = 31337
START_TIMEOUT = 15.0


def find_anvil() -> str | None:
    """Return the path of an anvil binary, or None if there is none."""
    configured = os.environ.get("SEGWATCH_ANVIL")
    if configured:
        return configured if Path(configured).is_file() else None
    bundled = sorted(TOOLS_DIR.glob("anvil-*/bin/anvil"))
    if bundled:
        return str(bundled[0])
    return shutil.which("anvil")


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class AnvilNode:
    """A running anvil process and a JSON-RPC client talking to it."""

    url: str
    process: subprocess.Popen[bytes]
    rpc: JsonRpcClient
    log: IO[bytes]

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Return the result of one JSON-RPC call. Raises SourceUnavailable."""
        return self.rpc.call(method, list(params))

    def mine(self, blocks: int = 1) -> None:
        """Seal `blocks` new blocks (state changed by anvil_* cheats becomes historic)."""
        self.call("anvil_mine", [hex(blocks)])

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def snapshot(self) -> str:
        return str(self.call("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if self.call("evm_revert", [snapshot_id]) is not True:
            raise RuntimeError(f"evm_revert({snapshot_id}) failed")

    def transact(self, to: str | None, data: bytes = b"", value: int = 0,
                 sender: str = DEV_ACCOUNT) -> dict[str, Any]:
        """Send a transaction (from the dev account unless `sender`, which must be unlocked
        or impersonated); return its receipt. Raises on failure."""
        tx: dict[str, Any] = {"from": sender, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            tx["to"] = to
        tx_hash = self.call("eth_sendTransaction", [tx])
        receipt = self.receipt(tx_hash)
        if receipt.get("status") != "0x1":
            raise RuntimeError(f"transaction {tx_hash} failed: {receipt}")
        return receipt

    def receipt(self, tx_hash: str, timeout: float = 10.0) -> dict[str, Any]:
        """Return the receipt of `tx_hash`, waiting for automine. Raises RuntimeError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            receipt: dict[str, Any] | None = self.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return receipt
            time.sleep(0.005)
        raise RuntimeError(f"no receipt for {tx_hash} after {timeout} s")

    def stop(self) -> None:
        """Stop anvil and release the client."""
        self.rpc.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.log.close()


def start_anvil(binary: str, *extra_args: str) -> AnvilNode:
    """Start anvil on a free loopback port and wait until it answers.

    Raises RuntimeError when it exits or does not answer within START_TIMEOUT seconds.
    """
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the node; stop() closes it
    args = [binary, "--host", "127.0.0.1", "--port", str(port), "--silent", *extra_args]
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    rpc = JsonRpcClient(url, timeout=5.0, retry=RetryPolicy(attempts=1))
    node = AnvilNode(url=url, process=process, rpc=rpc, log=log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            node.stop()
            raise RuntimeError(f"anvil exited with {process.returncode}: {output[-2000:]}")
        try:
            node.call("eth_chainId")
            return node
        except SourceUnavailable:
            time.sleep(0.05)
    node.stop()
    raise RuntimeError(f"anvil did not answer on {url} within {START_TIMEOUT} s")


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """Return the compiled artifact {"abi", "bytecode"} of contract `name`."""
    artifact: dict[str, Any] = json.loads((CONTRACTS_DIR / f"{name}.json").read_text())
    return artifact


def deploy_contract(
    node: AnvilNode, name: str, arg_types: Sequence[str] = (), args: Sequence[Any] = ()
) -> Address:
    """Deploy artifact `name` with constructor `args`; return its checksummed address."""
    bytecode = bytes.fromhex(load_artifact(name)["bytecode"].removeprefix("0x"))
    receipt = node.transact(None, bytecode + encode(list(arg_types), list(args)))
    return Address(to_checksum_address(receipt["contractAddress"]))


def call_data(signature: str, arg_types: Sequence[str], args: Sequence[Any]) -> bytes:
    """Return the calldata of `signature(args)`."""
    return keccak(text=signature)[:4] + encode(list(arg_types), list(args))


def deploy_test_token(
    node: AnvilNode, name: str = "Test USD", symbol: str = "TUSD", decimals: int = 6
) -> Address:
    """Deploy a TestToken; return its address."""
    return deploy_contract(
        node, "TestToken", ["string", "string", "uint8"], [name, symbol, decimals]
    )


def mint(node: AnvilNode, token: str, to: str, amount: int) -> None:
    """Mint `amount` base units of `token` to `to`."""
    node.transact(token, call_data("mint(address,uint256)", ["address", "uint256"], [to, amount]))


def mint_many(
    node: AnvilNode, token: str, holders: Sequence[str], amounts: Sequence[int], chunk: int = 400
) -> None:
    """Mint to many holders with TestToken.mintBatch, `chunk` holders per transaction."""
    for start in range(0, len(holders), chunk):
        data = call_data(
            "mintBatch(address[],uint256[])",
            ["address[]", "uint256[]"],
            [list(holders[start : start + chunk]), list(amounts[start : start + chunk])],
        )
        node.transact(token, data)


def transfer_token(node: AnvilNode, token: str, to: str, amount: int) -> None:
    """Transfer `amount` of `token` from the dev account to `to`."""
    node.transact(
        token, call_data("transfer(address,uint256)", ["address", "uint256"], [to, amount])
    )


def impersonate(node: AnvilNode, address: str) -> None:
    """Let `address` send transactions without its key (anvil_impersonateAccount)."""
    node.call("anvil_impersonateAccount", [address])


def send_eth(node: AnvilNode, to: str, wei: int) -> None:
    """Send `wei` from the dev account to `to` (mines one block)."""
    node.transact(to, value=wei)


def set_balances(node: AnvilNode, balances: dict[str, int]) -> None:
    """Set native balances with anvil_setBalance in one batch, then mine a block."""
    replies = node.rpc.batch([("anvil_setBalance", [a, hex(w)]) for a, w in balances.items()])
    if any(reply is not None for reply in replies):
        raise RuntimeError(f"anvil_setBalance failed: {replies[:3]}")
    node.mine()


def set_bad_token_mode(node: AnvilNode, token: str, holder: str, amount: int, mode: int) -> None:
    """Configure BadToken: 0 ok, 1 revert, 2 short data, 3 long data, 4 burn all gas."""
    data = call_data(
        "set(address,uint256,uint8)", ["address", "uint256", "uint8"], [holder, amount, mode]
    )
    node.transact(token, data)


def install_multicall(node: AnvilNode, address: str = CANONICAL_MULTICALL3) -> Address:
    """Put Multicall3 runtime code at `address` (default: the canonical one); return it."""
    deployed = deploy_contract(node, "Multicall3")
    code = node.call("eth_getCode", [deployed, "latest"])
    node.call("anvil_setCode", [address, code])
    node.mine()
    return Address(to_checksum_address(address))


def random_wallets(count: int, seed: int = 7) -> list[Address]:
    """Return `count` distinct pseudo-random checksummed addresses (reproducible)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test addresses, not secrets
    wallets = {to_checksum_address(rng.randbytes(20)) for _ in range(count)}
    while len(wallets) < count:
        wallets.add(to_checksum_address(rng.randbytes(20)))
    return sorted(Address(w) for w in wallets)
