"""`segwatch run`: each chain's poll + reconcile on its own interval, plus housekeeping.

Each chain (each wallet shard of a chain split into `shards`) runs in an executor of its
own (one thread), so a slow, failing or hanging chain never delays another, and
`max_instances = 1` keeps one chain's cycles from overlapping. Housekeeping jobs (alert
delivery, escalation) each have an executor too.
SIGTERM/SIGINT stop scheduling; cycles in flight get `shutdown_timeout` seconds to
finish (their writes are one transaction: a cycle cut short commits nothing). On
PostgreSQL, replicas share the chains and wallet shards through leases (daemon/runtime/leases.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.api.app import build_app
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.shards import Shard, shards
from daemon.runtime.heads import BlockHashWatcher, HeadWatcher
from daemon.runtime.health import HealthServer
from daemon.runtime.leases import LeaseLost, Leases, replica_id
from daemon.runtime.metrics import Metrics
from daemon.service import Service

log = structlog.get_logger("segwatch")

ALERT_SECONDS = 10.0
"""How often pending alerts are delivered to the sinks."""

ESCALATION_SECONDS = 60.0
"""How often open items past their cure deadline are looked for."""
AUDIT_SECONDS = 300.0
"""How often the daemon verifies the audit log against the table (daemon/audit.py)."""
HEARTBEAT_SECONDS = 15.0
"""How often a daemon says in the store that it is alive (`status`, /healthz)."""

SHUTDOWN_TIMEOUT = 15.0
"""Seconds the cycles in flight get to finish after SIGTERM/SIGINT."""


@dataclass(frozen=True)
class Job:
    """A housekeeping job: `run` every `seconds`."""

    name: str
    seconds: float
    run: Callable[[], object]
    wake_on_change: bool = False
    """Also run at once after a cycle that opened, cleared or voided findings (alerts)."""


class Daemon:
    """The scheduler, the health server and the bookkeeping of jobs in flight."""

    def __init__(self, service: Service, metrics: Metrics, jobs: Sequence[Job] = (),
                 shutdown_timeout: float = SHUTDOWN_TIMEOUT,
                 chains: Sequence[ChainSettings] | None = None,
                 leases: Leases | None = None) -> None:
        self.service = service
        self.metrics = metrics
        self.leases = leases
        self.shutdown_timeout = shutdown_timeout
        self._chains = list(service.settings.chains if chains is None else chains)
        self._jobs = list(jobs)
        self._in_flight = 0
        self._idle = threading.Condition()
        self._shards = [s for c in self._chains for s in shards(c)]
        self._pending: set[str] = set()
        """Shards a new head arrived for while their cycle ran (run again at once)."""
        self._watchers: dict[str, HeadWatcher | BlockHashWatcher] = {}
        executors = {f"chain:{s.key}": ThreadPoolExecutor(1) for s in self._shards}
        executors["default"] = ThreadPoolExecutor(1)
        for job in self._jobs:  # a slow alert run never holds back escalation, and back
            executors[f"job:{job.name}"] = ThreadPoolExecutor(1)
        executors["leases"] = ThreadPoolExecutor(1)  # never queued behind slow housekeeping
        self.scheduler = BackgroundScheduler(
            executors=executors, timezone=UTC,
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None})

    def start(self) -> None:
        """Schedule every chain's shards (first cycle at once) and housekeeping job, and
        start."""
        by_name = {c.name: c for c in self._chains}
        for shard in self._shards:
            chain = by_name[shard.chain]
            self.scheduler.add_job(self._tracked, "interval", args=[self._cycle, chain, shard],
                                   id=shard.key, seconds=chain.poll_seconds,
                                   next_run_time=_now(), executor=f"chain:{shard.key}")
        for job in self._jobs:
            self.scheduler.add_job(self._tracked, "interval", args=[self._housekeeping, job],
                                   id=f"job:{job.name}", seconds=job.seconds,
                                   next_run_time=_now(), executor=f"job:{job.name}")
        if self.leases is not None:
            leases = self.leases
            self.scheduler.add_job(self._housekeeping, "interval",
                                   args=[Job("leases", leases.period / 3, leases.tick)],
                                   id="job:leases", seconds=leases.period / 3,
                                   executor="leases")
        self.scheduler.start()

    def stop(self) -> bool:
        """Stop scheduling and wait up to `shutdown_timeout` for the jobs in flight.
        Returns True when none is left running."""
        for watcher in self._watchers.values():
            watcher.stop()
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + self.shutdown_timeout
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            return self._in_flight == 0

    def watch_heads(self) -> None:
        """Follow the new blocks of every chain whose source has a `ws_url` or a
        `zmq_url` (the first such source), each new block bringing the chain's next cycle
        forward."""
        for chain in self._chains:
            source = next((s for s in chain.sources if s.ws_url or s.zmq_url), None)
            if source is None:
                continue
            kind, url = (HeadWatcher, source.ws_url) if source.ws_url \
                else (BlockHashWatcher, source.zmq_url)
            self._watchers[chain.name] = kind(
                chain.name, source.name, url, self._waker(chain.name),
                stall_seconds=max(30.0, 3 * chain.poll_seconds)).start()

    def _waker(self, chain: str) -> Callable[[int], None]:
        def wake(_height: int) -> None:
            self.wake_chain(chain)
        return wake

    def wake_chain(self, chain: str) -> None:
        """Run `chain`'s cycles now rather than at their next poll (after the cycle in
        flight, if one is running)."""
        for shard in self._shards:
            if shard.chain != chain:
                continue
            with self._idle:
                self._pending.add(shard.key)
            try:
                self.scheduler.modify_job(shard.key, next_run_time=_now())
            except Exception as exc:  # stopping: the job is gone
                log.debug("wake_failed", chain=chain, error=type(exc).__name__)

    def _tracked(self, run: Callable[..., None], *args: object) -> None:
        with self._idle:
            self._in_flight += 1
        try:
            run(*args)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _cycle(self, chain: ChainSettings, shard: Shard) -> None:
        """One cycle of `shard` of `chain` (when this replica holds it); nothing it raises
        stops the daemon."""
        if self.leases is not None and not self.leases.holds(shard.key):
            return
        with self._idle:
            self._pending.discard(shard.key)
        try:
            self._run_cycle(chain, shard)
        finally:
            with self._idle:
                again = shard.key in self._pending
            if again:  # a head arrived during the cycle: its next one now
                try:
                    self.scheduler.modify_job(shard.key, next_run_time=_now())
                except Exception as exc:  # stopping
                    log.debug("wake_failed", chain=chain.name, error=type(exc).__name__)

    def _run_cycle(self, chain: ChainSettings, shard: Shard) -> None:
        started = time.monotonic()
        try:
            result = self.service.run_cycle(chain, shard)
        except LeaseLost as exc:
            log.info("lease_lost", chain=chain.name, error=str(exc))
            return
        except Exception as exc:  # a bug or a store failure: logged, the next cycle retries
            log.error("cycle_crashed", chain=chain.name, error=f"{type(exc).__name__}: {exc}")
            self.metrics.cycle(chain.name, time.monotonic() - started, False, None, None,
                               time.time())
            return
        self.metrics.cycle(chain.name, result.duration, result.error is None,
                           result.head.height if result.head else None,
                           result.block.height if result.block else None, time.time())
        watcher = self._watchers.get(chain.name)
        if watcher is not None and result.head is not None:
            watcher.polled(result.head.height)
        try:
            self.metrics.findings(self.service.store.open_counts())
        except Exception as exc:
            log.warning("metrics_failed", error=type(exc).__name__)
        write = result.write
        changed = bool(write.opened or write.cleared or write.voided) if write \
            else bool(result.findings)  # a failed cycle may have opened source_stale
        if changed:
            self._wake()

    def _wake(self) -> None:
        """Run the wake-on-change jobs now instead of at their next interval."""
        for job in self._jobs:
            if job.wake_on_change:
                try:
                    self.scheduler.modify_job(f"job:{job.name}", next_run_time=_now())
                except Exception as exc:  # stopping: the job is gone
                    log.debug("wake_failed", job=job.name, error=type(exc).__name__)

    def _housekeeping(self, job: Job) -> None:
        try:
            job.run()
        except Exception as exc:
            log.error("job_failed", job=job.name, error=f"{type(exc).__name__}: {exc}")


def run_forever(service: Service, stop: threading.Event | None = None,
                jobs: Sequence[Job] = (), metrics: Metrics | None = None,
                shutdown_timeout: float = SHUTDOWN_TIMEOUT) -> bool:
    """Run the daemon until SIGTERM/SIGINT (or `stop`): check the sources, serve
    `/healthz` and `/metrics`, schedule every chain and job. Returns True when every
    cycle in flight finished within `shutdown_timeout`.

    Raises ConfigError (listen address unusable), ChainMismatch (a source serves another
    chain) before anything runs.
    """
    stop = stop or threading.Event()
    metrics = metrics or Metrics()
    service.observer = service.observer or metrics
    service.store.sync_catalog(service.settings)
    service.verify_sources()
    health = HealthServer(service.settings.daemon.listen, service.status, metrics,
                          service.settings.daemon.metrics_token,
                          app=build_app(service, metrics,
                                        service.settings.daemon.metrics_token)).start()
    leases = None
    if service.store.engine.dialect.name == "postgresql":
        leases = Leases(service.store.engine,
                        [s.key for c in service.settings.chains for s in shards(c)],
                        service.settings.daemon.lease_seconds)
        service.fence = leases.fence
        leases.tick()
    me, started_at = (leases.me if leases else replica_id()), service.now()
    service.beat(me, started_at)
    jobs = [*jobs, Job("heartbeat", HEARTBEAT_SECONDS, lambda: service.beat(me, started_at))]
    daemon = Daemon(service, metrics, jobs, shutdown_timeout, leases=leases)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    daemon.start()
    daemon.watch_heads()
    log.info("started", chains=[c.name for c in service.settings.chains],
             listen=health.address)
    try:
        stop.wait()
    finally:
        clean = daemon.stop()
        if leases is not None:
            leases.release_all()
        health.stop()
    log.info("stopped", clean=clean)
    return clean


def _now() -> datetime:
    return datetime.now(UTC)
