"""A seeded on-chain scenario with its ground truth, and a probe for killed daemons.

`Scenario` sets up client and house wallets on an anvil node, then plays a seeded,
shuffled script of transactions (unauthorized outflows, commingling, an approved and a
replayed withdrawal, a state edit, deposits and noise) and records what segwatch must
find: every transfer finding by its transaction, the one unexplained balance change,
and — once the script is over — the balance findings the final balances imply. The
books are cut before the script plays, so every deposit, internal move and approved
withdrawal is a reconciling item (SPEC §8) that explains itself; what no item explains
(outflows and commingling no approval covers, the state edit) moves every client
(wallet, asset) in one direction only, so a balance finding, once opened, never clears:
each expected finding exists exactly once, ever.

`install_probe` runs inside a daemon process (a `sitecustomize` the crash test writes
imports it): it journals each cycle's write transaction, line by line, so the test can
tell where a SIGKILL landed, and on request SIGKILLs the process itself at a chosen
point of that transaction.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chains.evm.devnet import AnvilNode, call_data, impersonate, mint, set_balances

ETH = 10**18
USDC = 10**6
CHAIN = "devnet"

ALICE = "0x1000000000000000000000000000000000000001"
ALICE2 = "0x1000000000000000000000000000000000000011"
BOB = "0x1000000000000000000000000000000000000002"
OMNI = "0x1000000000000000000000000000000000000003"
ERIN = "0x1000000000000000000000000000000000000004"
FRANK = "0x1000000000000000000000000000000000000005"
HOUSE = "0x1000000000000000000000000000000000000009"
PAYEE = "0x20000000000000000000000000000000000000AA"
OUTSIDE = ("0x2000000000000000000000000000000000000001",
           "0x2000000000000000000000000000000000000002",
           "0x2000000000000000000000000000000000000003")

LEDGER_CSV = f"""chain,address,structure,owner,asset,amount
{CHAIN},{ALICE},segregated,alice,ETH,10
{CHAIN},{ALICE},segregated,alice,USDC,1000
{CHAIN},{ALICE2},segregated,alice,ETH,0
{CHAIN},{BOB},segregated,bob,ETH,5
{CHAIN},{BOB},segregated,bob,USDC,500
{CHAIN},{OMNI},omnibus,carol,ETH,4
{CHAIN},{OMNI},omnibus,dave,ETH,3
{CHAIN},{OMNI},omnibus,carol,USDC,60
{CHAIN},{OMNI},omnibus,dave,USDC,40
{CHAIN},{ERIN},segregated,erin,ETH,3
{CHAIN},{FRANK},segregated,frank,ETH,2
{CHAIN},{FRANK},segregated,frank,USDC,100
{CHAIN},{HOUSE},house,FIRM,ETH,100
{CHAIN},{HOUSE},house,FIRM,USDC,10000
"""
LEDGER: dict[tuple[str, str], int] = {
    (ALICE, "ETH"): 10 * ETH, (ALICE, "USDC"): 1000 * USDC, (ALICE2, "ETH"): 0,
    (BOB, "ETH"): 5 * ETH, (BOB, "USDC"): 500 * USDC, (OMNI, "ETH"): 7 * ETH,
    (OMNI, "USDC"): 100 * USDC, (ERIN, "ETH"): 3 * ETH, (FRANK, "ETH"): 2 * ETH,
    (FRANK, "USDC"): 100 * USDC,
}
"""Client (wallet, asset) → allocation total; the chain starts with exactly these."""

BALANCE_FINDINGS: dict[tuple[str, str], str] = {
    (ALICE, "ETH"): "balance_shortfall", (ALICE, "USDC"): "balance_shortfall",
    (BOB, "ETH"): "balance_shortfall",
    (BOB, "USDC"): "balance_shortfall", (OMNI, "ETH"): "balance_surplus",
    (OMNI, "USDC"): "balance_surplus", (ERIN, "ETH"): "balance_shortfall",
}
"""The balance finding each client (wallet, asset) ends with: the script only ever moves
its unexplained difference the one way (frank's wallet is never touched; alice2 only
receives internal moves, which are reconciling items)."""
TRANSFER_FINDINGS = 14
"""Outflows and commingling moves the script makes that no approval covers."""

APPROVED_ETH = ETH // 2
APPROVED_USDC = 25 * USDC
ERIN_AFTER_EDIT = 5 * ETH // 2


def approvals_csv(now: datetime) -> str:
    """Two approved withdrawals from alice's wallet to the payee (ETH and USDC)."""
    at = (now - timedelta(minutes=5)).astimezone(UTC).isoformat()
    return ("id,chain,from_address,to_address,asset,amount,approved_by,approved_at\n"
            f"w-eth,{CHAIN},{ALICE},{PAYEE},ETH,0.5,carol,{at}\n"
            f"w-usdc,{CHAIN},{ALICE},{PAYEE},USDC,25,carol,{at}\n")


