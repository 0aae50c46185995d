"""Build segwatch's container image with podman, without network inside the build.

    python3 -m tests.container.build wheels   # ./wheels for `docker build .` (pip, PyPI)
    python3 -m tests.container.build image    # + a debootstrap stand-in base, the image

The dependency wheels are built on the host (`pip wheel --require-hashes -r
requirements.lock`, setuptools from requirements-build.lock) and cached
under a directory keyed by a hash of what decides them; the stand-in base (Debian 12's
python3 and python3-venv, made with debootstrap from the apt mirror) is cached as a
podman image tagged by a hash of its recipe. Only the standard library is used here, so
this runs before segwatch is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SEGWATCH_CONTAINER_CACHE", REPO / ".tools" / "container"))
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
BASE_REPO = "localhost/segwatch-standin-base"
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
CONTEXT_DIRS = ("chains", "daemon")
DEBOOTSTRAP_TIMEOUT = 420.0
PIP_TIMEOUT = 300.0
BUILD_TIMEOUT = 420.0


class BuildError(RuntimeError):
    """A step of the image build failed; the message carries the step's output tail."""


def run(args: Sequence[str], timeout: float, stdin: bytes | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `args` to completion within `timeout` seconds. Raises BuildError on failure."""
    try:
        done = subprocess.run(list(args), input=stdin, capture_output=True, timeout=timeout,
                              cwd=cwd, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{args[0]} {args[1] if len(args) > 1 else ''}: no result within "
                         f"{timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
        raise BuildError(f"{' '.join(args[:3])} … exited {done.returncode}:\n{tail}")
    return done


def podman(*args: str, timeout: float = 60.0, stdin: bytes | None = None) -> str:
    """podman's standard output for `args`. Raises BuildError on failure."""
    return run(["podman", *args], timeout, stdin).stdout.decode().strip()


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock on CACHE/name.lock (pytest-xdist workers share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# --- the machine: tools and podman's configuration ----------------------------------------

def missing_tools() -> list[str]:
    """The programs the image build needs that are not on PATH."""
    return [tool for tool in ("podman", "buildah", "runc", "debootstrap")
            if shutil.which(tool) is None]


def containers_conf() -> str:
    """podman's configuration for this kind of machine: runc (Debian's podman defaults to
    crun, not installed), and open-file and process limits within this process's hard
    limits (podman's defaults exceed them, and runc may not raise a hard limit)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 8192)
    return ("# segwatch (tests/container/build.py): podman for the container test\n"
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n')


def configure_podman() -> None:
    """Write /etc/containers/containers.conf unless it already names a runtime and
    default ulimits. Raises BuildError when an existing file lacks them."""
    if CONTAINERS_CONF.exists():
        text = CONTAINERS_CONF.read_text()
        if re.search(r"(?m)^\s*runtime\s*=", text) and re.search(
                r"(?m)^\s*default_ulimits\s*=", text):
            return
        raise BuildError(f"{CONTAINERS_CONF} exists without `runtime` and `default_ulimits`;"
                         f" add these lines:\n{containers_conf()}")
    CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
    CONTAINERS_CONF.write_text(containers_conf())


# --- inputs: the wheels and the stand-in base ----------------------------------------------

def wheels_dir() -> Path:
    """The cached directory of dependency wheels (and build/ for setuptools), built with
    this interpreter's pip from the hashed lock files (requirements.lock,
    requirements-build.lock: every file checked against its hash) when its key is new."""
    locks = [REPO / "requirements.lock", REPO / "requirements-build.lock"]
    key = _digest(*(lock.read_text() for lock in locks), sys.implementation.cache_tag,
                  os.uname().machine)
    final = CACHE / f"wheels-{key}"
    with locked("wheels"):
        if (final / ".complete").exists():
            return final
        work = Path(tempfile.mkdtemp(prefix="wheels-", dir=CACHE))
        try:
            pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--require-hashes",
                   "--no-deps"]
            run([*pip, "--wheel-dir", str(work / "out"), "-r", str(locks[0])], PIP_TIMEOUT)
            run([*pip, "--wheel-dir", str(work / "out" / "build"), "-r", str(locks[1])],
                PIP_TIMEOUT)
            (work / "out" / ".complete").write_text("")
            shutil.rmtree(final, ignore_errors=True)
            (work / "out").rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (debootstrap fetches from it)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        if not source.is_file():
            continue
        for url in re.findall(r"(?m)^(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(\S+)", source.read_text()):
            if url.rstrip("/").endswith("/debian"):
                return str(url)
    return "http://deb.debian.org/debian"


def standin_base() -> str:
    """A local stand-in for python:3.11-slim: Debian 12 (debootstrap minbase) with python3
    and python3-venv, imported into podman as BASE_REPO:<hash of the recipe>; made once."""
    tag = f"{BASE_REPO}:{_digest(BASE_SUITE, BASE_PACKAGES, BASE_CHANGES, 'minbase', 1)}"
    with locked("base"):
        if subprocess.run(["podman", "image", "exists", tag], timeout=60,
                          check=False).returncode == 0:
            return tag
        work = Path(tempfile.mkdtemp(prefix="base-", dir=CACHE))
        try:
            rootfs = work / "rootfs"
            run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                 BASE_SUITE, str(rootfs), apt_mirror()], DEBOOTSTRAP_TIMEOUT)
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            tar = run(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], 120).stdout
            changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
            podman("import", *changes, "-", tag, timeout=180, stdin=tar)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return tag


# --- the build context and the build ------------------------------------------------------

def assemble_context(dest: Path, wheels: Path) -> None:
    """Copy the working tree's Dockerfile, metadata and packages (clutter included: the
    .dockerignore is what keeps it out) and the wheels into `dest`."""
    for name in CONTEXT_FILES:
        shutil.copy2(REPO / name, dest / name)
    for name in CONTEXT_DIRS:
        shutil.copytree(REPO / name, dest / name, symlinks=True)
    shutil.copytree(wheels, dest / "wheels", copy_function=os.link)


def build(context: Path, base: str, tag: str, target: str | None = None) -> str:
    """Build `context` on `base` as `tag` with no network (`--network none`, never pulling)
    and the Docker format (OCI drops HEALTHCHECK); return the image id."""
    args = ["build", "--format", "docker", "--network", "none", "--pull=never",
            "--build-arg", f"BASE={base}", "--tag", tag, *(["--target", target] if target else []),
            str(context)]
    podman(*args, timeout=BUILD_TIMEOUT)
    return podman("image", "inspect", "--format", "{{.Id}}", tag)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["wheels", "image"])
    parser.add_argument("--tag", default="localhost/segwatch:dev")
    args = parser.parse_args()
    started = time.monotonic()
    wheels = wheels_dir()
    if args.what == "wheels":
        shutil.rmtree(REPO / "wheels", ignore_errors=True)
        shutil.copytree(wheels, REPO / "wheels")
        print(f"{REPO / 'wheels'}: {len(list(wheels.glob('*.whl')))} wheels")
        return 0
    if missing_tools():
        print(f"missing: {', '.join(missing_tools())} (apt-get install podman buildah runc "
              "debootstrap)", file=sys.stderr)
        return 2
    base = standin_base()
    with tempfile.TemporaryDirectory(prefix="segwatch-context-") as tmp:
        assemble_context(Path(tmp), wheels)
        image = build(Path(tmp), base, args.tag)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image))
    print(f"{args.tag} {image[:12]} {size / 1e6:.0f} MB on {base} "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
