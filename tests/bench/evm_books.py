"""Seeding shared by the EVM scale benchmarks: N wallets holding ETH and one ERC-20 on
anvil (state edits and batch mints, not N transactions) and books that match them."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from chains.evm.devnet import AnvilNode, mint_many, set_balances


def seed_wallets(node: AnvilNode, token: str, wallets: Sequence[str]) -> None:
    """Give every wallet 0.001 ETH (anvil_setBalance, 5,000 a block) and 1 token unit of
    6 decimals (mintBatch, 2,000 a transaction)."""
    for start in range(0, len(wallets), 5000):
        set_balances(node, {w: 10**15 for w in wallets[start:start + 5000]})
    mint_many(node, token, list(wallets), [10**6] * len(wallets), chunk=2000)


def write_books(path: Path, wallets: Sequence[str]) -> None:
    """Books matching `seed_wallets`: per wallet an ETH and a USDC line, one client each."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        for i, w in enumerate(wallets):
            out.writerow(["devnet", w, "segregated", f"c{i}", "ETH", "0.001"])
            out.writerow(["devnet", w, "segregated", f"c{i}", "USDC", "1"])
