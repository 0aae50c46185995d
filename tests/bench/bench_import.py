"""Benchmark: `segwatch ledger import` of a large sub-ledger (issue 18: 2,000,000 lines
in ≤ 60 s), against the floor of reading the same file.

Writes a CSV of `--lines` allocation lines (`--wallets` EVM wallets, each with ETH and
one ERC-20, the rest of the lines spread as extra owners of omnibus wallets), then runs
the real CLI (`segwatch ledger import`, a subprocess, as a feeder) on a fresh SQLite
store and reports its wall time and peak RSS. Side by side, in the same run: the naive
floor, Python's csv module reading the same file into tuples (no validation, no store),
which no import can beat. Usage:

    .venv/bin/python tests/bench/bench_import.py --lines 2000000 [--wallets 1000000]

With SEGWATCH_BENCH_PROFILE=FILE the import runs under cProfile, its stats written to FILE.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_cycle import feeder_token  # noqa: E402 - needs sys.path

TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
TARGET_SECONDS = 60.0


def write_ledger(path: Path, lines: int, wallets: int, seed: int = 3) -> None:
    """`lines` allocation lines over `wallets` wallets (ETH and USDC each; beyond
    2 x wallets, more owners of the same omnibus wallets)."""
    from eth_utils.address import to_checksum_address

    rng = random.Random(seed)
    addresses = [to_checksum_address(rng.randbytes(20)) for _ in range(wallets)]
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        for n in range(lines):
            wallet = n % wallets
            owner = f"client-{n // (2 * wallets)}-{wallet}"
            asset = "ETH" if (n // wallets) % 2 == 0 else "USDC"
            amount = f"{rng.randrange(1, 10**6)}.{rng.randrange(0, 10**6):06d}"
            out.writerow(["ethereum", addresses[wallet], "omnibus", owner, asset, amount])


def naive_floor(path: Path) -> float:
    """Seconds to read the file with the csv module into a list (no checks, no store)."""
    started = time.perf_counter()
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) > 1
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--wallets", type=int, default=None,
                        help="default: lines / 2 (one ETH and one USDC line each)")
    args = parser.parse_args()
    wallets = args.wallets or max(1, args.lines // 2)
    with tempfile.TemporaryDirectory(prefix="segwatch-import-") as tmp:
        work = Path(tmp)
        ledger = work / "ledger.csv"
        started = time.perf_counter()
        write_ledger(ledger, args.lines, wallets)
        print(f"ledger: {args.lines:,} lines over {wallets:,} wallets, "
              f"{ledger.stat().st_size / 2**20:.0f} MiB (written in "
              f"{time.perf_counter() - started:.1f} s)", flush=True)
        store = f"sqlite:///{work / 'segwatch.db'}"
        (work / "segwatch.toml").write_text(f"""
[store]
url = "{store}"
[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
sources = [{{ kind = "jsonrpc", url = "http://127.0.0.1:9/" }}]
tokens = [{{ symbol = "USDC", contract = "{TOKEN}", decimals = 6 }}]
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
        env["SEGWATCH_TOKEN"] = feeder_token(store)
        started = time.perf_counter()
        with (work / "stderr.txt").open("w") as errors:
            profile = os.environ.get("SEGWATCH_BENCH_PROFILE")  # a cProfile output file
            wrap = ["-m", "cProfile", "-o", profile] if profile else []
            proc = subprocess.Popen([sys.executable, *wrap, "-m", "daemon.cli", "ledger",
                                     "import", str(ledger)], cwd=work, env=env, stdout=subprocess.PIPE,
                                    stderr=errors, text=True)
            assert proc.stdout is not None
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            print(f"import failed ({proc.returncode}): "
                  f"{(work / 'stderr.txt').read_text()[-2000:]}")
            return 1
        floor = naive_floor(ledger)
        print(out.strip())
        print("\n| lines | segwatch ledger import | peak RSS | csv read only (floor) | ratio "
              "| target |")
        print("|---:|---:|---:|---:|---:|---|")
        verdict = "met" if seconds <= TARGET_SECONDS else "MISSED"
        print(f"| {args.lines:,} | {seconds:.1f} s | {usage.ru_maxrss / 1024:.0f} MiB "
              f"| {floor:.1f} s | {seconds / floor:.1f}x | <= {TARGET_SECONDS:.0f} s: "
              f"{verdict} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
