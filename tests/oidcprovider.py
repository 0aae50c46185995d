"""A real OpenID Connect provider on loopback for tests: panva's `oidc-provider` (Node.js).

Install (from the repo root; package-lock.json pins every package):

    cd tests/oidc && npm ci --no-audit --no-fund --silent

`OidcProvider` runs `node tests/oidc/provider.js` with one confidential client and a few
accounts (claims: email, name, groups), PKCE S256 required, and the scope claims (email,
profile, groups) in the ID token. `sign_in` drives its built-in login and consent forms with
plain httpx, as a browser would, and returns the redirect to the client with `code` and
`state`. The `oidc_provider` fixture starts providers and stops them after the test. Without
node or the installed packages the test skips; with `CI=true` it fails.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.realdeps import missing

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
INSTALL_COMMAND = "cd tests/oidc && npm ci --no-audit --no-fund --silent"

DEFAULT_ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@example.test",
        "email_verified": True,
        "name": "Alice Admin",
        "groups": ["segwatch-admins", "segwatch-viewers"],
    },
    "bob": {
        "email": "bob@example.test",
        "email_verified": True,
        "name": "Bob Viewer",
        "groups": ["segwatch-viewers"],
    },
}


def require_node() -> str:
    """Return the node binary; skip the test without node or the npm packages (fail when CI=true)."""
    node = shutil.which("node")
    if node is None:
        missing("oidc-provider", "node is not on PATH")
        raise AssertionError("unreachable")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        missing("oidc-provider", f"its npm packages are not installed: run `{INSTALL_COMMAND}`")
    return node


class SignInError(AssertionError):
    """The provider did not lead the sign-in to the client's redirect_uri."""


class OidcProvider:
    """A running oidc-provider with one client; a context manager (start on enter, stop on exit)."""

    def __init__(
        self,
        workdir: Path,
        *,
        accounts: Mapping[str, Mapping[str, Any]] = DEFAULT_ACCOUNTS,
        client_id: str = "segwatch",
        client_secret: str | None = None,
        redirect_uri: str = "http://127.0.0.1:9/auth/callback",
        auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic",
        startup_timeout: float = 20.0,
    ) -> None:
        self.workdir = workdir
        self.accounts = {name: dict(claims) for name, claims in accounts.items()}
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.redirect_uri = redirect_uri
        self.auth_method = auth_method
        self.startup_timeout = startup_timeout
        self.issuer = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def __enter__(self) -> OidcProvider:
        node = require_node()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "oidc-config.json"
        config.write_text(json.dumps(self._config(), indent=2))
        stdout, stderr = self.workdir / "oidc.out", self.workdir / "oidc.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            self._process = subprocess.Popen(
                [node, str(OIDC_DIR / "provider.js"), str(config), "0"],
                cwd=OIDC_DIR,
                stdin=subprocess.PIPE,  # the provider exits when this closes
                stdout=out,
                stderr=err,
            )
        try:
            self.issuer = self._wait_listening(stdout, stderr)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> dict[str, Any]:
        client = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": [self.redirect_uri],
            "token_endpoint_auth_method": self.auth_method,
        }
        return {"clients": [client], "accounts": self.accounts}

    def _wait_listening(self, stdout: Path, stderr: Path) -> str:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for line in stdout.read_text(errors="replace").splitlines():
                if line.startswith("LISTENING "):
                    return line.split(" ", 1)[1].strip()
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        log = stderr.read_text(errors="replace")[-2000:]
        returncode = self._process.poll()
        state = f"exited with {returncode}" if returncode is not None else "did not listen in time"
        raise RuntimeError(f"oidc-provider {state}; its stderr ends:\n{log}")

    def stop(self) -> None:
        """Close the provider's stdin (it exits), then terminate or kill it if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        for stop in (None, process.terminate, process.kill):
            if stop is not None:
                stop()
            try:
                process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue


_FORM_ACTION = re.compile(r'<form[^>]*\baction="([^"]+)"[^>]*method="post"', re.IGNORECASE)
_PROMPT = re.compile(r'<input type="hidden" name="prompt" value="([a-z]+)"', re.IGNORECASE)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def sign_in(authorize_url: str, account: str, *, timeout: float = 10.0, max_steps: int = 12) -> str:
    """Sign `account` in at `authorize_url` and consent; return the redirect back to the client.

    Keeps cookies, follows the provider's redirects one by one and submits its login form (the
    account id; the dev login takes any password) and consent form. The first redirect that
    leaves the provider's origin is returned unrequested: the client's redirect_uri with
    `code`, `state` and `iss` (or `error` when the provider refused). At most `max_steps`
    requests, within `timeout` seconds in all.
    """
    provider = _origin(authorize_url)
    deadline = time.monotonic() + timeout
    with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False) as http:
        response = http.get(authorize_url)
        for _ in range(max_steps):
            if time.monotonic() > deadline:
                raise SignInError(f"sign-in took longer than {timeout:g} s")
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if _origin(location) != provider:
                    return location
                response = http.get(location)
                continue
            if response.status_code == 403 and "unknown account" in response.text:
                raise SignInError(f"the provider refused the account {account!r}")
            action = _FORM_ACTION.search(response.text) if response.status_code == 200 else None
            prompt = _PROMPT.search(response.text) if action else None
            if action is None or prompt is None:
                raise SignInError(
                    f"unexpected {response.status_code} from {response.url}: {response.text[:500]}"
                )
            form: dict[str, str] = {"prompt": prompt.group(1)}
            if form["prompt"] == "login":
                form |= {"login": account, "password": "any"}
            target = urljoin(str(response.url), html.unescape(action.group(1)))
            response = http.post(target, data=form)
        raise SignInError(f"no redirect to the client after {max_steps} steps")


@pytest.fixture
def oidc_provider(tmp_path: Path) -> Iterator[Callable[..., OidcProvider]]:
    """Start providers: `oidc_provider(**OidcProvider options)`; all are stopped after the test."""
    with ExitStack() as stack:
        count = 0

        def start(**options: Any) -> OidcProvider:
            nonlocal count
            count += 1
            return stack.enter_context(OidcProvider(tmp_path / f"oidc-{count}", **options))

        yield start
