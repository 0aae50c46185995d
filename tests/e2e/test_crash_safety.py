"""Crash safety (issue 5, item 6): each cycle's writes are one transaction, so a daemon
killed with SIGKILL at any point and restarted loses no finding and creates no duplicate.

A seeded scenario (tests/scenario.py) plays transactions on its own anvil node while
`python -m daemon.cli.app run` is started and SIGKILLed over and over: 20 kills at random
moments (in start-up, a cycle's reads, its write transaction) and 8 the daemon deals itself
at chosen points of the write transaction (before a random SQL statement, before COMMIT,
racing COMMIT, right after it). A last daemon then settles; the stored findings must be
the scenario's ground truth, each exactly once. Runs on SQLite and PostgreSQL. A second
test kills a first start in the middle of the SQLite store's first-use migration.

Reproduce another interleaving with CRASHTEST_SEED=N.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from chains.evm.devnet import (
    AnvilNode,
    deploy_contract,
    deploy_test_token,
    free_port,
    install_multicall,
    start_anvil,
)
from daemon.bootstrap import build_service
from daemon.inputs.config import load_settings
from daemon.store import models as m
from daemon.store.audit import GENESIS, entry_hash
from daemon.store.db import make_engine, upgrade
from tests import scenario as sc
from tests.anvil import require_anvil
from tests.e2e.cli import Result, segwatch
from tests.principals import FEEDER

pytestmark = pytest.mark.anvil

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CRASHTEST_SEED", "5006"))
EARLY_KILLS, LATE_KILLS = 8, 12
"""Kills by the test at random moments: `early` ones a random time after the spawn
(mostly in start-up: imports, schema and source checks, locks, leases), `late` ones a
random time after the daemon logged `started` (in cycles: reads, writes, commits) —
measured from the log, so that a slow, loaded machine still spreads them so."""
TARGETED = ("statement", "in-commit", "statement", "commit", "statement", "in-commit",
            "statement", "after-commit")
"""Deaths the probe deals at chosen points of a cycle's write (see tests/scenario.py):
four before a random SQL statement, two racing COMMIT, one before it, one after."""
EARLY_DELAY = (0.1, 2.5)
LATE_DELAY = (0.0, 2.0)
STEP_PAUSE = (0.3, 1.7)
"""Seconds between two scenario steps: the script spans most of the kill loop."""
POLL_SECONDS = 0.2
LEASE_SECONDS = 1
SELF_KILL_TIMEOUT = 20.0
SETTLE_TIMEOUT = 30.0


@pytest.fixture
def devnet() -> Iterator[AnvilNode]:
    """An anvil node of this test's own: the scenario impersonates and edits state."""
    node = start_anvil(require_anvil())
    try:
        yield node
    finally:
        node.stop()


@dataclass
class Run:
    """One daemon process: how it was to die, and what it left behind."""

    kind: str
    """`early` or `late` (killed by the test), or the probe's kill plan `POINT:WRITE:ARG`."""
    delay: float | None
    returncode: int
    stderr: str
    journal: list[str]

    @property
    def phase(self) -> str:
        """Where the SIGKILL landed: start-up, read (a cycle's reads, or between cycles),
        write (inside the cycle's transaction), commit (COMMIT sent, not returned)."""
        marks = [e for e in (line.split(" ", 1)[1] for line in self.journal)
                 if e.startswith(("write-begin", "write-end", "commit"))]
        if not marks:
            return "read" if '"event": "started"' in self.stderr else "start-up"
        if marks[-1].startswith("write-end"):
            return "read"
        return "commit" if marks[-1] == "commit" else "write"

    @property
    def self_killed(self) -> bool:
        return any(line.split(" ", 1)[1].startswith("kill ") for line in self.journal)

    def writes(self) -> list[dict[str, int]]:
        """Each completed cycle write: its SQL statements, COMMITs and connections."""
        ends = [line.split()[3:] for line in self.journal if line.split()[1] == "write-end"]
        return [{k: int(v) for k, v in (pair.split("=") for pair in end)} for end in ends]


