"""Scale-out on a real PostgreSQL: chain leases shared fairly between replicas, taken
over within two lease periods when a replica dies, and fenced so that a replica that
lost a chain cannot commit its cycle."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlmodel import Session

from daemon.runtime.leases import LeaseLost, Leases
from daemon.store.db import make_engine, upgrade
from tests.realdeps import postgres_schema

CHAINS = ["alpha", "beta", "gamma"]
PERIOD = 1.5


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        upgrade(make_engine(url))
        yield url


def replicas(url: str, n: int) -> list[Leases]:
    engine = make_engine(url)
    return [Leases(engine, CHAINS, PERIOD, me=f"replica-{i}") for i in range(n)]


def test_three_replicas_share_three_chains_one_each(pg_url: str) -> None:
    """After every replica has ticked twice (the second tick sees all three alive), each
    holds exactly one chain and together they hold all."""
    reps = replicas(pg_url, 3)
    for _ in range(2):
        for r in reps:
            r.tick()
    for r in reps:  # the first to tick took everything; it gives back above its share
        r.tick()
    held = [r.held() for r in reps]
    assert sorted(len(h) for h in held) == [1, 1, 1]
    assert set().union(*held) == set(CHAINS)


def test_a_dead_replicas_chains_are_taken_within_two_lease_periods(pg_url: str) -> None:
    """When one replica stops renewing, its chain is held by a live replica again within
    two lease periods of its death, ticking every third of a period."""
    reps = replicas(pg_url, 3)
    for _ in range(3):
        for r in reps:
            r.tick()
    dead, alive = reps[0], reps[1:]
    orphan = dead.held()
    died = time.monotonic()
    while time.monotonic() - died < 2 * PERIOD:
        for r in alive:
            r.tick()
        if orphan <= set().union(*(r.held() for r in alive)):
            break
        time.sleep(PERIOD / 3)
    took = time.monotonic() - died
    assert orphan <= set().union(*(r.held() for r in alive)), "not taken over"
    assert took < 2 * PERIOD
    assert set().union(*(r.held() for r in alive)) == set(CHAINS)


def test_a_replica_that_lost_its_lease_cannot_commit(pg_url: str) -> None:
    """The fence passes for the holder and raises LeaseLost for anyone else, including a
    former holder whose lease expired and was taken."""
    first, second = replicas(pg_url, 2)
    first.tick()
    assert first.held() == set(CHAINS)  # alone: everything
    with Session(first.engine) as session:
        first.fence(session, "alpha")
        with pytest.raises(LeaseLost):
            second.fence(session, "alpha")
    time.sleep(PERIOD + 0.2)  # first stops renewing: its leases expire
    second.tick()
    assert "alpha" in second.held()
    with Session(first.engine) as session, pytest.raises(LeaseLost):
        first.fence(session, "alpha")
    assert not first.holds("alpha")


def test_a_clean_stop_hands_the_chains_over_at_once(pg_url: str) -> None:
    """release_all() gives the leases up immediately: the other replica takes them at its
    next tick, without waiting for expiry."""
    first, second = replicas(pg_url, 2)
    first.tick()
    second.tick()
    first.release_all()
    second.tick()
    assert second.held() == set(CHAINS)
