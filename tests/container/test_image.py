"""The Dockerfile, built with podman (no network inside the build, on a debootstrap
stand-in for python:3.11-slim) and run against a real anvil on the host network.

Needs podman, buildah, runc and debootstrap (Debian packages) and root (debootstrap, and
podman's storage). Outside CI a machine without them skips with the reason; with
`CI=true` it fails, and podman is configured here first (tests/container/build.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chains.evm.address import canonical_evm_address
from chains.evm.devnet import AnvilNode, free_port, set_balances, start_anvil
from tests.anvil import require_anvil
from tests.container import build
from tests.realdeps import missing

pytestmark = pytest.mark.anvil

WALLET = canonical_evm_address("0x" + "c0" * 20)
RUN_AS = 10001


@dataclass(frozen=True)
class Built:
    """An image built for this module, the context it came from and the stand-in base."""

    tag: str
    image_id: str
    context: Path
    base: str
    seconds: float


def _usable_podman() -> str:
    """The stand-in base once podman, root and podman's configuration are usable here;
    otherwise skip with the reason (fail under CI)."""
    tools = build.missing_tools()
    if tools:
        missing("podman", f"{', '.join(tools)} not installed: apt-get install -y podman "
                "buildah runc debootstrap")
    if os.geteuid() != 0:
        missing("podman", "the image test runs as root (debootstrap, podman's storage)")
    if os.environ.get("CI", "").lower() == "true":
        build.configure_podman()
    base = build.standin_base()
    try:
        build.podman("run", "--rm", "--network", "none", base, "python3", "-c", "pass")
    except build.BuildError as exc:
        missing("podman", f"cannot run a container: {exc}\nWith CI=true this test writes "
                f"{build.CONTAINERS_CONF}:\n{build.containers_conf()}")
    return base


def _dangling() -> set[str]:
    return set(build.podman("images", "--all", "--quiet", "--no-trunc", "--filter",
                            "dangling=true").split())


@pytest.fixture(scope="module")
def image() -> Iterator[Built]:
    """The image, built from a copy of the working tree plus planted clutter
    (daemon/__pycache__/planted…pyc, chains/planted.db, daemon/planted.db-wal) that the
    .dockerignore must keep out; the dependency stage stays cached (tagged by the wheels'
    key), everything else built here is removed afterwards."""
    base = _usable_podman()
    wheels = build.wheels_dir()
    before = _dangling()
    context = Path(tempfile.mkdtemp(prefix="segwatch-context-"))
    tag = f"localhost/segwatch-test:{uuid.uuid4().hex[:12]}"
    try:
        build.assemble_context(context, wheels)
        for planted in ("daemon/__pycache__/planted.cpython-311.pyc", "chains/planted.db",
                        "daemon/planted.db-wal"):
            (context / planted).parent.mkdir(exist_ok=True)
            (context / planted).write_bytes(b"clutter")
        started = time.monotonic()
        with build.locked("build"):
            deps = f"localhost/segwatch-cache:deps-{wheels.name.removeprefix('wheels-')}"
            build.build(context, base, deps, target="deps")
            for old in build.podman("images", "--format", "{{.Repository}}:{{.Tag}}",
                                    "localhost/segwatch-cache").split():
                if old != deps:
                    subprocess.run(["podman", "rmi", old], capture_output=True, timeout=120,
                                   check=False)
            image_id = build.build(context, base, tag)
        yield Built(tag, image_id, context, base, time.monotonic() - started)
    finally:
        subprocess.run(["podman", "rmi", "--ignore", tag], capture_output=True, timeout=120,
                       check=False)
        for leftover in sorted(_dangling() - before):
            subprocess.run(["podman", "rmi", leftover], capture_output=True, timeout=120,
                           check=False)
        shutil.rmtree(context, ignore_errors=True)


def _layers(ref: str) -> list[str]:
    layers: list[str] = json.loads(build.podman("image", "inspect", "--format",
                                                "{{json .RootFS.Layers}}", ref))
    return layers


def test_the_build_is_offline_ignores_clutter_and_keeps_dependencies_cached(
        image: Built) -> None:
    """The image builds with `--network none` from host-built wheels on the stand-in base,
    in Docker format with its HEALTHCHECK, as user segwatch; none of the planted
    __pycache__/.db clutter reaches the build (`**/` patterns in .dockerignore); and a code
    change rebuilds only the last two layers of the image: the dependency layers are
    reused. Reports the image's size."""
    user, check = build.podman("image", "inspect", "--format",
                               "{{.Config.User}}\n{{json .Config.Healthcheck.Test}}",
                               image.tag).splitlines()
    assert user == "segwatch"
    test = json.loads(check)
    assert test[:2] == ["CMD", "/opt/segwatch/bin/python"]
    assert "SEGWATCH_DAEMON__LISTEN" in test[-1]
    size = int(build.podman("image", "inspect", "--format", "{{.Size}}", image.tag))
    print(f"\nimage {image.tag}: {size / 1e6:.0f} MB on {image.base}, built in "
          f"{image.seconds:.0f} s")
    assert size < 600e6

    app = f"{image.tag}-app"
    changed = f"{image.tag}-changed"
    try:
        build.build(image.context, image.base, app, target="app")
        found = build.podman("run", "--rm", "--network", "none", "--entrypoint", "find", app,
                             "/src", "(", "-name", "planted*", "-o", "-name", "__pycache__",
                             ")")
        assert found == ""
        with (image.context / "daemon" / "__init__.py").open("a") as fh:
            fh.write("# a code change\n")
        build.build(image.context, image.base, changed)
        first, second = _layers(image.tag), _layers(changed)
        assert len(first) == len(second)
        assert first[:-2] == second[:-2]  # base, user, the venv with every dependency
        assert first[-2:] != second[-2:]  # segwatch's wheel and its installation
    finally:
        for ref in (changed, app):
            subprocess.run(["podman", "rmi", "--ignore", ref], capture_output=True,
                           timeout=120, check=False)


