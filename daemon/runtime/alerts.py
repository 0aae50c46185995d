"""Alert delivery: one webhook message per alert-worthy state change of a discrepancy.

Every state change of a discrepancy is already an entry of the hash-chained audit log,
so delivery needs no hook in reconciliation. Per sink, the dispatcher reads the audit
entries after that sink's persisted cursor, in `seq` order, and POSTs one message for
each entry whose action is alert-worthy: `detected` (a new finding), `escalated`, and
`self_cleared`, `resolved` or `voided` (a recovery). Other actions are skipped.

Guarantees:
- In order and deduplicated per sink: the cursor moves past an entry only after a 2xx
  for it, committed at once (a compare-and-set, so it never moves back).
- Nothing is lost: a sink that fails keeps its cursor on the first undelivered entry,
  however long it is down. It is retried with exponential backoff and jitter, a few
  times within a run, then deferred to a later run (`AlertCursor.next_attempt_at`).
- At least once, not exactly once: if the process dies between a 2xx and the commit
  (one short UPDATE), that one alert is sent again after the restart. Each message
  carries a deterministic `id` (`segwatch-<discrepancy id>-<seq>`) so receivers can
  drop the repeat.
- Audit `seq` values are assigned as max + 1 by one appender at a time (daemon/store/audit.py),
  so an entry never becomes visible after a later one: a cursor cannot pass an entry
  committed late.
- Replicas on one PostgreSQL store never serve one sink at once (a session advisory lock
  per sink, held for the run); the others skip it (`SinkReport.busy`).
- A failing sink never raises out of `deliver_pending`, never holds up another sink (each
  sink is served by its own thread) and never holds up reconciliation (no transaction
  is open during a POST). A run starts no alert after its time budget.

Secrets: a sink's URL is never stored (the cursor is keyed by `sink_id`), never logged
(only `redact_url`, and error texts are scrubbed of its parts) and never part of a
payload, which is built only from the discrepancy and the audit entry
(daemon/runtime/alert_payloads.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import structlog
from sqlalchemy import Engine, and_, func, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from chains.urls import redact_url, url_secrets
from daemon.inputs.config import AlertSettings
from daemon.runtime.alert_payloads import (
    EVENTS,
    SIGNATURE_HEADER,
    Alert,
    alert_from,
    build_payload,
    sign,
    slack_payload,
    slack_summary,
    webhook_payload,
    with_head,
)
from daemon.runtime.logs import redact_text
from daemon.store import models as m
from daemon.store.db import session_scope
from daemon.store.heads import Head
from daemon.store.heads import newest as newest_head

log = structlog.get_logger("segwatch")


def sink_id(sink: AlertSettings) -> str:
    """Return the stable name a sink's delivery state is stored under: its kind and a
    hash of its URL (a new URL is a new destination; the URL itself is never stored)."""
    digest = hashlib.sha256(f"{sink.kind}\n{sink.url}".encode()).hexdigest()
    return f"{sink.kind}-{digest[:16]}"


# ---------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. Within a run: `attempts` POSTs per alert, waiting exponentially
    (from `initial_wait`, at most `max_wait`, plus up to `jitter` seconds). After a failed
    run the sink is deferred `defer_initial` * 2^(failures-1) (at most `defer_max`, plus
    up to a quarter more at random), or as long as a 429's Retry-After asks."""

    attempts: int = 3
    initial_wait: float = 0.5
    max_wait: float = 5.0
    jitter: float = 0.5
    timeout: float = 5.0
    defer_initial: timedelta = timedelta(seconds=30)
    defer_max: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SinkReport:
    """What one run did for one sink."""

    sink: str
    target: str
    """The sink's URL, redacted."""
    delivered: int = 0
    backlog: int = 0
    """Alert-worthy entries still undelivered after this run."""
    error: str | None = None
    deferred_until: datetime | None = None
    busy: bool = False
    """Another replica was serving this sink; this run left it alone."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one `deliver_pending` run did, sink by sink."""

    sinks: tuple[SinkReport, ...] = ()

    @property
    def delivered(self) -> int:
        """Alerts delivered by this run, over every sink."""
        return sum(s.delivered for s in self.sinks)

    @property
    def failed(self) -> tuple[SinkReport, ...]:
        """The sinks whose run ended with an error."""
        return tuple(s for s in self.sinks if s.error is not None)