Key = tuple[str, str, str, str | None]
"""A finding's identity in the ground truth: (type, address, asset, tx_hash)."""


@dataclass
class Scenario:
    """The script, the node it plays on, and what it expects segwatch to find."""

    node: AnvilNode
    token: str
    forwarder: str
    seed: int
    expected: dict[Key, int] = field(default_factory=dict)
    """Transfer findings → amount; the unexplained balance change → its difference."""
    played: list[str] = field(default_factory=list)
    explained: dict[tuple[str, str], int] = field(default_factory=dict)
    """Client (wallet, asset) → the net of the reconciling items played: deposits,
    internal moves, approved withdrawals. Their fees are left out: they only ever lower
    alice's ETH, which ends short by the unauthorized outflows either way."""
    error: BaseException | None = None
    _approved_eth_used: bool = False

    def set_up(self) -> None:
        """Fund the wallets to exactly their ledger totals (the house gets its own)."""
        for wallet in (ALICE, BOB, HOUSE):
            impersonate(self.node, wallet)
        set_balances(self.node, {a: amount for (a, asset), amount in LEDGER.items()
                                 if asset == "ETH"} | {HOUSE: 100 * ETH})
        for (wallet, asset), amount in LEDGER.items():
            if asset == "USDC":
                mint(self.node, self.token, wallet, amount)
        mint(self.node, self.token, HOUSE, 10_000 * USDC)

    def steps(self) -> list[Callable[[random.Random], None]]:
        """The script: every step once (some twice), in a seeded order."""
        script: list[Callable[[random.Random], None]] = [
            *[self._unauthorized_eth] * 4, *[self._unauthorized_usdc] * 2,
            self._approved_eth, self._approved_eth, self._approved_usdc,
            self._unapproved_amount, *[self._internal] * 2, *[self._client_to_house] * 2,
            *[self._client_to_other_owner] * 2, *[self._house_to_client] * 2,
            *[self._house_pays_out] * 2, *[self._house_deposit] * 2,
            *[self._token_deposit] * 2, self._eth_deposit, self._internal_deposit,
            *[self._noise] * 3, *[self._empty_blocks] * 3, self._state_edit,
        ]
        random.Random(self.seed).shuffle(script)
        return script

    def play(self, pause: tuple[float, float], stop: threading.Event) -> None:
        """Run the script, pausing a seeded random time between steps; stop early on
        `stop`. An exception ends the script and is kept in `error`."""
        rng = random.Random(self.seed + 1)
        try:
            for step in self.steps():
                if stop.wait(rng.uniform(*pause)):
                    return
                step(rng)
                self.played.append(step.__name__)
        except BaseException as exc:
            self.error = exc

    def balance_findings(self) -> dict[Key, int]:
        """The balance findings the current chain state implies → their on-chain amount."""
        found: dict[Key, int] = {}
        for (wallet, asset), ledger in LEDGER.items():
            onchain = self.balance(wallet, asset)
            expected = ledger + self.explained.get((wallet, asset), 0)
            if onchain != expected:
                kind = "balance_shortfall" if onchain < expected else "balance_surplus"
                found[(kind, wallet, asset, None)] = onchain
        return found

    def balance(self, wallet: str, asset: str) -> int:
        """The latest on-chain balance of `wallet` in `asset` (ETH or USDC)."""
        if asset == "ETH":
            return int(self.node.call("eth_getBalance", [wallet, "latest"]), 16)
        data = call_data("balanceOf(address)", ["address"], [wallet])
        return int(self.node.call("eth_call", [{"to": self.token, "data": "0x" + data.hex()},
                                               "latest"]), 16)

    # --- steps ------------------------------------------------------------------------
    def _send(self, sender: str, to: str, wei: int) -> str:
        return str(self.node.transact(to, value=wei, sender=sender)["transactionHash"])

    def _send_usdc(self, sender: str, to: str, amount: int) -> str:
        data = call_data("transfer(address,uint256)", ["address", "uint256"], [to, amount])
        return str(self.node.transact(self.token, data, sender=sender)["transactionHash"])

    def _explain(self, wallet: str, asset: str, delta: int) -> None:
        self.explained[(wallet, asset)] = self.explained.get((wallet, asset), 0) + delta

    def _expect(self, kind: str, wallet: str, asset: str, tx_hash: str, amount: int) -> None:
        self.expected[(kind, wallet, asset, tx_hash)] = amount

    def _unauthorized_eth(self, rng: random.Random) -> None:
        amount = rng.randint(1, 200) * ETH // 1000
        self._expect("unauthorized_outflow", ALICE, "ETH",
                     self._send(ALICE, rng.choice(OUTSIDE), amount), amount)

    def _unauthorized_usdc(self, rng: random.Random) -> None:
        amount = rng.randint(1, 20_000_000)
        self._expect("unauthorized_outflow", ALICE, "USDC",
                     self._send_usdc(ALICE, rng.choice(OUTSIDE), amount), amount)

    def _approved_eth(self, rng: random.Random) -> None:
        """The first payment uses the approval; the replay of it is unauthorized."""
        tx_hash = self._send(ALICE, PAYEE, APPROVED_ETH)
        if self._approved_eth_used:
            self._expect("unauthorized_outflow", ALICE, "ETH", tx_hash, APPROVED_ETH)
        else:
            self._explain(ALICE, "ETH", -APPROVED_ETH)
        self._approved_eth_used = True

    def _approved_usdc(self, rng: random.Random) -> None:
        self._send_usdc(ALICE, PAYEE, APPROVED_USDC)
        self._explain(ALICE, "USDC", -APPROVED_USDC)

    def _unapproved_amount(self, rng: random.Random) -> None:
        amount = APPROVED_USDC + USDC  # the approved destination, not the approved amount
        self._expect("unauthorized_outflow", ALICE, "USDC",
                     self._send_usdc(ALICE, PAYEE, amount), amount)

    def _internal(self, rng: random.Random) -> None:
        amount = rng.randint(1, 100) * ETH // 1000
        self._send(ALICE, ALICE2, amount)  # same owner: no finding
        self._explain(ALICE, "ETH", -amount)
        self._explain(ALICE2, "ETH", amount)

    def _client_to_house(self, rng: random.Random) -> None:
        amount = rng.randint(1, 10_000_000)
        self._expect("commingling", BOB, "USDC", self._send_usdc(BOB, HOUSE, amount), amount)

    def _client_to_other_owner(self, rng: random.Random) -> None:
        amount = rng.randint(1, 100) * ETH // 1000
        self._expect("commingling", BOB, "ETH", self._send(BOB, OMNI, amount), amount)

    def _house_to_client(self, rng: random.Random) -> None:
        amount = rng.randint(1, 10_000_000)
        self._expect("commingling", OMNI, "USDC", self._send_usdc(HOUSE, OMNI, amount), amount)

    def _house_pays_out(self, rng: random.Random) -> None:
        self._send(HOUSE, rng.choice(OUTSIDE), rng.randint(1, 100) * ETH // 1000)

    def _house_deposit(self, rng: random.Random) -> None:
        self.node.transact(HOUSE, value=rng.randint(1, 100) * ETH // 1000)

    def _token_deposit(self, rng: random.Random) -> None:
        amount = rng.randint(1, 10_000_000)
        mint(self.node, self.token, OMNI, amount)
        self._explain(OMNI, "USDC", amount)

    def _eth_deposit(self, rng: random.Random) -> None:
        amount = rng.randint(1, 100) * ETH // 1000
        self.node.transact(OMNI, value=amount)
        self._explain(OMNI, "ETH", amount)

    def _internal_deposit(self, rng: random.Random) -> None:
        amount = rng.randint(1, 100) * ETH // 1000
        data = call_data("forward(address)", ["address"], [OMNI])
        self.node.transact(self.forwarder, data, value=amount)
        self._explain(OMNI, "ETH", amount)

    def _noise(self, rng: random.Random) -> None:
        self.node.transact(rng.choice(OUTSIDE), value=rng.randint(1, 100))
        mint(self.node, self.token, rng.choice(OUTSIDE), rng.randint(1, 100))

    def _empty_blocks(self, rng: random.Random) -> None:
        self.node.mine(rng.randint(1, 3))

    def _state_edit(self, rng: random.Random) -> None:
        """Funds leave erin's wallet with no transaction: a shortfall that balance
        continuity alone can explain (once)."""
        set_balances(self.node, {ERIN: ERIN_AFTER_EDIT})
        self.expected[("unexplained_balance_change", ERIN, "ETH", None)] = \
            ERIN_AFTER_EDIT - LEDGER[(ERIN, "ETH")]


# --- the probe, loaded by the daemon under test ---------------------------------------
JOURNAL_ENV = "CRASHTEST_JOURNAL"
KILL_ENV = "CRASHTEST_KILL"
"""`POINT:WRITE:ARG`: SIGKILL the process at POINT of its WRITE-th cycle write:
`statement` (before the write's ARG-th SQL statement, or before COMMIT when it has
fewer), `commit` (before COMMIT is sent), `in-commit` (a timer fires ARG microseconds
after COMMIT starts, racing it), `after-commit` (the write has returned); or
`migration` (before the ARG-th SQL statement of a schema upgrade; WRITE is ignored)."""
KILL_POINTS = ("statement", "commit", "in-commit", "after-commit")


def install_probe() -> None:
    """Journal every cycle write and schema upgrade of this process to
    $CRASHTEST_JOURNAL and, with $CRASHTEST_KILL, SIGKILL the process at the point it
    names. No-op without a journal."""
    path = os.environ.get(JOURNAL_ENV)
    if not path:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import daemon.store.db
    from daemon.store.repository import Store

    point, nth, arg = _kill_plan(os.environ.get(KILL_ENV, ""))
    journal = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    local = threading.local()
    writes = itertools.count(1)
    record_cycle, upgrade = Store.record_cycle, daemon.store.db.upgrade

    def note(line: str) -> None:
        journal.write(f"{time.time():.6f} {line}\n")

    def die(why: str) -> None:
        note(f"kill {why}")
        os.kill(os.getpid(), signal.SIGKILL)

    def watched(scope: str, armed: bool, call: Callable[[], Any]) -> tuple[Any, str]:
        """Call `call` counting its SQL statements, COMMITs and connections."""
        local.scope, local.armed = scope, armed
        local.statements, local.commits, local.connections = 0, 0, set()
        try:
            result = call()
        finally:
            local.scope = None
        return result, (f"statements={local.statements} commits={local.commits} "
                        f"connections={len(local.connections)}")

    def probed_write(self: Store, *args: Any, **kwargs: Any) -> Any:
        write = next(writes)
        note(f"write-begin {write}")
        result, counts = watched("write", write == nth,
                                 lambda: record_cycle(self, *args, **kwargs))
        note(f"write-end {write} {counts}")
        if write == nth and point == "after-commit":
            die("after-commit")
        return result

    def probed_upgrade(*args: Any, **kwargs: Any) -> Any:
        note("migration-begin")
        result, counts = watched("migration", point == "migration",
                                 lambda: upgrade(*args, **kwargs))
        note(f"migration-end {counts}")
        return result

    def before_statement(connection: Any, *_: Any) -> None:
        if getattr(local, "scope", None) is None:
            return
        local.statements += 1
        local.connections.add(id(connection))
        if local.armed and point in ("statement", "migration") and local.statements == arg:
            die(f"{point} {arg}")

    def on_commit(_connection: Any) -> None:
        if getattr(local, "scope", None) != "write":
            return
        local.commits += 1
        note("commit")
        if local.armed and point == "commit":
            die("commit")
        if local.armed and point == "statement":  # a write shorter than asked
            die(f"commit (statement {arg} of {local.statements})")
        if local.armed and point == "in-commit":
            note(f"kill in-commit +{arg}us")
            threading.Timer(arg / 1e6, os.kill, (os.getpid(), signal.SIGKILL)).start()

    Store.record_cycle = probed_write  # type: ignore[method-assign]
    daemon.store.db.upgrade = probed_upgrade
    event.listen(Engine, "before_cursor_execute", before_statement)
    event.listen(Engine, "commit", on_commit)
    note("probe-installed")


def _kill_plan(text: str) -> tuple[str, int, int]:
    if not text:
        return "", 0, 0
    point, nth, arg = text.split(":")
    if point not in (*KILL_POINTS, "migration"):
        raise ValueError(f"{KILL_ENV}: unknown kill point {point!r}")
    return point, int(nth), int(arg)
