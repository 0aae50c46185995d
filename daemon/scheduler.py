"""`segwatch run`: each chain on its own interval; cycles of one chain never overlap."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.service import Service

log = structlog.get_logger("segwatch")


def run_forever(service: Service, stop: threading.Event | None = None) -> None:
    """Run every chain's cycle on its `poll_seconds` until SIGTERM/SIGINT (or `stop`),
    then let the cycles in flight finish and return.
    """
    stop = stop or threading.Event()
    service.store.sync_catalog(service.settings)
    service.verify_sources()
    workers = max(1, len(service.settings.chains))
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(workers)},
                                    job_defaults={"max_instances": 1, "coalesce": True})
    for chain in service.settings.chains:
        scheduler.add_job(service.run_cycle, "interval", args=[chain], id=chain.name,
                          seconds=chain.poll_seconds, next_run_time=_now())

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    scheduler.start()
    log.info("started", chains=[c.name for c in service.settings.chains])
    stop.wait()
    scheduler.shutdown(wait=True)
    log.info("stopped")


def _now() -> datetime:
    return datetime.now(UTC)