@dataclass
class Harness:
    cwd: Path
    store_url: str
    runs: list[Run] = field(default_factory=list)

    def cli(self, *args: str) -> Result:
        return segwatch(*args, cwd=self.cwd)

    def spawn(self, name: str, probe: bool, kill: str = "") -> tuple[subprocess.Popen[bytes],
                                                                      Path, Path]:
        """Start `python -m daemon.cli.app run`; with `probe`, the crash probe is loaded."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGWATCH_", "CRASH"))}
        stderr, journal = self.cwd / f"{name}.log", self.cwd / f"{name}.journal"
        if probe:
            env["PYTHONPATH"] = os.pathsep.join([str(self.cwd / "probe"), str(REPO)])
            env[sc.JOURNAL_ENV] = str(journal)
            if kill:
                env[sc.KILL_ENV] = kill
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "--log-format", "json", "run"],
                cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        return proc, stderr, journal

    def kill_run(self, index: int, kind: str, rng: random.Random, playing: bool) -> Run:
        """Start a daemon and have it SIGKILLed: by the test a random time after its
        spawn (`early`) or its `started` log line (`late`), or by the probe at the point
        `kind` names. A statement to die at is drawn from the lengths of earlier writes:
        the longest while the scenario plays, else the shortest (an idle cycle's)."""
        delay = None
        plan = ""
        if kind in ("early", "late"):
            delay = rng.uniform(*(EARLY_DELAY if kind == "early" else LATE_DELAY))
        else:
            seen = [w["statements"] for run in self.runs for w in run.writes()] or [12]
            arg = {"statement": rng.randint(1, max(seen) if playing else min(seen)),
                   "in-commit": rng.randint(0, 3000)}.get(kind, 0)
            write = 1 if kind == "statement" else rng.choice((1, 2))  # the 1st catches up
            plan = f"{kind}:{write}:{arg}"
        proc, stderr, journal = self.spawn(f"run-{index:02d}", probe=True, kill=plan)
        try:
            if kind == "late":
                wait_for_line(proc, stderr, '"event": "started"', SELF_KILL_TIMEOUT)
            if delay is not None:
                time.sleep(delay)
                proc.kill()
            proc.wait(timeout=SELF_KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()  # the probe never fired: the run is reported as not self-killed
            proc.wait(timeout=10)
        lines = journal.read_text().splitlines() if journal.exists() else []
        run = Run(plan or kind, delay, proc.returncode, stderr.read_text(errors="replace"),
                  lines)
        self.runs.append(run)
        return run

    def settle(self, head: int) -> str:
        """Run an unprobed daemon until it has recorded two cycles at `head`, stop it
        with SIGTERM; return its log. Fails if it does not get there or stop cleanly, or
        if the second cycle, seeing what the first saw, changed anything."""
        proc, stderr, _ = self.spawn("settle", probe=False)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        at_head: list[dict[str, Any]] = []
        try:
            while time.monotonic() < deadline:
                at_head = [e for e in log_events(stderr.read_text(errors="replace"))
                           if e.get("event") == "cycle" and e.get("block") == head]
                if len(at_head) >= 2 or proc.poll() is not None:
                    break
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        text = stderr.read_text(errors="replace")
        assert code == 0, text[-3000:]
        assert len(at_head) >= 2, f"no settled cycles at block {head}: {text[-3000:]}"
        assert [at_head[-1][k] for k in ("opened", "cleared", "voided")] == [0, 0, 0], at_head
        return text

    def kill_while_playing(self, play: sc.Scenario) -> None:
        """Play the scenario in a thread while daemons are started and killed by plan."""
        stop = threading.Event()
        player = threading.Thread(target=play.play, args=(STEP_PAUSE, stop), daemon=True)
        player.start()
        rng = random.Random(SEED)
        try:
            for index, kind in enumerate(kill_plan(rng)):
                self.kill_run(index, kind, rng, player.is_alive())
            player.join(timeout=90)
        finally:
            stop.set()
            player.join(timeout=10)
        assert not player.is_alive() and play.error is None, play.error
        assert len(play.played) == len(play.steps())

    def report(self) -> str:
        """Where each kill landed, one line per run."""
        phases = Counter(r.phase for r in self.runs)
        return f"seed {SEED}: {len(self.runs)} kills, " + ", ".join(
            f"{n} in {phase}" for phase, n in sorted(phases.items())) + "\n" + "\n".join(
            f"  {r.kind:<20} delay={r.delay or 0:.2f} rc={r.returncode} {r.phase:<8} "
            f"{r.journal[-1].split(' ', 1)[1] if r.journal else ''}" for r in self.runs)

    def parallel_cli(self, *commands: tuple[str, ...]) -> list[Result]:
        """Run read-only commands at the same time (each is a 1.5 s interpreter start)."""
        results: list[Result | None] = [None] * len(commands)

        def one(i: int) -> None:
            results[i] = self.cli(*commands[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(commands))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]


def kill_plan(rng: random.Random) -> list[str]:
    """The early and late kills in a seeded order, with the targeted ones spread among
    them, every third run from the second on, so that the statement kills come while
    the scenario still plays."""
    timed = ["early"] * EARLY_KILLS + ["late"] * LATE_KILLS
    rng.shuffle(timed)
    targeted = list(TARGETED)
    return [targeted.pop(0) if index % 3 == 1 and targeted else timed.pop()
            for index in range(len(timed) + len(targeted))]


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, text: str,
                  timeout: float) -> None:
    """Return once `text` is in `log`, the process has exited, or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.01)


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a daemon's stderr (a torn last line is skipped)."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def write_config(cwd: Path, store_url: str, rpc_url: str, token: str) -> None:
    """The daemon's configuration, and the `sitecustomize` that loads the probe. The
    health server gets a port of its own; on PostgreSQL a killed replica's chain lease
    lasts one second (default 15), so that its successor takes the chain over at once."""
    (cwd / "segwatch.toml").write_text(f"""
[store]
url = "{store_url}"
[daemon]
listen = "127.0.0.1:{free_port()}"
lease_seconds = {LEASE_SECONDS}
[[chains]]
name = "{sc.CHAIN}"
family = "evm"
chain_id = 31337
confirmations = 0
poll_seconds = {POLL_SECONDS}
full_recheck_seconds = 0  # the script's state edit is expected at the next cycle
sources = [{{ kind = "jsonrpc", url = "{rpc_url}" }}]
tokens = [{{ symbol = "USDC", contract = "{token}", decimals = 6 }}]
[[users]]
name = "carol"
roles = ["checker"]
""")
    (cwd / "probe").mkdir()
    (cwd / "probe" / "sitecustomize.py").write_text(
        "from tests.scenario import install_probe\n\ninstall_probe()\n")


def prepare_store(cwd: Path, store_url: str, cut_off: datetime) -> None:
    """Migrate the store, import the ledger and the approvals, and run one baseline
    cycle, which finds the books balanced and pins the scan cursor before the scenario
    moves anything (in-process: no interpreter start-up)."""
    engine = make_engine(store_url)
    upgrade(engine)
    engine.dispose()
    (cwd / "ledger.csv").write_text(sc.LEDGER_CSV)
    (cwd / "approvals.csv").write_text(sc.approvals_csv(datetime.now(UTC)))
    service = build_service(load_settings(cwd / "segwatch.toml"))
    try:
        service.import_ledger(cwd / "ledger.csv", dry_run=False, actor=FEEDER, as_of=cut_off)
        service.import_withdrawals(cwd / "approvals.csv", dry_run=False, actor=FEEDER)
        (baseline,) = service.run_once()
    finally:
        service.store.engine.dispose()
    assert baseline.error is None and baseline.findings == (), baseline


def finding_key(item: dict[str, Any]) -> sc.Key:
    return item["type"], item["address"], item["asset"], item["tx_hash"]


def finding_value(item: dict[str, Any]) -> int:
    """What the ground truth pins: a transfer's amount, a balance's on-chain amount, an
    unexplained change's difference."""
    kind = item["type"]
    text = item["amount"] if kind in ("unauthorized_outflow", "commingling") else \
        item["difference"] if kind == "unexplained_balance_change" else item["onchain"]
    return int(text)


def audit_problems(store_url: str) -> list[str]:
    """Breaks in the hash-chained audit log (a gap, a fork, a bad hash) and discrepancies
    detected zero or several times."""
    engine = make_engine(store_url)
    try:
        with Session(engine) as session:
            entries = session.exec(select(m.AuditEntry).order_by(col(m.AuditEntry.seq))).all()
            ids = session.exec(select(m.Discrepancy.id)).all()
    finally:
        engine.dispose()
    problems, prev = [], GENESIS
    for seq, e in enumerate(entries, start=1):
        digest = entry_hash(seq, e.at, e.actor, e.action, e.discrepancy_id, e.payload, prev)
        if e.seq != seq or e.prev_hash != prev or e.hash != digest:
            problems.append(f"audit entry {e.seq} breaks the chain at position {seq}")
        prev = e.hash
    detected = Counter(e.discrepancy_id for e in entries if e.action == "detected")
    return problems + [f"discrepancy {i} detected {detected[i]} times" for i in ids
                       if detected[i] != 1]


def stored_cycles(store_url: str) -> Counter[str]:
    """How many checkpoints each cycle id has."""
    engine = make_engine(store_url)
    try:
        with Session(engine) as session:
            return Counter(session.exec(select(m.Checkpoint.cycle_id)).all())
    finally:
        engine.dispose()


def set_up(devnet: AnvilNode, store_url: str, cwd: Path) -> tuple[sc.Scenario, Harness]:
    """Contracts, funded wallets, configuration and a store ready for the daemon."""
    token = deploy_test_token(devnet, "USD Coin", "USDC", 6)
    forwarder = deploy_contract(devnet, "Forwarder")
    install_multicall(devnet)
    play = sc.Scenario(devnet, token, forwarder, SEED)
    play.set_up()
    write_config(cwd, store_url, devnet.url, token)
    # the books are cut at the set-up's last block; the script's blocks come a second
    # later at least (anvil may give blocks the same second), in transit for the books
    head = int(devnet.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    devnet.call("evm_setNextBlockTimestamp", [head + 1])
    prepare_store(cwd, store_url, datetime.fromtimestamp(head, UTC))
    return play, Harness(cwd, store_url)


def expectations(play: sc.Scenario) -> dict[sc.Key, int]:
    """The scenario's ground truth, checked against its design first."""
    balances = play.balance_findings()
    assert {(a, asset): kind for kind, a, asset, _ in balances} == sc.BALANCE_FINDINGS
    assert len(play.expected) == sc.TRANSFER_FINDINGS + 1  # + erin's state edit
    return {**play.expected, **balances}


def check_runs(h: Harness, settle_log: str) -> None:
    """Every run died of SIGKILL, the probe's at the point asked, kills landed in every
    phase, each completed cycle write was one transaction, and nothing crashed."""
    report = h.report()
    assert all(r.returncode == -signal.SIGKILL for r in h.runs), report
    assert all(r.self_killed for r in h.runs if r.kind not in ("early", "late")), report
    assert {r.phase for r in h.runs} >= {"start-up", "read", "write"}, report
    writes = [w for r in h.runs for w in r.writes()]
    assert writes, report
    assert [w for w in writes if (w["commits"], w["connections"]) != (1, 1)] == [], \
        "a cycle write that is not one transaction on one connection"
    logs = "".join(r.stderr for r in h.runs) + settle_log
    assert "Traceback" not in logs and "internal error" not in logs, logs[-3000:]


def check_findings(h: Harness, expected: dict[sc.Key, int], head: int) -> None:
    """The stored findings are the ground truth, each once and open; status agrees."""
    every, still_open, status = h.parallel_cli(
        ("discrepancies", "list", "--json"),
        ("discrepancies", "list", "--json", "--status", "open"), ("status", "--json"))
    report = h.report()
    keys = Counter(finding_key(item) for item in every.json())
    assert [k for k, n in keys.items() if n > 1] == [], report
    assert {item["status"] for item in every.json()} == {"open"}, report
    found = {finding_key(item): finding_value(item) for item in still_open.json()}
    missing = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    unexpected = {k: v for k, v in found.items() if k not in expected}
    assert (missing, unexpected) == ({}, {}), report
    assert status.code == 1 and status.json()["status"] == "discrepancy", status.stdout
    (chain,) = status.json()["chains"]
    assert (chain["scanned_to"], chain["last_error"]) == (head, None), chain
    assert chain["open_findings"] == len(expected), chain


def check_store(h: Harness) -> None:
    """The audit chain is unbroken; every cycle a daemon logged as done is stored, once;
    an SQLite file passes its integrity check."""
    assert audit_problems(h.store_url) == []
    stored = stored_cycles(h.store_url)
    logged = {e["cycle_id"] for r in h.runs for e in log_events(r.stderr)
              if e.get("event") == "cycle"}
    assert logged - set(stored) == set() and max(stored.values()) == 1, h.report()
    if h.store_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(h.store_url.removeprefix("sqlite:///"))) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_sigkill_at_any_point_loses_no_finding_and_duplicates_none(
        devnet: AnvilNode, store_url: str, tmp_path: Path) -> None:
    """Killed 28 times while the scenario plays, then settled, the daemon has stored
    exactly the scenario's findings, each once; the audit chain, the checkpoints of the
    cycles it logged, `status` and the SQLite file are intact."""
    started = time.monotonic()
    play, h = set_up(devnet, store_url, tmp_path)
    h.kill_while_playing(play)
    print(f"{h.report()}\nkill loop done after {time.monotonic() - started:.1f}s")
    head = devnet.block_number()
    expected = expectations(play)
    settle_log = h.settle(head)
    check_runs(h, settle_log)
    check_findings(h, expected, head)
    check_store(h)


def test_first_start_killed_while_migrating_the_store_starts_again(
        devnet: AnvilNode, tmp_path: Path) -> None:
    """`segwatch run` on a fresh SQLite store, SIGKILLed in the middle of the migration it
    runs on first use, migrates and reconciles when started again (the migration is one
    transaction, DDL included: pysqlite alone would commit each CREATE TABLE)."""
    token = deploy_test_token(devnet, "USD Coin", "USDC", 6)
    install_multicall(devnet)
    write_config(tmp_path, f"sqlite:///{tmp_path / 'segwatch.db'}", devnet.url, token)
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'segwatch.db'}")
    # inside the first revision's DDL: its first table is the 6th statement (7th after a
    # BEGIN), its stamp the 26th (27th): DDL not in one transaction leaves tables unstamped
    statement = random.Random(SEED).randint(8, 26)
    proc, _, journal = h.spawn("first", probe=True, kill=f"migration:1:{statement}")
    assert proc.wait(timeout=SELF_KILL_TIMEOUT) == -signal.SIGKILL
    assert f"kill migration {statement}" in journal.read_text()
    again = h.cli("run", "--once", "--json")
    assert again.code == 0, again.stderr
    assert again.json()[0]["error"] is None
