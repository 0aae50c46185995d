"""The inbox under SIGKILL: a process importing 12 snapshots from the inbox kills itself
15 times at a random point — before a random SQL statement, before a COMMIT, or before
a file move (into .work/, or to processed/ after the import committed) — and a last one
finishes. Every file ends in processed/ exactly once, every distinct content is one
snapshot, nothing is rejected or left in .work/, and the audit log verifies. SQLite
store (one file, as the daemon's).

Reproduce another interleaving with INBOXCRASH_SEED=N.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from chains.evm.address import canonical_evm_address
from daemon.bootstrap import build_service
from daemon.inputs.config import load_settings
from daemon.runtime.inbox import PROCESSED, REJECTED, WORK
from daemon.store.identity import Identities

FILES = 12
KILLS = 15
ROWS = 200
CHILD = """
import sys
from pathlib import Path
from daemon.bootstrap import build_service
from daemon.inputs.config import load_settings
from daemon.runtime.inbox import Inbox
settings = load_settings(Path(sys.argv[1]))
service = build_service(settings)
inbox = Inbox(Path(settings.ledger.inbox), service, "books")
import os, signal
import daemon.runtime.inbox as module
from sqlalchemy import event
target, count = int(sys.argv[2]), [0]
def tick(*_args, **_kwargs):
    count[0] += 1
    if count[0] == target:
        os.kill(os.getpid(), signal.SIGKILL)
event.listen(service.store.engine, "before_cursor_execute", tick)
event.listen(service.store.engine, "commit", tick)
real_replace = module.os.replace
def replace(source, target_path):
    tick()
    return real_replace(source, target_path)
module.os.replace = replace
for _ in range(200):
    if not inbox.poll():
        break
"""


def test_an_inbox_killed_at_any_moment_imports_each_file_once(tmp_path: Path) -> None:
    """SIGKILL at random moments never loses or doubles a snapshot."""
    rng = random.Random(int(os.environ.get("INBOXCRASH_SEED", "1")))
    inbox = tmp_path / "inbox"
    config = tmp_path / "segwatch.toml"
    config.write_text(f"""
[store]
url = "sqlite:///{tmp_path / 'segwatch.db'}"
[ledger]
inbox = "{inbox}"
[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
sources = [{{ kind = "jsonrpc", url = "http://127.0.0.1:9/" }}]
""")
    service = build_service(load_settings(config))
    service.store.sync_catalog(service.settings)
    Identities(service.store.engine).add_user("books", ["feeder"], None, "local", "test",
                                              datetime.now(UTC))
    inbox.mkdir()
    for n in range(FILES):
        temporary = inbox / f".{n:02d}.tmp"
        temporary.write_text("chain,address,structure,owner,asset,amount\n" + "".join(
            f"ethereum,{canonical_evm_address(f'0x{i + 1:040x}')},segregated,c{i},ETH,"
            f"{n + 1}\n" for i in range(ROWS)))
        temporary.rename(inbox / f"ledger-{n:02d}.csv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    progress = []
    for _ in range(KILLS):
        point = rng.randint(1, 60)  # the SQL statement, COMMIT or file move to die at
        child = subprocess.run([sys.executable, "-c", CHILD, str(config), str(point)],
                               env=env, capture_output=True, timeout=120, check=False)
        assert child.returncode in (0, -signal.SIGKILL), child.stderr[-2000:]
        progress.append(len(list((inbox / PROCESSED).glob("*.csv")))
                        if (inbox / PROCESSED).exists() else 0)
    done = subprocess.run([sys.executable, "-c", CHILD, str(config), "0"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len({p for p in progress if 0 < p < FILES}) >= 3, progress  # kills mid-way
    processed = sorted(p.name for p in (inbox / PROCESSED).iterdir())
    assert processed == [f"ledger-{n:02d}.csv" for n in range(FILES)]
    assert list((inbox / WORK).iterdir()) == [] and list((inbox / REJECTED).iterdir()) == []
    snapshots = service.store.snapshots()
    assert len(snapshots) == FILES == len({s["sha256"] for s in snapshots})
    assert all(s["imported_by"] == "books" for s in snapshots)
    assert service.store.verify_audit().ok
