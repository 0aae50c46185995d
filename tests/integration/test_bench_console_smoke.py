"""The console benchmark script still runs (at a tiny size): a template change once
broke its naive baseline (500 under StrictUndefined) without any test noticing. The
figures themselves come from BENCHMARKS.md's full-size runs, not from here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_console_benchmark_runs_and_compares_both_implementations(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "bench" / "bench_console.py"), "--wallets",
         "200", "--exceptions", "20", "--requests", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=180, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results["pages"]) == {"dashboard", "exceptions, first page",
                                     "exceptions, page 20 by deadline", "one exception"}
    assert all("naive" in row for name, row in results["pages"].items()
               if name != "one exception")
