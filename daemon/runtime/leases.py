"""Scale-out on PostgreSQL: replicas share the chains, or the wallet shards of chains
split into `shards` (daemon/rules/shards.py), through lease rows with expiry. Below, "chain"
is a unit of work: a chain's name, or a shard's key.

Every replica, each `period / 3` seconds (`tick`):

1. says it is alive (`replica.seen_at`), and counts the replicas seen within a period;
2. renews the leases it holds, and lets go of those above its fair share
   (⌈chains / live replicas⌉) so that a replica that joins gets work;
3. takes free or expired chain leases up to its share.

A replica only runs the cycles of chains it holds, and every cycle's transaction first
locks its lease row and checks it still holds it (`fence`): a replica that lost its
lease (paused, partitioned) cannot commit over the new holder. A replica that dies
stops renewing; its leases expire after one period and are taken at the others' next
tick, so its chains move within two lease periods. Times are the database's
(`timezone('utc', now())`), never the replicas' clocks.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import uuid
from collections.abc import Sequence

import structlog
from sqlalchemy import Engine, text
from sqlmodel import Session

from chains.errors import SegwatchError

log = structlog.get_logger("segwatch")

NOW = "timezone('utc', now())"


class LeaseLost(SegwatchError):
    """This replica no longer holds the lease of the chain it was writing."""


def replica_id() -> str:
    """A name for this process: host, pid and a random suffix."""
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def lease_name(chain: str) -> str:
    return f"chain:{chain}"


class Leases:
    """This replica's chain leases on one PostgreSQL store."""

    def __init__(self, engine: Engine, chains: Sequence[str], period: float,
                 me: str | None = None) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("leases need PostgreSQL")
        self.engine = engine
        self.chains = list(chains)
        self.period = period
        self.me = me or replica_id()
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def holds(self, chain: str) -> bool:
        """True when the last tick left this replica holding `chain`."""
        with self._lock:
            return chain in self._held

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def tick(self) -> set[str]:
        """Heartbeat, renew, rebalance, acquire; return the chains now held."""
        ttl = f"interval '{self.period:.3f} seconds'"
        with self.engine.begin() as db:
            db.execute(text(f"INSERT INTO replica (id, seen_at) VALUES (:me, {NOW}) "
                            f"ON CONFLICT (id) DO UPDATE SET seen_at = {NOW}"), {"me": self.me})
            db.execute(text(f"DELETE FROM replica WHERE seen_at < {NOW} - 10 * {ttl}"))
            live = db.execute(text(f"SELECT count(*) FROM replica WHERE seen_at >= {NOW} - {ttl}"
                                   )).scalar_one()
            share = math.ceil(len(self.chains) / max(1, int(live)))
            mine = [row[0] for row in db.execute(text(
                f"UPDATE lease SET expires_at = {NOW} + {ttl} WHERE holder = :me "
                "RETURNING name"), {"me": self.me})]
            mine.sort()
            for name in mine[share:]:  # above the fair share: let another replica take it
                db.execute(text(f"UPDATE lease SET expires_at = {NOW} WHERE name = :n "
                                "AND holder = :me"), {"n": name, "me": self.me})
            held = set(mine[:share])
            for chain in self.chains:
                name = lease_name(chain)
                if len(held) >= share or name in held:
                    continue
                db.execute(text(f"INSERT INTO lease (name, holder, expires_at) "
                                f"VALUES (:n, '', {NOW}) ON CONFLICT (name) DO NOTHING"),
                           {"n": name})
                taken = db.execute(text(
                    f"UPDATE lease SET holder = :me, expires_at = {NOW} + {ttl} "
                    f"WHERE name = :n AND (expires_at <= {NOW} OR holder = :me) RETURNING name"),
                    {"n": name, "me": self.me}).first()
                if taken:
                    held.add(name)
        chains = {c for c in self.chains if lease_name(c) in held}
        with self._lock:
            gained, lost = chains - self._held, self._held - chains
            self._held = chains
        if gained or lost:
            log.info("leases", replica=self.me, held=sorted(chains), gained=sorted(gained),
                     lost=sorted(lost), replicas=int(live))
        return chains

    def fence(self, session: Session, chain: str) -> None:
        """Lock the chain's lease row for the cycle's transaction; raise LeaseLost when this
        replica does not hold it (unexpired)."""
        row = session.execute(text(
            f"SELECT holder, expires_at > {NOW} FROM lease WHERE name = :n FOR UPDATE"),
            {"n": lease_name(chain)}).first()
        if row is None or row[0] != self.me or not row[1]:
            with self._lock:
                self._held.discard(chain)
            raise LeaseLost(f"replica {self.me} no longer holds chain {chain}")

    def release_all(self) -> None:
        """Give up every lease at once (a clean stop), so others take over quickly."""
        with self.engine.begin() as db:
            db.execute(text(f"UPDATE lease SET expires_at = {NOW} WHERE holder = :me"),
                       {"me": self.me})
            db.execute(text("DELETE FROM replica WHERE id = :me"), {"me": self.me})
        with self._lock:
            self._held.clear()
