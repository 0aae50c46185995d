"""Benchmark: what reconciling items (SPEC §8) cost a `segwatch run --once` cycle.

Seeds N wallets (native + one ERC-20 each) on a local anvil and a matching ledger cut
at the newest block (with 3 deliberate shortfalls), runs one cycle (it starts the
transfer scan), then mints tokens to T wallets after the cut-off — T deposits in
transit — and runs one cycle that scans them. Three stores then read the same chain at
the same block, side by side in the same run:

- `items`: this code, books = that ledger, the T deposits in transit (the items
  explain them: only the 3 shortfalls are found);
- `booked`: this code, books cut after the deposits that book them (0 items);
- `before`: the code before reconciling items were wired into the cycle (`--baseline`,
  extracted with `git archive`, run via PYTHONPATH) — "its current time" in the issue's
  words. Without items that code would raise the T deposits as surpluses (and carry
  10,000 resolved findings from then on), so its store starts after them: books cut
  after the deposits, first cycle at that block. It is the plain issue-2 cycle over the
  same wallets and balances, with a smaller store (the deposits never scanned): a
  conservative baseline.

Each store gets one unmeasured warm-up cycle, then `--runs` rounds of one cycle each,
the order rotating per round (the machine's load drifts). Each cycle is the real CLI
in its own process: wall time and peak RSS via wait4, the in-process duration from its
JSON. Usage:

    .venv/bin/python tests/bench/bench_transit.py --wallets 100000 --in-transit 10000 --runs 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from bench_cycle import SHORT, _display, run_cli  # noqa: E402

from chains.evm.devnet import (  # noqa: E402
    AnvilNode,
    deploy_test_token,
    find_anvil,
    install_multicall,
    mint_many,
    random_wallets,
    set_balances,
    start_anvil,
)
from chains.types import Address  # noqa: E402

DEPOSIT = 7 * 10**6
BASELINE = "067997c~1"
"""The commit before 'Issue 14, step 6 — reconciling items in the cycle'."""

FEEDER = """
import sys
from datetime import UTC, datetime
from daemon.store.db import make_engine, upgrade
from daemon.store.identity import Identities
engine = make_engine(sys.argv[1])
upgrade(engine)
now = datetime.now(UTC)
identities = Identities(engine)
identities.add_user("books", ["feeder"], None, "local", "bench", now)
print(identities.create_token("books", None, None, "bench", now)[1])
engine.dispose()
"""
"""A feeder's token made directly in the store by the store's own code (imports need
an authenticated feeder); run as a process so that the baseline's code makes its own."""


@dataclass
class Store:
    """One store (SQLite file) and the code that runs its cycles."""

    name: str
    db: Path
    env: dict[str, str]
    token: str
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """Measured cycles: (wall s, in-process s, peak RSS KiB)."""

    def cli(self, *args: str, books: bool = False) -> tuple[int, str, float, int]:
        env = {**self.env, "SEGWATCH_TOKEN": self.token} if books else self.env
        return run_cli(list(args), self.db.parent, env)

    def cycle(self, findings: int) -> tuple[float, float, int]:
        code, text, wall, rss = self.cli("run", "--once", "--json")
        (cycle,) = json.loads(text)
        assert code == 1 and len(cycle["findings"]) == findings, \
            (self.name, code, len(cycle["findings"]), cycle["findings"][:3])
        return wall, cycle["duration_seconds"], rss

    def items_total(self) -> int:
        _, text, *_ = self.cli("status", "--json")
        (chain,) = json.loads(text)["chains"]
        return int(chain["reconciling_items_total"])

    def import_ledger(self, ledger: Path, cut: str) -> None:
        code, *_ = self.cli("ledger", "import", str(ledger), "--as-of", cut, books=True)
        assert code == 0, f"{self.name}: ledger import failed"


def make_store(name: str, work: Path, node: AnvilNode, token: str,
               code_tree: Path | None, db: Path | None = None) -> Store:
    """A store with its own config; `db` reuses a copy of another store's file."""
    db = db or work / f"{name}.db"
    config = work / f"{name}.toml"
    config.write_text(f"""
[store]
url = "sqlite:///{db}"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
sources = [{{ kind = "jsonrpc", url = "{node.url}" }}]
tokens = [{{ symbol = "USDC", contract = "{token}", decimals = 6 }}]
""")
    env = {**os.environ, "SEGWATCH_CONFIG": str(config)}
    if code_tree is not None:
        env["PYTHONPATH"] = str(code_tree)
    made = subprocess.run([sys.executable, "-c", FEEDER, f"sqlite:///{db}"], env=env,
                          cwd=work, capture_output=True, text=True, check=True)
    return Store(name, db, env, made.stdout.strip().splitlines()[-1])


