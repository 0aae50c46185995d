"""Seeding shared by the EVM scale benchmarks: N wallets holding ETH and one ERC-20 on
anvil (state loaded into the node, not N transactions) and books that match them."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from chains.evm.address import keccak
from chains.evm.devnet import AnvilNode


def seed_wallets(node: AnvilNode, token: str, wallets: Sequence[str]) -> None:
    """Give every wallet 0.001 ETH and 1 token unit of 6 decimals by loading state into
    anvil (anvil_loadState merges accounts and storage slots into the current state):
    the accounts with their balance, and the token's `balanceOf` slots and
    `totalSupply`, 5,000 wallets a call (a larger body is refused); then one block is
    mined so the state is a block's. A million wallets take about a minute, against 35
    through anvil_setBalance batches and mintBatch transactions. No Transfer events are
    emitted: the cycles start scanning after the seeding."""
    dumped = json.loads(gzip.decompress(bytes.fromhex(node.call("anvil_dumpState")[2:])))
    contract = dumped["accounts"][token.lower()]
    unit = _word(10**6)
    for start in range(0, len(wallets), LOAD_CHUNK):
        part = wallets[start:start + LOAD_CHUNK]
        storage = {_slot_of(w): unit for w in part}
        storage[_word(TOTAL_SUPPLY_SLOT)] = _word((start + len(part)) * 10**6)
        accounts: dict[str, Any] = {w.lower(): {"nonce": 0, "balance": hex(10**15), "code": "0x",
                                                "storage": {}} for w in part}
        accounts[token.lower()] = {**contract, "storage": storage}
        state: dict[str, Any] = {"block": None, "accounts": accounts,
                                 "best_block_number": None, "blocks": [], "transactions": []}
        blob = gzip.compress(json.dumps(state).encode(), 1)
        reply = httpx.post(node.url, timeout=300, json={
            "jsonrpc": "2.0", "id": 1, "method": "anvil_loadState", "params": ["0x" + blob.hex()]})
        if reply.json().get("result") is not True:
            raise RuntimeError(f"anvil_loadState refused: {reply.text[:300]}")
    node.mine(1)


LOAD_CHUNK = 5_000
BALANCE_OF_SLOT = 4  # TestToken: name, symbol, decimals, totalSupply, balanceOf
TOTAL_SUPPLY_SLOT = 3


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _slot_of(holder: str) -> str:
    """The storage slot of `holder`'s balanceOf entry: keccak(holder . slot), as Solidity."""
    return "0x" + keccak(bytes(12) + bytes.fromhex(holder[2:]) +
                         BALANCE_OF_SLOT.to_bytes(32, "big")).hex()


def write_books(path: Path, wallets: Sequence[str]) -> None:
    """Books matching `seed_wallets`: per wallet an ETH and a USDC line, one client each."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        for i, w in enumerate(wallets):
            out.writerow(["devnet", w, "segregated", f"c{i}", "ETH", "0.001"])
            out.writerow(["devnet", w, "segregated", f"c{i}", "USDC", "1"])
