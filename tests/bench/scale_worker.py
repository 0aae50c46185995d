"""One replica of bench_scale.py: a Service in its own process, so that its memory is its own.

Reads commands from stdin, one JSON object per line, and answers each with one JSON line:
- {"do": "tick"}: with `--leases`, take and renew shard leases (daemon/runtime/leases.py);
  answers the shard keys held.
- {"do": "cycle"}: run one cycle of every shard this replica holds (all of them without
  leases), at once, each in a thread of its own as the daemon runs them; answers each
  cycle's figures and this process's RSS and peak RSS.
- {"do": "exit"}.

The settings come as one JSON file (`--settings`): the keyword arguments of `Settings`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from daemon.bootstrap import Adapters, open_store  # noqa: E402
from daemon.inputs.config import Settings  # noqa: E402
from daemon.rules.shards import Shard, shards  # noqa: E402
from daemon.runtime.leases import Leases  # noqa: E402
from daemon.service import Service  # noqa: E402

PROFILE = os.environ.get("SEGWATCH_BENCH_PROFILE")
"""A path prefix: cycles write their cProfile statistics there, one file per kind of cycle
(`first`, `steady`) and shard."""


def memory() -> dict[str, int]:
    """This process's resident set and its peak, in KiB (/proc/self/status)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return {"rss_kib": fields["VmRSS"], "peak_kib": fields["VmHWM"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", type=Path, required=True)
    parser.add_argument("--leases", action="store_true")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    settings = Settings(**json.loads(args.settings.read_text()))
    service = Service(settings, open_store(settings.store.url, create=False), Adapters())
    chain = settings.chains[0]
    units = shards(chain)
    leases = None
    if args.leases:
        leases = Leases(service.store.engine, [s.key for s in units],
                        settings.daemon.lease_seconds)
        service.fence = leases.fence
    print(json.dumps({"ready": True, **memory()}), flush=True)
    collecting: dict[str, float] = {"since": 0.0, "seconds": 0.0, "full": 0}

    def clock_gc(phase: str, info: dict[str, int]) -> None:
        """Time the garbage collector's passes (full ones counted apart)."""
        if phase == "start":
            collecting["since"] = time.perf_counter()
        else:
            collecting["seconds"] += time.perf_counter() - collecting["since"]
            collecting["full"] += info["generation"] == 2

    gc.callbacks.append(clock_gc)

    def cycle(shard: Shard, profiled: str | None) -> dict[str, Any]:
        """One cycle of `shard`, in its own thread like the daemon's (one executor per
        shard: daemon/runtime/scheduler.py)."""
        if PROFILE and profiled:
            profile = cProfile.Profile()
            result = profile.runcall(service.run_cycle, chain, shard)
            profile.dump_stats(f"{PROFILE}-{profiled}-{shard.index}-of-{shard.count}")
        else:
            result = service.run_cycle(chain, shard)
        return {"shard": shard.key, "seconds": result.duration, "wallets": result.wallets,
                "wallets_read": result.wallets_read, "full_read": result.full_read,
                "error": result.error, "scan_error": result.scan_error,
                "findings": len(result.findings), "requests": result.rpc_requests}

    for line in sys.stdin:
        collecting.update(seconds=0.0, full=0)
        command: dict[str, Any] = json.loads(line)
        if command["do"] == "exit":
            break
        if command["do"] == "tick":
            held = sorted(leases.tick()) if leases else [s.key for s in units]
            print(json.dumps({"held": held}), flush=True)
            continue
        started = time.perf_counter()
        held = [unit for unit in units if leases is None or leases.holds(unit.key)]
        with ThreadPoolExecutor(max(1, len(held)), thread_name_prefix="shard") as pool:
            cycles = list(pool.map(cycle, held, [command.get("profile")] * len(held)))
        print(json.dumps({"cycles": cycles, "seconds": time.perf_counter() - started,
                          "gc_seconds": collecting["seconds"],
                          "gc_full": collecting["full"], **memory()}), flush=True)
    if leases is not None:
        leases.release_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