def _logs(container: str) -> str:
    """The container's output (segwatch logs JSON lines to stderr)."""
    done = build.run(["podman", "logs", container], 60)
    return (done.stdout + done.stderr).decode(errors="replace")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def chain() -> Iterator[AnvilNode]:
    """An anvil of our own on loopback, mining a block a second (heads stay fresh), where
    WALLET holds 1 ETH."""
    node = start_anvil(require_anvil(), "--block-time", "1")
    try:
        set_balances(node, {WALLET: 10**18})
        yield node
    finally:
        node.stop()


def test_the_image_runs_the_daemon_against_anvil(image: Built, chain: AnvilNode,
                                                  tmp_path: Path) -> None:
    """On the host network with a named volume: the image's CLI bootstraps a feeder and
    imports a ledger claiming 2 ETH where anvil holds 1; `segwatch run` then completes a
    cycle, /healthz answers 200 on the SEGWATCH_DAEMON__LISTEN port (not 9464) and the
    image's HEALTHCHECK passes, the shortfall is an open critical finding, the process runs
    as uid 10001, SIGTERM stops it with exit code 0 within 5 s, and the store (owned by
    uid 10001) is in the volume with the cycle and the finding in it."""
    listen = f"127.0.0.1:{free_port()}"
    (tmp_path / "segwatch.toml").write_text(f"""
[store]
url = "sqlite:////var/lib/segwatch/segwatch.db"
[daemon]
calendar = "none"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = 0
poll_seconds = 1
multicall = ""
sources = [{{ kind = "jsonrpc", name = "anvil", url = "{chain.url}" }}]
""")
    (tmp_path / "ledger.csv").write_text(
        f"chain,address,structure,owner,asset,amount\ndevnet,{WALLET},segregated,alice,ETH,2\n")
    tmp_path.chmod(0o755)
    for name in ("segwatch.toml", "ledger.csv"):
        (tmp_path / name).chmod(0o644)
    name = f"segwatch-test-{uuid.uuid4().hex[:12]}"
    volume = name
    common = ["--network", "host", "-v", f"{volume}:/var/lib/segwatch",
              "-v", f"{tmp_path}:/etc/segwatch:ro", "-e", f"SEGWATCH_DAEMON__LISTEN={listen}"]
    build.podman("volume", "create", volume)
    try:
        build.podman(
            "run", "--rm", *common, "-e", "PW=correct-horse-battery-staple-42",
            "--entrypoint", "/bin/sh", image.tag, "-euc",
            'echo "$PW" | segwatch users add books --role admin --role feeder --password-stdin\n'
            'token=$(echo "$PW" | segwatch tokens create --user books --password-stdin)\n'
            'SEGWATCH_TOKEN="$token" segwatch ledger import /etc/segwatch/ledger.csv',
            timeout=120)
        build.podman("run", "--detach", "--name", name, *common, image.tag)

        seen: list[int] = []
        status, body = 0, b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://{listen}/healthz")
                seen.append(status)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status == 200, (seen[-5:], body, _logs(name))
        assert json.loads(body)["chains"]["devnet"]["status"] == "discrepancy"
        health = subprocess.run(["podman", "healthcheck", "run", name], capture_output=True,
                                timeout=60, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        metrics = _get(f"http://{listen}/metrics")[1].decode()
        assert 'segwatch_open_findings{severity="critical",type="balance_shortfall"} 1.0' \
            in metrics

        pid = build.podman("inspect", "--format", "{{.State.Pid}}", name)
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Uid:")).split()[1:]
        assert uids == [str(RUN_AS)] * 4

        started = time.monotonic()
        build.podman("kill", "--signal", "TERM", name)
        code = build.podman("wait", name, timeout=30)
        stopped_in = time.monotonic() - started
        print(f"\nhealthz statuses until 200: {seen}; SIGTERM to exit {stopped_in:.2f} s")
        assert code == "0", _logs(name)
        assert stopped_in < 5
        events = [json.loads(line).get("event") for line in
                  _logs(name).splitlines() if line.startswith("{")]
        assert "stopping" in events and "stopped" in events

        store = Path(build.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                                  volume)) / "segwatch.db"
        assert store.stat().st_uid == RUN_AS
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            (checkpoints,) = db.execute("SELECT count(*) FROM checkpoint").fetchone()
            findings = db.execute("SELECT type, status FROM discrepancy").fetchall()
        assert checkpoints >= 1
        assert findings == [("balance_shortfall", "open")]
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", name], capture_output=True,
                       timeout=60, check=False)
        subprocess.run(["podman", "volume", "rm", "--force", volume], capture_output=True,
                       timeout=60, check=False)
