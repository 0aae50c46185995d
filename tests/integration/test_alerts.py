"""Alerts: payloads are pure functions of a discrepancy and one of its audit entries;
delivery is tested against a real loopback webhook receiver, on SQLite and PostgreSQL.

Findings are made by the real reconciliation path (Service.run_cycle with a fake chain
adapter); the dispatcher reads their audit entries and POSTs them.

The pure payload tests live here too: tests/unit/test_alerts.py would share this module's
basename, which pytest's default import mode cannot collect twice.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import Session, SQLModel, select
from structlog.testing import capture_logs

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from daemon.bootstrap import open_store
from daemon.errors import InputError
from daemon.inputs.config import AlertSettings, Settings
from daemon.runtime.alert_payloads import verify_signature
from daemon.runtime.alerts import (
    EVENTS,
    SIGNATURE_HEADER,
    Alert,
    AlertDispatcher,
    DeliveryReport,
    RetryPolicy,
    alert_from,
    build_payload,
    sink_id,
    slack_payload,
)
from daemon.runtime.logs import configure
from daemon.service import Service
from daemon.store import models as m
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER, acting
from tests.realdeps import postgres_schema

ROLES = {"mia": ("maker",), "carl": ("checker",)}

ALICE = canonical_evm_address("0x" + "a1" * 20)
OMNI = canonical_evm_address("0x" + "b2" * 20)
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
WEI = 10**18
SECRET = "qs-s3cr3t-0f-the-sink"
KEY_PATH = "Kp9xw2LmQ7rT4vZ8yB3nH6jD"
PASSWORD = "hunter2-pw"
LEDGER = f"""chain,address,structure,owner,asset,amount
ethereum,{ALICE},segregated,alice,ETH,1.5
ethereum,{ALICE},segregated,alice,USDC,100
ethereum,{OMNI},omnibus,bob,ETH,2
ethereum,{OMNI},omnibus,carol,ETH,3
"""
BALANCED = {(ALICE, "ETH"): 15 * WEI // 10, (ALICE, "USDC"): 100_000_000, (OMNI, "ETH"): 5 * WEI}


AT = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"
WEBHOOK_FIELDS = {
    "id", "event", "action", "actor", "discrepancy_id", "type", "severity", "status", "chain",
    "address", "asset", "decimals", "owners", "onchain", "ledger", "in_transit", "difference",
    "amount", "counterparty", "tx_hash", "block_number", "detected_at", "cure_deadline",
    "occurred_at"}


# ---------------------------------------------------------------- payloads (pure, no I/O)


def row(**changes: Any) -> m.Discrepancy:
    values: dict[str, Any] = dict(
        id=12, fingerprint="fp", chain_id=1, type="balance_shortfall", severity="critical",
        status="open", address=ADDRESS, asset="ETH", owners=["bob", "carol"],
        onchain=3 * WEI, ledger=5 * WEI, difference=-2 * WEI, block_number=100,
        detected_at=AT, last_seen_at=AT, cure_deadline=AT + timedelta(days=3))
    values.update(changes)
    return m.Discrepancy(**values)


def audit_entry(action: str, seq: int = 7, payload: dict[str, Any] | None = None) -> m.AuditEntry:
    return m.AuditEntry(seq=seq, at=AT + timedelta(minutes=seq), actor="engine", action=action,
                        discrepancy_id=12, payload=payload or {}, prev_hash="0" * 64,
                        hash=f"{seq:064x}")


def an_alert(action: str = "detected", payload: dict[str, Any] | None = None,
          **changes: Any) -> Alert:
    made = alert_from(audit_entry(action, payload=payload), row(**changes), "ethereum", 18)
    assert made is not None
    return made


@pytest.mark.parametrize(("action", "event", "status"), [
    ("detected", "detected", "open"), ("escalated", "escalated", "open"),
    ("self_cleared", "recovered", "self_cleared"), ("resolved", "recovered", "resolved"),
    ("voided", "recovered", "voided")])
def test_alert_worthy_actions_map_to_events(action: str, event: str, status: str) -> None:
    """A new finding, an escalation and the three ways a finding ends each make one alert,
    whose status is the state the change led to."""
    made = an_alert(action)
    assert (made.event, made.action, made.status) == (event, action, status)
    assert made.id == "segwatch-12-7"


@pytest.mark.parametrize("action", ["proposed", "rejected", "ledger_imported", "updated"])
def test_other_actions_make_no_alert(action: str) -> None:
    """Workflow steps and imports that change no finding's standing are not alerted."""
    assert action not in EVENTS
    assert alert_from(audit_entry(action), row(), "ethereum") is None


