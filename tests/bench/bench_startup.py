"""Benchmark: how long `segwatch --help` and `segwatch version` take to start, against the
CLI importing every module its commands use at start-up (what it did before issue 17).

Each command runs as a whole process (`python -m daemon.cli …`, as the console script
does), `--runs` times after one warm-up, alternating with the baseline; the baseline is
the same entry point after importing the service layer, the settings models, the store
and the presenters first (what the CLI's top-level imports pulled in). Medians and the
ratio are printed; with `--check`, exit 1 when a median misses the target (≤ 0.3 s).

    .venv/bin/python tests/bench/bench_startup.py [--runs 10] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_SECONDS = 0.3
EAGER = ("import daemon.service, daemon.bootstrap, daemon.inputs.config, "
         "daemon.inputs.builtin, daemon.runtime.logs, daemon.cli.present, pydantic; "
         "from daemon.cli import main; main()")
"""The naive start-up: every module the commands use, imported before parsing."""


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False, timeout=60)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    missed = False
    print(f"{'command':<18}{'segwatch':>10}{'eager':>10}{'ratio':>8}   ({args.runs} runs, "
          "medians, whole processes)")
    for command in (["--help"], ["version"]):
        lazy_argv = [sys.executable, "-m", "daemon.cli", *command]
        eager_argv = [sys.executable, "-c", EAGER, *command]
        timed(lazy_argv), timed(eager_argv)  # warm-up: the page cache, .pyc files
        lazy, eager = [], []
        for _ in range(args.runs):
            lazy.append(timed(lazy_argv))
            eager.append(timed(eager_argv))
        a, b = statistics.median(lazy), statistics.median(eager)
        print(f"{' '.join(command):<18}{a:>9.3f}s{b:>9.3f}s{b / a:>7.1f}x")
        missed |= a > TARGET_SECONDS
    if missed:
        print(f"target missed: a median above {TARGET_SECONDS} s")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
