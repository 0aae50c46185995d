"""Scale-out as operators run it: three `segwatch run` replicas on one PostgreSQL store
share three units of work, one each: the chain `alpha` and the two wallet shards of the
chain `beta` (`shards = 2`). One replica killed with SIGKILL has its unit taken over
within two lease periods, and that unit keeps being reconciled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from chains.evm.devnet import AnvilNode, free_port, install_multicall
from tests.e2e.cli import feeder_env
from tests.realdeps import postgres_schema

pytestmark = pytest.mark.anvil
LEASE = 2.0
ALICE = "0x1000000000000000000000000000000000000001"
BOB = "0x1000000000000000000000000000000000000005"  # in beta shard 0, ALICE in shard 1
CHAINS = {"alpha": 1, "beta": 2}
"""Chain -> wallet shards."""
UNITS = ("alpha", "beta/0-of-2", "beta/1-of-2")


def config(url: str, rpc: str) -> str:
    chains = "".join(f"""
[[chains]]
name = "{name}"
family = "evm"
chain_id = 31337
confirmations = 0
poll_seconds = 0.3
shards = {count}
sources = [{{ kind = "jsonrpc", url = "{rpc}" }}]
""" for name, count in CHAINS.items())
    return f'[store]\nurl = "{url}"\n[daemon]\nlease_seconds = {LEASE}\n{chains}'


def holders(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            rows = db.execute(text("SELECT name, holder FROM lease "
                                   "WHERE expires_at > timezone('utc', now())")).all()
    finally:
        engine.dispose()
    return {name.removeprefix("chain:"): holder for name, holder in rows}


def checkpoints(url: str, unit: str) -> int:
    """Checkpoints written for a chain (`alpha`) or one of its shards (`beta/1-of-2`)."""
    chain, _, shard = unit.partition("/")
    index, count = (int(shard.split("-of-")[0]), int(shard.split("-of-")[1])) if shard \
        else (0, 1)
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return int(db.execute(text(
                "SELECT count(*) FROM checkpoint JOIN chain ON chain.id = checkpoint.chain_id "
                "WHERE chain.name = :c AND shard = :i AND shards = :n"),
                {"c": chain, "i": index, "n": count}).scalar_one())
    finally:
        engine.dispose()


def test_replicas_share_chains_and_take_over_a_killed_ones(anvil_node: AnvilNode,
                                                           tmp_path: Path) -> None:
    install_multicall(anvil_node)
    with postgres_schema() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
        ledger = tmp_path / "ledger.csv"
        ledger.write_text("chain,address,structure,owner,asset,amount\n" + "".join(
            f"{c},{w},segregated,{o},ETH,0\n" for c in CHAINS
            for w, o in ((ALICE, "alice"), (BOB, "bob"))))
        processes = []
        for n in range(3):
            cfg = tmp_path / f"r{n}.toml"
            cfg.write_text(config(url, anvil_node.url).replace(
                "[daemon]\n", f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\n'))
            if n == 0:
                feeder = {**env, **feeder_env(tmp_path, cfg.name)}
                for args in (["db", "upgrade"], ["ledger", "import", str(ledger)]):
                    subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(cfg),
                                    *args], cwd=tmp_path, env=feeder, check=True,
                                   capture_output=True, timeout=120)
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "--config", str(cfg), "run"],
                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True))
        try:
            deadline = time.monotonic() + 40
            held: dict[str, str] = {}
            while time.monotonic() < deadline:
                held = holders(url)
                if set(held) == set(UNITS) and len(set(held.values())) == 3:
                    break
                time.sleep(0.2)
            assert set(held) == set(UNITS) and len(set(held.values())) == 3, held
            time.sleep(1.0)
            assert all(checkpoints(url, unit) > 0 for unit in UNITS)
            victim = processes[0]
            (orphan,) = [c for c, h in held.items() if f"-{victim.pid}-" in h]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            killed = time.monotonic()
            while time.monotonic() - killed < 3 * LEASE:
                now = holders(url)
                if orphan in now and f"-{victim.pid}-" not in now[orphan]:
                    break
                time.sleep(0.1)
            took = time.monotonic() - killed
            now = holders(url)
            assert orphan in now and f"-{victim.pid}-" not in now[orphan], now
            assert took <= 2 * LEASE, f"takeover took {took:.1f} s"
            before = checkpoints(url, orphan)
            time.sleep(1.5)
            assert checkpoints(url, orphan) > before  # reconciled again by its new holder
        finally:
            for p in processes:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in processes:
                try:
                    p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        assert all(p.returncode == 0 for p in processes[1:]), [p.stderr for p in processes]