def test_webhook_payload_carries_the_finding_with_base_unit_strings() -> None:
    """The generic payload has every documented field; amounts are base-unit strings and
    times ISO-8601 UTC."""
    payload = build_payload("webhook", an_alert())
    assert set(payload) == WEBHOOK_FIELDS
    assert payload["id"] == "segwatch-12-7" and payload["discrepancy_id"] == 12
    assert (payload["event"], payload["type"], payload["severity"]) == (
        "detected", "balance_shortfall", "critical")
    assert (payload["chain"], payload["address"], payload["asset"]) == ("ethereum", ADDRESS, "ETH")
    assert (payload["onchain"], payload["ledger"], payload["difference"]) == (
        str(3 * WEI), str(5 * WEI), str(-2 * WEI))
    assert payload["amount"] is None and payload["owners"] == ["bob", "carol"]
    assert payload["detected_at"] == "2026-11-20T15:00:00Z"
    assert payload["occurred_at"] == "2026-11-20T15:07:00Z"
    assert json.loads(json.dumps(payload)) == payload


def test_detected_alert_keeps_the_amounts_recorded_at_detection() -> None:
    """An alert sent late reports the change as it happened, not the finding's later state."""
    noted = {"severity": "critical", "onchain": "4", "ledger": "5", "difference": "-1",
             "block_number": 90}
    made = an_alert("detected", noted, onchain=3, ledger=5, difference=-2, block_number=100)
    assert (made.onchain, made.ledger, made.difference, made.block_number) == (4, 5, -1, 90)


def test_recovery_without_recorded_amounts_uses_the_current_ones() -> None:
    """A self-cleared entry records only the transition; amounts come from the finding."""
    made = an_alert("self_cleared", {"from": "open", "to": "self_cleared"})
    assert (made.onchain, made.severity, made.status) == (3 * WEI, "critical", "self_cleared")


def test_transfer_finding_payload_has_tx_and_amount() -> None:
    """A transfer finding carries its transaction, block, amount and counterparty."""
    payload = build_payload("webhook", an_alert(
        type="unauthorized_outflow", onchain=None, ledger=None, difference=None,
        amount=7 * WEI, counterparty="0x" + "99" * 20, tx_hash="0x" + "ab" * 32,
        block_number=101))
    assert (payload["amount"], payload["tx_hash"], payload["block_number"]) == (
        str(7 * WEI), "0x" + "ab" * 32, 101)
    assert payload["onchain"] is None and payload["counterparty"] == "0x" + "99" * 20


def test_slack_payload_has_text_and_mrkdwn_section_blocks() -> None:
    """Slack gets a summary `text` and section blocks of at most ten mrkdwn fields, amounts
    in display units."""
    payload = build_payload("slack", an_alert())
    assert payload["text"].startswith("New finding: discrepancy #12 balance_shortfall")
    sections = [b for b in payload["blocks"] if b["type"] == "section"]
    fields = [f for s in sections for f in s.get("fields", [])]
    assert all(len(s.get("fields", [])) <= 10 for s in sections)
    assert all(f["type"] == "mrkdwn" for f in fields)
    texts = [f["text"] for f in fields]
    assert "*Difference*\n-2 ETH" in texts and "*Owners*\nbob, carol" in texts
    assert "segwatch-12-7" in json.dumps(payload["blocks"][-1])