class _DeliveryFailed(Exception):
    """One POST of an alert failed; `transient` says whether retrying soon may help."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.transient, self.retry_after = message, transient, retry_after


class _CursorMoved(Exception):
    """Another dispatcher advanced this sink's cursor (two daemons on one store)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Sink:
    id: str
    kind: str
    url: str = field(repr=False)
    target: str = ""
    secret: bytes | None = field(default=None, repr=False)
    """Webhook: the key its messages are signed with (SIGNATURE_HEADER)."""


class AlertDispatcher:
    """Delivers pending alerts to every configured sink (see the module docstring).

    `client` (an httpx.Client, closed by its owner) and `clock`, `sleep` and `rand`
    (a float in [0, 1)) are injectable for tests.
    """

    def __init__(self, sinks: Sequence[AlertSettings], engine: Engine, *,
                 client: httpx.Client | None = None, policy: RetryPolicy | None = None,
                 clock: Callable[[], datetime] = _utcnow,
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        unique = {sink_id(s): s for s in sinks}  # the same sink twice is served once
        self._sinks = [_Sink(key, s.kind, s.url, redact_url(s.url), s.secret)
                       for key, s in unique.items()]
        self._engine = engine
        self._policy = policy or RetryPolicy()
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=self._policy.timeout,
                                              follow_redirects=False)
        self._clock, self._sleep, self._rand = clock, sleep, rand
        self._head: Head | None = None
        """The newest signed audit head, read at the start of each delivery run."""

    def close(self) -> None:
        """Close the HTTP client if this dispatcher made it."""
        if self._own_client:
            self._client.close()

    def deliver_pending(self, max_alerts: int = 100, budget: float = 30.0) -> DeliveryReport:
        """Deliver up to `max_alerts` pending alerts to each sink, sinks in parallel, each
        in `seq` order, starting no alert after `budget` seconds; return what was done.
        Never raises for a failing sink or store: the failure is logged and reported, and
        the sink is retried by a later run.
        """
        if not self._sinks:
            return DeliveryReport()
        try:  # the newest signed audit head rides along in every payload
            self._head = newest_head(self._engine)
        except SQLAlchemyError:
            self._head = None
        deadline = time.monotonic() + budget
        with ThreadPoolExecutor(len(self._sinks), thread_name_prefix="alerts") as pool:
            reports = pool.map(lambda sink: self._serve_safely(sink, max_alerts, deadline),
                               self._sinks)
            return DeliveryReport(tuple(reports))

    def _serve_safely(self, sink: _Sink, max_alerts: int, deadline: float) -> SinkReport:
        try:
            with self._exclusive(sink) as mine:
                if not mine:
                    return SinkReport(sink.id, sink.target, busy=True)
                return self._serve(sink, max_alerts, deadline)
        except (SQLAlchemyError, _CursorMoved) as exc:
            error = _scrub(f"{type(exc).__name__}: {exc}", sink.url)
            log.error("alert_store_error", sink=sink.id, target=sink.target, error=error)
            return SinkReport(sink.id, sink.target, error=error)
        except Exception as exc:  # a bug must not stop the other sinks or the scheduler job
            error = _scrub(f"{type(exc).__name__}: {exc}", sink.url)
            # no traceback: a rendered one may show local variables, the sink URL among them
            log.error("alert_dispatch_error", sink=sink.id, target=sink.target, error=error)
            return SinkReport(sink.id, sink.target, error=error)

    @contextmanager
    def _exclusive(self, sink: _Sink) -> Iterator[bool]:
        """Yield whether this process may serve `sink` now. On PostgreSQL, replicas share
        one store: a session advisory lock named after the sink, held for the run, lets
        one replica serve it at a time (the lock goes with a dead replica's connection).
        SQLite stores have one daemon each."""
        if self._engine.dialect.name != "postgresql":
            yield True
            return
        key = int.from_bytes(hashlib.sha256(f"segwatch-alerts\n{sink.id}".encode())
                             .digest()[:8], "big", signed=True)
        with self._engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                          {"key": key}).scalar())
            try:
                yield got
            finally:
                if got:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    def _serve(self, sink: _Sink, max_alerts: int, deadline: float) -> SinkReport:
        cursor = self._cursor(sink.id)
        if cursor.next_attempt_at is not None and cursor.next_attempt_at > self._clock():
            return SinkReport(sink.id, sink.target, backlog=self._backlog(cursor.last_seq),
                              deferred_until=cursor.next_attempt_at)
        delivered, last_seq = 0, cursor.last_seq
        while delivered < max_alerts and time.monotonic() < deadline:
            batch = self._pending(last_seq, min(max_alerts - delivered, 100))
            if not batch:
                break
            for alert in batch:
                if time.monotonic() >= deadline:
                    break
                try:
                    self._post(sink, alert)
                except _DeliveryFailed as exc:
                    until = self._record_failure(sink, cursor, last_seq, alert, exc)
                    return SinkReport(sink.id, sink.target, delivered,
                                      self._backlog(last_seq), exc.message, until)
                self._record_success(sink.id, last_seq, alert.seq)
                delivered, last_seq = delivered + 1, alert.seq
                log.info("alert_delivered", sink=sink.id, target=sink.target, alert=alert.id,
                         alert_event=alert.event)
        return SinkReport(sink.id, sink.target, delivered, self._backlog(last_seq))

    # -- store

    def _cursor(self, key: str) -> m.AlertCursor:
        """Return the sink's cursor; a sink seen for the first time starts at the beginning
        of the log, so no alert-worthy change still in the log is left out."""
        with session_scope(self._engine) as session:
            cursor = session.get(m.AlertCursor, key)
            if cursor is None:
                cursor = m.AlertCursor(sink=key, updated_at=self._clock())
                session.add(cursor)
            return cursor

    def _pending(self, after: int, limit: int) -> list[Alert]:
        query = (
            select(m.AuditEntry, m.Discrepancy, m.Chain.name, m.Asset.decimals)
            .join(m.Discrepancy, col(m.AuditEntry.discrepancy_id) == m.Discrepancy.id)
            .join(m.Chain, col(m.Discrepancy.chain_id) == m.Chain.id)
            .outerjoin(m.Asset, and_(col(m.Asset.chain_id) == m.Discrepancy.chain_id,
                                     col(m.Asset.symbol) == m.Discrepancy.asset))
            .where(col(m.AuditEntry.seq) > after, col(m.AuditEntry.action).in_(EVENTS))
            .order_by(col(m.AuditEntry.seq)).limit(limit))
        with Session(self._engine) as session:
            rows = session.exec(query).all()
        alerts = (alert_from(entry, row, chain, decimals) for entry, row, chain, decimals in rows)
        return [a for a in alerts if a is not None]

    def _backlog(self, after: int) -> int:
        query = (select(func.count()).select_from(m.AuditEntry)
                 .where(col(m.AuditEntry.seq) > after, col(m.AuditEntry.action).in_(EVENTS),
                        col(m.AuditEntry.discrepancy_id).is_not(None)))
        with Session(self._engine) as session:
            return session.exec(query).one()

    def _record_success(self, key: str, previous: int, seq: int) -> None:
        self._advance(key, previous, last_seq=seq, delivered=col(m.AlertCursor.delivered) + 1,
                      failures=0, next_attempt_at=None, updated_at=self._clock())

    def _record_failure(self, sink: _Sink, cursor: m.AlertCursor, last_seq: int, alert: Alert,
                        exc: _DeliveryFailed) -> datetime:
        now = self._clock()
        failures = (cursor.failures if last_seq == cursor.last_seq else 0) + 1
        until = now + self._deferral(failures, exc.retry_after)
        self._advance(sink.id, last_seq, failures=failures, next_attempt_at=until,
                      last_error=exc.message[:500], last_error_at=now, updated_at=now)
        log.warning("alert_delivery_failed", sink=sink.id, target=sink.target, alert=alert.id,
                    error=exc.message, failures=failures, retry_at=until.isoformat())
        return until

    def _advance(self, key: str, previous: int, **values: Any) -> None:
        """Update the sink's cursor only if it still stands at `previous`."""
        with session_scope(self._engine) as session:
            result = session.execute(update(m.AlertCursor).where(
                col(m.AlertCursor.sink) == key, col(m.AlertCursor.last_seq) == previous)
                .values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise _CursorMoved(f"the cursor of sink {key} moved past {previous} elsewhere")

    def _deferral(self, failures: int, retry_after: float | None) -> timedelta:
        policy = self._policy
        base = min(policy.defer_max, policy.defer_initial * (1 << min(failures - 1, 30)))
        delay = base * (1 + self._rand() / 4)
        if retry_after is not None:
            delay = max(delay, min(timedelta(seconds=retry_after), policy.defer_max))
        return delay

    # -- HTTP

    def _post(self, sink: _Sink, alert: Alert) -> None:
        """POST `alert` to `sink`, retrying transient failures; raise _DeliveryFailed."""
        policy = self._policy
        body = json.dumps(with_head(build_payload(sink.kind, alert), sink.kind, self._head),
                          separators=(",", ":"))

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            log.info("alert_retry", sink=sink.id, target=sink.target, alert=alert.id,
                     attempt=state.attempt_number,
                     error=failure.message if isinstance(failure, _DeliveryFailed) else None)

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
            + wait_random(0, policy.jitter),
            retry=retry_if_exception(_retry_soon), sleep=self._sleep, reraise=True,
            before_sleep=before_sleep)
        retrying(self._post_once, sink, body)

    def _post_once(self, sink: _Sink, body: str) -> None:
        content = body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "segwatch"}
        if sink.secret is not None:  # signed afresh per attempt: a retry is not a replay
            headers[SIGNATURE_HEADER] = sign(sink.secret, content,
                                             int(self._clock().timestamp()))
        try:
            response = self._client.post(sink.url, content=content, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _DeliveryFailed(_scrub(f"{type(exc).__name__}: {exc}", sink.url),
                                 transient=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        raise _DeliveryFailed(f"HTTP {status}", transient=status in (408, 425, 429) or
                             status >= 500, retry_after=_retry_after(response))


def _retry_soon(exc: BaseException) -> bool:
    """Retry within the run a transient failure, unless the sink asked us to wait."""
    return isinstance(exc, _DeliveryFailed) and exc.transient and exc.retry_after is None


def _retry_after(response: httpx.Response) -> float | None:
    """Return a 429/503's Retry-After in seconds (delta form only), else None."""
    if response.status_code not in (429, 503):
        return None
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86_400 else None


def _scrub(text: str, url: str) -> str:
    """Return `text` without any part of the sink's URL (query values included) and with
    every URL in it redacted."""
    secrets = url_secrets(url)
    with suppress(ValueError):  # url_secrets already covers an unparseable URL
        secrets += [value for _, value in parse_qsl(urlsplit(url).query) if len(value) >= 4]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_text(text)[:500]


__all__ = ["EVENTS", "SIGNATURE_HEADER", "Alert", "AlertDispatcher", "DeliveryReport",
           "RetryPolicy", "SinkReport", "alert_from", "build_payload", "sink_id",
           "slack_payload", "slack_summary", "webhook_payload"]
