"""`make demo`: a local anvil devnet, demo wallets and ledger, one reconcile cycle.

The ledger allocates 2,500 USDC to client-alice's segregated wallet, but the chain
holds only 2,400: one deliberate `balance_shortfall`. Everything else reconciles.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chains.evm.devnet import (  # noqa: E402
    deploy_test_token,
    find_anvil,
    install_multicall,
    mint_many,
    set_balances,
    start_anvil,
)

CONFIG = REPO / "config" / "demo" / "segwatch.toml"
LEDGER = REPO / "config" / "demo" / "ledger.csv"
STORE_DIR = REPO / "demo"
ETH = 10**18
USDC_UNIT = 10**6
ALICE = "0x1000000000000000000000000000000000000001"
OMNIBUS = "0x1000000000000000000000000000000000000002"
DAVE = "0x1000000000000000000000000000000000000003"
HOUSE = "0x1000000000000000000000000000000000000009"
EXPECTED_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def segwatch(*args: str, env: dict[str, str]) -> int:
    """Run the real CLI, showing its output; return its exit code."""
    print(f"\n$ segwatch {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(CONFIG), *args],
                          cwd=REPO, env=env, check=False).returncode


def main() -> int:
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install` (it installs @foundry-rs/anvil from npm)")
        return 2
    shutil.rmtree(STORE_DIR, ignore_errors=True)
    STORE_DIR.mkdir()
    node = start_anvil(binary)
    try:
        print(f"devnet: anvil at {node.url} (chain id 31337)")
        token = deploy_test_token(node, "Demo USD Coin", "USDC", 6)
        if token != EXPECTED_CONTRACT:
            print(f"unexpected token address {token}; config/demo/segwatch.toml expects "
                  f"{EXPECTED_CONTRACT}")
            return 2
        install_multicall(node)
        set_balances(node, {ALICE: 10 * ETH, OMNIBUS: 12 * ETH + ETH // 4,
                            DAVE: ETH // 8, HOUSE: 100 * ETH})
        mint_many(node, token, [ALICE, OMNIBUS], [2_400 * USDC_UNIT, 1_000_500_000])
        print("seeded: 4 wallets; alice holds 2,400 USDC on chain, the ledger says 2,500")
        env = {**os.environ, "SEGWATCH_DEMO_RPC": node.url}
        codes = [
            segwatch("ledger", "import", str(LEDGER), env=env),
            segwatch("run", "--once", env=env),
            segwatch("status", env=env),
            segwatch("discrepancies", "list", env=env),
        ]
    finally:
        node.stop()
        print("\ndevnet stopped")
    # import ok, then exit 1 ("discrepancies found") from run, status and list is the
    # expected outcome: the deliberate shortfall.
    expected = [0, 1, 1, 0]
    if codes != expected:
        print(f"demo: unexpected exit codes {codes} (expected {expected})")
        return 1
    print("demo: the deliberate shortfall was found (exit codes as expected)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