def test_slack_recovery_says_how_it_ended_and_escapes_markup() -> None:
    """A recovery names the closing state; Slack control characters are escaped."""
    payload = slack_payload(an_alert("voided", owners=["<!channel> & co"]))
    assert payload["text"].startswith("Recovered (voided): discrepancy #12")
    assert "&lt;!channel&gt; &amp; co" in json.dumps(payload)
    assert "<!channel>" not in json.dumps(payload)


def test_slack_without_decimals_shows_base_units_and_caps_owner_list() -> None:
    """Without the asset's decimals amounts stay in base units; a long omnibus owner list
    is shortened."""
    made = alert_from(audit_entry("detected"), row(owners=[f"o{i}" for i in range(9)]),
                      "ethereum", None)
    assert made is not None
    texts = json.dumps(slack_payload(made))
    assert f"{-2 * WEI} base units" in texts and "o0, o1, o2, o3, o4, and 4 more" in texts


def test_chain_level_finding_has_no_wallet_fields() -> None:
    """A `source_stale` finding concerns a chain, not a wallet: address and asset are null
    and the Slack summary names the chain alone."""
    made = an_alert(type="source_stale", severity="warning", address=None, asset=None,
                    owners=[], onchain=None, ledger=None, difference=None, block_number=None)
    payload = build_payload("webhook", made)
    assert (payload["address"], payload["asset"], payload["onchain"]) == (None, None, None)
    assert slack_payload(made)["text"].endswith("source_stale [warning] on ethereum")


@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_payloads_carry_no_url(kind: str) -> None:
    """Payloads are built from the finding alone: no URL of a sink or source appears."""
    text = json.dumps(build_payload(kind, an_alert()))
    assert "://" not in text and SECRET not in text


def test_unknown_kind_is_refused() -> None:
    """Only the two documented sink kinds have a payload."""
    with pytest.raises(ValueError, match="unknown alert sink kind"):
        build_payload("email", an_alert())


def test_sink_id_is_stable_and_hides_the_url() -> None:
    """A sink is stored under its kind and a hash of its URL: stable, distinct per URL and
    kind, and without any part of the URL."""
    url = f"https://hooks.example.com/services/{SECRET}?token={SECRET}"
    slack = AlertSettings(kind="slack", url=url)
    key = sink_id(slack)
    assert key == sink_id(AlertSettings(kind="slack", url=url)) and key.startswith("slack-")
    assert key != sink_id(AlertSettings(kind="webhook", url=url))
    assert key != sink_id(AlertSettings(kind="slack", url=url + "x"))
    assert SECRET not in key and "hooks" not in key and len(key) <= 64


# ---------------------------------------------------------------- delivery (loopback receiver, both stores)