def copy_store(source: Store, name: str) -> Store:
    """A copy of `source`'s store file (SQLite backup API) with its own config."""
    target = source.db.with_name(f"{name}.db")
    with sqlite3.connect(source.db) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    config = source.db.with_name(f"{name}.toml")
    config.write_text(Path(source.env["SEGWATCH_CONFIG"]).read_text()
                      .replace(str(source.db), str(target)))
    return Store(name, target, {**source.env, "SEGWATCH_CONFIG": str(config)},
                 source.token)


def baseline_tree(rev: str, work: Path) -> Path:
    """The daemon and chains packages as of `rev`, extracted outside the work tree."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "daemon", "chains"], cwd=REPO,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def write_ledger(path: Path, wallets: list[Address], booked: set[Address]) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        for i, w in enumerate(wallets):
            eth = 10**15 + i + (1 if i < SHORT else 0)
            usdc = 10**6 + i + (DEPOSIT if w in booked else 0)
            out.writerow(["devnet", w, "segregated", f"c{i}", "ETH", _display(eth, 18)])
            out.writerow(["devnet", w, "segregated", f"c{i}", "USDC", _display(usdc, 6)])


def cut_here(node: AnvilNode) -> str:
    """The newest block's time as a cut-off; the next block comes a second later."""
    head = int(node.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    node.call("evm_setNextBlockTimestamp", [head + 1])
    return datetime.fromtimestamp(head, UTC).isoformat()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wallets", type=int, default=100_000)
    parser.add_argument("--in-transit", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default=BASELINE,
                        help="git revision of the code before reconciling items "
                             "('' to skip it)")
    args = parser.parse_args()
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install`")
        return 2
    node = start_anvil(binary, "--gas-limit", "100000000")
    work = Path(tempfile.mkdtemp(prefix="segwatch-bench-transit-"))
    try:
        wallets = random_wallets(args.wallets)
        token = deploy_test_token(node, "Bench USD", "USDC", 6)
        install_multicall(node)
        for start in range(0, len(wallets), 5000):
            chunk = wallets[start:start + 5000]
            set_balances(node, {w: 10**15 + i for i, w in enumerate(chunk, start)})
        mint_many(node, token, wallets, [10**6 + i for i in range(len(wallets))])
        now = make_store("booked", work, node, token, None)
        ledger = work / "ledger.csv"
        write_ledger(ledger, wallets, set())
        now.import_ledger(ledger, cut_here(node))
        now.cycle(SHORT)  # starts the transfer scan at this block
        receivers = wallets[SHORT:SHORT + args.in_transit]
        t0 = time.perf_counter()
        mint_many(node, token, receivers, [DEPOSIT] * len(receivers))
        print(f"{len(receivers):,} deposits after the cut-off in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        scan_wall, scan_in, _ = now.cycle(SHORT)
        items = copy_store(now, "items")
        assert items.items_total() == len(receivers)
        write_ledger(ledger, wallets, set(receivers))
        cut = cut_here(node)
        now.import_ledger(ledger, cut)
        assert now.items_total() == 0
        stores = [items, now]
        if args.baseline:
            before = make_store("before", work, node, token,
                                baseline_tree(args.baseline, work))
            before.import_ledger(ledger, cut)
            stores.append(before)
        for store in stores:
            store.cycle(SHORT)  # warm-up (`before`: starts its scan after the deposits)
        for r in range(args.runs):
            for store in stores[r % len(stores):] + stores[:r % len(stores)]:
                store.samples.append(store.cycle(SHORT))
            print(f"round {r + 1}/{args.runs}: " + ", ".join(
                f"{s.name} {s.samples[-1][0]:.2f} s" for s in stores), flush=True)
    finally:
        node.stop()

    def med(store: Store, i: int) -> float:
        return statistics.median(s[i] for s in store.samples)

    print(f"\nthe cycle that scanned the {len(receivers):,} deposits: {scan_wall:.1f} s wall, "
          f"{scan_in:.1f} s in-process")
    label = {"items": f"{len(receivers):,} deposits in transit",
             "booked": "0 in transit (books cut after them)",
             "before": f"before reconciling items ({args.baseline}), deposits booked"}
    print(f"\n| {args.wallets:,} wallets, steady `run --once` (median of {args.runs}) | "
          f"wall | in-process | peak RSS |\n|---|---:|---:|---:|")
    for store in stores:
        print(f"| {label[store.name]} | {med(store, 0):.2f} s | {med(store, 1):.2f} s | "
              f"{med(store, 2) / 1024:.0f} MiB |")
    for base in stores[1:]:
        print(f"| ratio {items.name} / {base.name} | {med(items, 0) / med(base, 0):.2f}x | "
              f"{med(items, 1) / med(base, 1):.2f}x | {med(items, 2) / med(base, 2):.2f}x |")
    print("\nall runs (wall s / in-process s / MiB):")
    for store in stores:
        print(f"  {store.name}: " + ", ".join(
            f"{w:.2f}/{c:.2f}/{m / 1024:.0f}" for w, c, m in store.samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
