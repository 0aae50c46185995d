"""The daemon's Prometheus metrics (prometheus-client), on a registry of their own.

Cycle metrics come from each CycleResult; per-source request and error counts from
the service as it uses and drops adapters (`SourceObserver`); open findings are
counted from the store after each cycle.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from chains.errors import ChainMismatch, DecodeError, SegwatchError, SourceUnavailable
from chains.jsonrpc import RpcErrorResponse

CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


def error_kind(error: SegwatchError) -> str:
    """A short, bounded label for a source failure (metrics must not carry free text)."""
    if isinstance(error, ChainMismatch):
        return "wrong_chain"
    if isinstance(error, DecodeError):
        return "malformed"
    if isinstance(error, RpcErrorResponse):
        return "rpc_error"
    if not isinstance(error, SourceUnavailable):
        return "other"
    if type(error).__name__ == "NoFreshSource":
        return "stale"
    reason = error.reason.lower()
    for needle, kind in (("429", "rate_limited"), ("rate limited", "rate_limited"),
                         ("timed out", "timeout"),
                         ("timeout", "timeout"), ("http 5", "http_5xx"),
                         ("connect", "connection"), ("behind", "stale"), ("s old", "stale")):
        if needle in reason:
            return kind
    return "unavailable"


class Metrics:
    """Every metric `/metrics` exposes. Thread-safe (prometheus-client's own locking)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycle_duration = Histogram(
            "segwatch_cycle_duration_seconds", "Duration of poll + reconcile cycles.",
            ["chain"], buckets=CYCLE_BUCKETS, registry=r)
        self.cycles = Counter("segwatch_cycles_total", "Cycles run, by outcome (ok, failed).",
                              ["chain", "outcome"], registry=r)
        self.rpc_requests = Counter(
            "segwatch_rpc_requests_total", "HTTP requests sent to a source (retries included).",
            ["chain", "source"], registry=r)
        self.rpc_errors = Counter(
            "segwatch_rpc_errors_total", "Source failures, by kind.", ["chain", "source", "kind"],
            registry=r)
        self.head_height = Gauge("segwatch_head_height", "Best head height seen per chain.",
                                 ["chain"], registry=r)
        self.head_lag = Gauge(
            "segwatch_head_lag_blocks",
            "Blocks between the best head and the block the last cycle reconciled.",
            ["chain"], registry=r)
        self.open_findings = Gauge("segwatch_open_findings",
                                   "Open discrepancies by type and severity.",
                                   ["type", "severity"], registry=r)
        self.last_success = Gauge(
            "segwatch_last_success_timestamp_seconds",
            "Unix time of the last successful cycle per chain.", ["chain"], registry=r)
        self._finding_keys: set[tuple[str, str]] = set()

    # -- SourceObserver ------------------------------------------------------------------
    def requests(self, chain: str, source: str, count: int) -> None:
        """Count `count` requests an adapter of `source` sent."""
        if count > 0:
            self.rpc_requests.labels(chain, source).inc(count)

    def source_error(self, chain: str, source: str, error: SegwatchError) -> None:
        """Count one failure of `source`."""
        self.rpc_errors.labels(chain, source, error_kind(error)).inc()

    # -- cycles --------------------------------------------------------------------------
    def cycle(self, chain: str, duration: float, ok: bool, head: int | None,
              block: int | None, finished_at: float) -> None:
        """Record one cycle's outcome."""
        self.cycle_duration.labels(chain).observe(duration)
        self.cycles.labels(chain, "ok" if ok else "failed").inc()
        if head is not None:
            self.head_height.labels(chain).set(head)
            if block is not None:
                self.head_lag.labels(chain).set(head - block)
        if ok:
            self.last_success.labels(chain).set(finished_at)

    def findings(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Set the open-findings gauge; a (type, severity) no longer open goes to 0."""
        for key in self._finding_keys - set(counts):
            self.open_findings.labels(*key).set(0)
        for key, count in counts.items():
            self.open_findings.labels(*key).set(count)
        self._finding_keys |= set(counts)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