class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST, answers 204, or fails the next
    requests with a chosen status when told to."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.accepted: list[dict[str, Any]] = []
        self.broken: set[str] = set()
        """Paths that always answer 500."""
        self.hold: threading.Event | None = None
        """When set to an event, requests wait for it (at most 10 s) before being answered."""
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Condition()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}{path}"

    def fail_next(self, times: int, status: int = 500,
                  headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._failures += [(status, headers or {})] * times

    def bodies(self, path: str = "/hook") -> list[dict[str, Any]]:
        with self._lock:
            return [b["body"] for b in self.accepted if b["path"].startswith(path)]

    def wait_for(self, count: int, path: str, timeout: float) -> bool:
        """Wait until `count` alerts were accepted on `path`; return whether they were."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.bodies(path)) >= count, timeout)

    def wait_for_attempts(self, count: int, timeout: float) -> bool:
        """Wait until `count` requests arrived; return whether they did."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.attempts) >= count, timeout)

    def _answer(self, path: str, body: str, signature: str | None = None
                ) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.attempts.append(body)
            self._lock.notify_all()
        if self.hold is not None:
            self.hold.wait(timeout=10)
        with self._lock:
            if path in self.broken:
                return 500, {}
            if self._failures:
                return self._failures.pop(0)
            self.accepted.append({"path": path, "body": json.loads(body), "raw": body,
                                  "signature": signature})
            self._lock.notify_all()
            return 204, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                status, headers = receiver._answer(self.path, body,
                                                   self.headers.get(SIGNATURE_HEADER))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class World:
    """A store with one EVM chain and a ledger, a fake chain, and one clock for both the
    reconciliation service and the dispatchers."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.adapter = FakeAdapter(balances_by_key=dict(BALANCED))
        self.clock = Clock()
        settings = Settings(
            store={"url": store_url},  # type: ignore[arg-type]
            users=[{"name": "mia", "roles": ["maker"]}, {"name": "carl", "roles": ["checker"]}],  # type: ignore[list-item]
            chains=[{"name": "ethereum", "family": "evm", "chain_id": 1,  # type: ignore[list-item]
                     "confirmations": 0, "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}],
                     "tokens": [{"symbol": "USDC", "contract": USDC, "decimals": 6}]}])
        upgrade(make_engine(store_url))
        self.service = Service(settings, open_store(store_url), lambda _c, _s: self.adapter,
                               self.clock)
        ledger = tmp_path / "ledger.csv"
        ledger.write_text(LEDGER)
        self.service.import_ledger(ledger, dry_run=False, actor=FEEDER)
        self.sleeps: list[float] = []
        self.dispatchers: list[AlertDispatcher] = []

    def cycle(self, **balances: int) -> None:
        """Run one reconciliation cycle with these balances changed from the ledger's."""
        keys = {"alice_eth": (ALICE, "ETH"), "alice_usdc": (ALICE, "USDC"),
                "omni_eth": (OMNI, "ETH")}
        self.adapter.balances_by_key = {**BALANCED, **{keys[k]: v for k, v in balances.items()}}
        self.clock.now += timedelta(seconds=1)
        assert self.service.run_cycle(self.service.settings.chains[0]).error is None

    def dispatcher(self, *urls: str, kind: str = "webhook", secret_env: str | None = None,
                   **options: Any) -> AlertDispatcher:
        sinks = [AlertSettings(kind=kind, url=url, secret_env=secret_env)  # type: ignore[arg-type]
                 for url in urls]
        options.setdefault("sleep", self.sleeps.append)
        made = AlertDispatcher(sinks, self.service.store.engine, clock=self.clock,
                               policy=RetryPolicy(timeout=5.0), rand=lambda: 0.5, **options)
        self.dispatchers.append(made)
        return made

    def cursor(self, url: str, kind: str = "webhook") -> m.AlertCursor:
        key = sink_id(AlertSettings(kind=kind, url=url))  # type: ignore[arg-type]
        with Session(self.service.store.engine) as session:
            row = session.get(m.AlertCursor, key)
        assert row is not None
        return row


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[World]:
    made = World(store_url, tmp_path)
    yield made
    for dispatcher in made.dispatchers:
        dispatcher.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def events(bodies: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(b["discrepancy_id"], b["event"]) for b in bodies]


def seqs(bodies: list[dict[str, Any]]) -> list[int]:
    return [int(b["id"].rsplit("-", 1)[1]) for b in bodies]


def test_every_state_change_is_delivered_once_in_order(world: World,
                                                       receiver: Receiver) -> None:
    """Each finding's detection and recovery reach the sink exactly once, in log order;
    audit entries that are not state changes of a finding are skipped."""
    dispatcher = world.dispatcher(receiver.url())
    assert dispatcher.deliver_pending().delivered == 0  # only the ledger import so far
    world.cycle(alice_usdc=1, omni_eth=4 * WEI)
    first = dispatcher.deliver_pending()
    assert (first.delivered, first.failed) == (2, ())
    world.cycle()
    assert dispatcher.deliver_pending().delivered == 2
    assert dispatcher.deliver_pending().delivered == 0
    bodies = receiver.bodies()
    assert sorted(events(bodies)) == [(1, "detected"), (1, "recovered"),
                                      (2, "detected"), (2, "recovered")]
    assert seqs(bodies) == sorted(seqs(bodies)) and len({b["id"] for b in bodies}) == 4
    shortfall = next(b for b in bodies if b["asset"] == "USDC" and b["event"] == "detected")
    assert (shortfall["type"], shortfall["severity"], shortfall["chain"]) == (
        "balance_shortfall", "critical", "ethereum")
    assert (shortfall["onchain"], shortfall["ledger"], shortfall["difference"]) == (
        "1", "100000000", "-99999999")
    assert shortfall["owners"] == ["alice"] and shortfall["address"] == ALICE
    cursor = world.cursor(receiver.url())
    assert (cursor.delivered, cursor.failures, cursor.last_seq) == (4, 0, max(seqs(bodies)))


def test_failing_sink_is_retried_with_backoff_and_delivers_later_once(
        world: World, receiver: Receiver) -> None:
    """A sink answering 500 is retried a few times, deferred, and served later from the
    first undelivered alert, with no alert lost or repeated."""
    dispatcher = world.dispatcher(receiver.url())
    receiver.fail_next(5)
    world.cycle(alice_usdc=1)
    report = dispatcher.deliver_pending()
    (failed,) = report.failed
    assert failed.error == "HTTP 500" and failed.backlog == 1 and report.delivered == 0
    assert len(receiver.attempts) == 3 and len(world.sleeps) == 2
    assert failed.deferred_until is not None and failed.deferred_until > world.clock.now
    assert dispatcher.deliver_pending().sinks[0].deferred_until == failed.deferred_until
    assert len(receiver.attempts) == 3  # deferred: not even tried

    world.cycle()  # the shortfall clears while the sink is down
    world.clock.now = failed.deferred_until + timedelta(seconds=1)
    report = dispatcher.deliver_pending()
    assert report.delivered == 2 and report.failed == () and report.sinks[0].backlog == 0
    assert len(receiver.attempts) == 7  # 3 failed, then 2 failed and 1 + 1 delivered
    assert events(receiver.bodies()) == [(1, "detected"), (1, "recovered")]
    cursor = world.cursor(receiver.url())
    assert (cursor.failures, cursor.next_attempt_at, cursor.delivered) == (0, None, 2)
    assert cursor.last_error == "HTTP 500"


def test_deferral_grows_exponentially_while_a_sink_stays_down(world: World,
                                                              receiver: Receiver) -> None:
    """Each failed run doubles how long the sink is left alone."""
    dispatcher = world.dispatcher(receiver.url())
    receiver.fail_next(100)
    world.cycle(alice_usdc=1)
    waits = []
    for _ in range(3):
        (failed,) = dispatcher.deliver_pending().failed
        assert failed.deferred_until is not None
        waits.append(failed.deferred_until - world.clock.now)
        world.clock.now = failed.deferred_until
    assert waits == [timedelta(seconds=30 * 1.125 * f) for f in (1, 2, 4)]
    assert world.cursor(receiver.url()).failures == 3


@pytest.mark.parametrize(("status", "headers", "attempts", "wait"), [
    (429, {"Retry-After": "120"}, 1, timedelta(seconds=120)),
    (404, {}, 1, timedelta(seconds=30)),
])
def test_sink_that_asks_to_wait_or_refuses_is_not_hammered(
        world: World, receiver: Receiver, status: int, headers: dict[str, str],
        attempts: int, wait: timedelta) -> None:
    """A 429 is honoured (Retry-After) and a 4xx is not retried within the run; both are
    retried by a later run."""
    dispatcher = world.dispatcher(receiver.url())
    receiver.fail_next(1, status, headers)
    world.cycle(alice_usdc=1)
    (failed,) = dispatcher.deliver_pending().failed
    assert len(receiver.attempts) == attempts and failed.error == f"HTTP {status}"
    assert failed.deferred_until is not None and failed.deferred_until - world.clock.now >= wait
    world.clock.now = failed.deferred_until
    assert dispatcher.deliver_pending().delivered == 1


def test_restart_neither_repeats_nor_loses(world: World, receiver: Receiver) -> None:
    """A new dispatcher on the same store carries on where the last one stopped."""
    world.cycle(alice_eth=1, alice_usdc=1, omni_eth=1)
    first = world.dispatcher(receiver.url())
    assert first.deliver_pending(max_alerts=1).delivered == 1
    assert first.deliver_pending(max_alerts=1).sinks[0].backlog == 1
    first.close()
    second = world.dispatcher(receiver.url())
    assert second.deliver_pending().delivered == 1
    world.cycle()
    third = world.dispatcher(receiver.url())
    assert third.deliver_pending().delivered == 3
    bodies = receiver.bodies()
    assert len(bodies) == 6 and len({b["id"] for b in bodies}) == 6
    assert seqs(bodies) == sorted(seqs(bodies))
    assert sorted(events(bodies)) == [(i, e) for i in (1, 2, 3) for e in ("detected",
                                                                          "recovered")]


def test_one_failing_sink_does_not_hold_up_another(world: World, receiver: Receiver) -> None:
    """While one sink is failing and backing off, the other receives every alert."""
    broken, healthy = receiver.url("/broken"), receiver.url("/healthy")
    receiver.broken.add("/broken")

    def sleep(_seconds: float) -> None:  # the failing sink's back-off waits for the other
        world.sleeps.append(float(receiver.wait_for(2, "/healthy", timeout=10)))

    dispatcher = world.dispatcher(broken, healthy, sleep=sleep)
    world.cycle(alice_usdc=1, omni_eth=1)
    report = dispatcher.deliver_pending()
    assert world.sleeps == [1.0, 1.0]  # the healthy sink finished during the retries
    # keyed by sink id: both sinks share a host, and a redacted target keeps only that
    by_sink = {s.sink: s for s in report.sinks}
    healthy_id, broken_id = (sink_id(AlertSettings(kind="webhook", url=u)) for u in (healthy, broken))
    assert (by_sink[healthy_id].delivered, by_sink[healthy_id].error) == (2, None)
    assert (by_sink[broken_id].delivered, by_sink[broken_id].error) == (0, "HTTP 500")
    assert by_sink[broken_id].backlog == 2 and world.cursor(broken).last_seq == 0


def test_workflow_escalation_and_resolution_are_alerted_but_not_its_other_steps(
        world: World, receiver: Receiver) -> None:
    """Through the real workflow: an overdue finding's escalation and its approved
    resolution are alerted (with the severity raised to and the approving checker); a
    proposal and a refused action are not. The Slack sink gets `text` + `blocks`."""
    world.cycle(alice_usdc=250_000_000)  # a surplus: a warning until it is overdue
    (record,) = world.service.discrepancies()
    finding = record.row.id or 0
    world.clock.now = record.row.cure_deadline + timedelta(minutes=1)
    assert world.service.escalate() == [finding]
    world.service.act(finding, "propose", acting("mia", *ROLES["mia"]), reason="ledger_corrected", note="fixed")
    with pytest.raises(InputError):
        world.service.act(finding, "approve", acting("mia", *ROLES["mia"]))  # a maker cannot approve
    world.service.act(finding, "approve", acting("carl", *ROLES["carl"]))
    hook, slack = receiver.url("/hook"), receiver.url("/slack")
    dispatcher = world.dispatcher(hook)
    assert dispatcher.deliver_pending().delivered == 3
    assert world.dispatcher(slack, kind="slack").deliver_pending().delivered == 3
    detected, escalated, resolved = receiver.bodies("/hook")
    assert (detected["event"], detected["severity"]) == ("detected", "warning")
    assert (escalated["event"], escalated["severity"], escalated["status"]) == (
        "escalated", "critical", "open")
    assert (resolved["event"], resolved["action"], resolved["status"], resolved["actor"]) == (
        "recovered", "resolved", "resolved", "carl")
    assert "fixed" not in json.dumps(receiver.bodies())  # free-text notes stay out
    slack_detected, slack_escalated, slack_resolved = receiver.bodies("/slack")
    assert slack_detected["text"].startswith("New finding: discrepancy #1 balance_surplus")
    assert slack_escalated["text"].startswith("Escalated: discrepancy #1")
    assert slack_resolved["text"].startswith("Recovered (resolved): discrepancy #1")
    assert all(b["type"] in ("section", "context") for b in slack_resolved["blocks"])
    assert "150 USDC" in json.dumps(slack_detected["blocks"])
    assert "*By*\\ncarl" in json.dumps(slack_resolved["blocks"])


@pytest.fixture
def pg_world(tmp_path: Path) -> Iterator[World]:
    """A world on PostgreSQL only: replicas exist only there (SQLite has one daemon)."""
    with postgres_schema() as url:
        made = World(url, tmp_path)
        yield made
        for dispatcher in made.dispatchers:
            dispatcher.close()


def test_two_replicas_never_serve_one_sink_at_once(pg_world: World,
                                                   receiver: Receiver) -> None:
    """On PostgreSQL, while one replica is posting to a sink, another leaves that sink
    alone: the alert is delivered once."""
    world = pg_world
    world.cycle(alice_usdc=1)
    receiver.hold = threading.Event()
    first, second = world.dispatcher(receiver.url()), world.dispatcher(receiver.url())
    reports: list[DeliveryReport] = []
    running = threading.Thread(target=lambda: reports.append(first.deliver_pending()))
    running.start()
    try:
        assert receiver.wait_for_attempts(1, timeout=10)
        (busy,) = second.deliver_pending().sinks
        assert busy.busy and busy.delivered == 0
    finally:
        receiver.hold.set()
        running.join(timeout=10)
    assert reports[0].delivered == 1 and len(receiver.attempts) == 1
    (after,) = second.deliver_pending().sinks
    assert (after.busy, after.delivered, after.backlog) == (False, 0, 0)


def test_time_budget_bounds_a_run(world: World, receiver: Receiver) -> None:
    """No alert is started once a run's time budget is spent; the next run goes on."""
    world.cycle(alice_usdc=1, omni_eth=1)
    dispatcher = world.dispatcher(receiver.url())
    (spent,) = dispatcher.deliver_pending(budget=0).sinks
    assert (spent.delivered, spent.backlog, receiver.attempts) == (0, 2, [])
    assert dispatcher.deliver_pending().delivered == 2


def test_secrets_in_sink_urls_never_reach_logs_payloads_or_the_store(
        world: World, receiver: Receiver, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """Query-string tokens, key-like path segments and passwords of sink URLs appear in no
    log line (raw or rendered), no payload and no stored delivery state."""
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    good = receiver.url(f"/hooks/{KEY_PATH}?token={SECRET}")
    dead = f"http://ops:{PASSWORD}@127.0.0.1:{closed}/hooks/{KEY_PATH}?token={SECRET}"
    dispatcher = world.dispatcher(good, dead)
    world.cycle(alice_usdc=1)
    with capture_logs() as raw:
        first = dispatcher.deliver_pending()
    world.cycle()
    world.clock.now += timedelta(hours=2)
    configure("json", verbose=True)
    second = dispatcher.deliver_pending()
    structlog.reset_defaults()
    out, err = capsys.readouterr()
    assert first.delivered == 1 and second.delivered == 1 and len(receiver.bodies()) == 2
    assert "ConnectError" in (second.failed[0].error or "")
    assert "alert_delivery_failed" in err and "127.0.0.1" in err
    with Session(world.service.store.engine) as session:
        stored = [c.model_dump() for c in session.exec(select(m.AlertCursor))]
    evidence = [repr(raw), out, err, caplog.text, repr(stored), repr(first), repr(second),
                json.dumps(receiver.bodies()), *receiver.attempts]
    for secret in (SECRET, KEY_PATH, PASSWORD, "ops:"):
        assert not [text for text in evidence if secret in text], secret


def test_store_failure_is_reported_not_raised(tmp_path: Path, receiver: Receiver) -> None:
    """A store the dispatcher cannot use makes a failed report, never an exception."""
    engine = make_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    dispatcher = AlertDispatcher([AlertSettings(kind="webhook", url=receiver.url())], engine,
                                 client=httpx.Client(timeout=5))
    report = dispatcher.deliver_pending()
    assert isinstance(report, DeliveryReport) and report.delivered == 0
    assert "OperationalError" in (report.failed[0].error or "")
    assert receiver.attempts == []


def test_unexpected_error_is_reported_not_raised(world: World) -> None:
    """Even an error nobody planned for stays inside the failing sink's report."""
    def explode(_request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"boom at {SECRET}")

    world.cycle(alice_usdc=1)
    dispatcher = world.dispatcher(f"http://127.0.0.1:1/?token={SECRET}",
                                  client=httpx.Client(transport=httpx.MockTransport(explode)))
    (failed,) = dispatcher.deliver_pending().failed
    assert failed.error == "RuntimeError: boom at ***"
    assert world.cursor(f"http://127.0.0.1:1/?token={SECRET}").last_seq == 0


def test_no_sinks_means_nothing_to_do(world: World) -> None:
    """A configuration without alert sinks makes an empty report."""
    assert world.dispatcher().deliver_pending() == DeliveryReport()


def test_migration_creates_the_alert_cursor_table_as_modelled(store_url: str) -> None:
    """The migrated `alert_cursor` table matches the model on this backend."""
    engine = make_engine(store_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert [d for d in diff if "alert_cursor" in repr(d)] == []


def test_webhook_alerts_are_signed_and_a_receiver_can_check_them(
        world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `secret_env`, every webhook carries an HMAC-SHA256 signature of its exact body
    with a timestamp; the receiver's check (`verify_signature`) accepts each alert as
    sent and rejects an altered body, a replay outside the tolerance and another key.
    The secret is in no payload."""
    secret = "whsec-0123456789abcdef"
    monkeypatch.setenv("TEST_HOOK_SECRET", secret)
    dispatcher = world.dispatcher(receiver.url(), secret_env="TEST_HOOK_SECRET")
    world.cycle(alice_usdc=1, omni_eth=4 * WEI)
    assert dispatcher.deliver_pending().delivered == 2
    now = world.clock.now.timestamp()
    for alert in receiver.accepted:
        raw, header = alert["raw"].encode(), alert["signature"]
        assert header and header.startswith("t=")
        assert secret not in alert["raw"]
        assert verify_signature(secret.encode(), header, raw, now) is None
        assert verify_signature(secret.encode(), header, raw.replace(b"detected", b"recovered"),
                                now) == "bad signature"
        assert verify_signature(secret.encode(), header, raw, now + 3600) == "stale timestamp"
        assert verify_signature(b"another-secret-value", header, raw, now) == "bad signature"
        assert verify_signature(secret.encode(), "t=1,v1=zz", raw, now) == "malformed"


def test_unsigned_sinks_send_no_signature(world: World, receiver: Receiver) -> None:
    """Without `secret_env` no signature header is sent."""
    dispatcher = world.dispatcher(receiver.url())
    world.cycle(alice_usdc=1)
    assert dispatcher.deliver_pending().delivered == 1
    assert [a["signature"] for a in receiver.accepted] == [None]


def test_every_alert_carries_the_signed_audit_head(world: World, receiver: Receiver) -> None:
    """With an audit key, each webhook payload carries the newest signed audit head; it
    covers the alerted entry, its signature holds, and the log still extends it (what a
    receiver can check later with `audit verify --against`). Slack shows it as a line."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from daemon.store.heads import Head, HeadSigner, check_signature

    signer = HeadSigner(Ed25519PrivateKey.generate())
    world.service.head_signer = signer
    world.cycle(alice_usdc=1)
    assert world.dispatcher(receiver.url("/hook")).deliver_pending().delivered == 1
    assert world.dispatcher(receiver.url("/slack"), kind="slack").deliver_pending() \
        .delivered == 1
    (body,) = receiver.bodies("/hook")
    head = Head.from_json(body["audit_head"])
    assert head.seq >= int(body["id"].rsplit("-", 1)[1])
    assert check_signature(head, signer.public) is None
    assert world.service.store.extends(head) is None
    (slack,) = receiver.bodies("/slack")
    assert f"audit head #{head.seq}" in json.dumps(slack)
