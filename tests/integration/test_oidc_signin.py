"""Sign-in through a real OpenID Provider (npm oidc-provider on loopback): the whole
authorization-code flow with PKCE from a real HTTP client, the ID token checked, the
groups claim mapped to roles; a person whose claims map to maker cannot approve; a
dual-role or role-less person is refused (audited); a replayed or forged callback is
refused; sign-out ends the session at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chains.evm.devnet import free_port
from daemon.api.app import build_app
from daemon.inputs.config import Settings
from daemon.runtime.health import HealthServer
from daemon.runtime.metrics import Metrics
from daemon.service import Service
from tests.integration.test_workflow import make_world
from tests.oidcprovider import OidcProvider, sign_in

GROUPS = {"custody-makers": ["maker"], "custody-checkers": ["checker"],
          "custody-viewers": ["viewer"]}
ACCOUNTS = {
    name: {"email": f"{name}@example.test", "email_verified": True, "name": name,
           "groups": groups}
    for name, groups in {"mia": ["custody-makers"], "carl": ["custody-checkers"],
                         "both": ["custody-makers", "custody-checkers"],
                         "outsider": ["marketing"]}.items()}


@dataclass
class World:
    service: Service
    url: str
    provider: OidcProvider

    def sign_in(self, account: str) -> tuple[httpx.Client, httpx.Response]:
        """A browser: start at segwatch, sign in at the provider, come back."""
        browser = httpx.Client(base_url=self.url, timeout=15)
        start = browser.get("/api/v1/auth/oidc/login")
        assert start.status_code == 302
        assert start.headers["location"].startswith(self.provider.issuer)
        back = sign_in(start.headers["location"], account)
        assert back.startswith(self.url + "/api/v1/auth/oidc/callback?")
        return browser, browser.get(back)


@pytest.fixture
def world(oidc_provider: Callable[..., OidcProvider], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = oidc_provider(accounts=ACCOUNTS,
                             redirect_uri=f"{url}/api/v1/auth/oidc/callback")
    monkeypatch.setenv("SEGWATCH_OIDC_ISSUER", provider.issuer)
    monkeypatch.setenv("SEGWATCH_OIDC_CLIENT_ID", provider.client_id)
    monkeypatch.setenv("SEGWATCH_OIDC_CLIENT_SECRET", provider.client_secret)
    service, _ = make_world(f"sqlite:///{tmp_path / 'segwatch.db'}", tmp_path)
    auth: dict[str, Any] = {"secure_cookies": False, "oidc": {
        "public_url": url, "roles": GROUPS, "scope": "openid email profile groups"}}
    service.settings = Settings(**{**service.settings.model_dump(), "auth": auth,
                                   "daemon": {"allow_dual_role": False}})
    service.identity.settings = service.settings
    server = HealthServer(f"127.0.0.1:{port}", service.status, Metrics(),
                          app=build_app(service, Metrics())).start()
    try:
        yield World(service, url, provider)
    finally:
        server.stop()


def test_a_maker_signed_in_through_the_provider_proposes_but_cannot_approve(
        world: World) -> None:
    """mia's groups claim maps to maker: she is signed in with exactly that role, may
    propose (with the CSRF token) and is refused approval (403); carl, a checker by his
    claims, approves. The history names both by their verified e-mail."""
    mia, answer = world.sign_in("mia")
    assert answer.status_code == 200, answer.text
    assert answer.json()["roles"] == ["maker"] and answer.json()["user"] == "mia@example.test"
    csrf = {"X-CSRF-Token": answer.json()["csrf"]}
    first = next(r.row.id for r in world.service.discrepancies(status="open"))
    proposed = mia.post(f"/api/v1/discrepancies/{first}/propose", headers=csrf,
                        json={"reason": "false_positive", "note": "test wallet"})
    assert proposed.status_code == 200, proposed.text
    refused = mia.post(f"/api/v1/discrepancies/{first}/approve", headers=csrf, json={})
    assert refused.status_code == 403 and "checker role" in refused.json()["error"]["message"]
    carl, signed = world.sign_in("carl")
    approved = carl.post(f"/api/v1/discrepancies/{first}/approve", json={},
                         headers={"X-CSRF-Token": signed.json()["csrf"]})
    assert approved.status_code == 200 and approved.json()["status"] == "resolved"
    history = carl.get(f"/api/v1/discrepancies/{first}").json()["history"]
    assert [(e["actor"], e["action"]) for e in history][-3:] == [
        ("mia@example.test", "proposed"), ("mia@example.test", "refused"),
        ("carl@example.test", "resolved")]


@pytest.mark.parametrize(("account", "why"), [
    ("both", "both maker and checker"), ("outsider", "no role is mapped")])
def test_a_dual_role_or_role_less_person_is_refused_and_audited(
        world: World, account: str, why: str) -> None:
    """Claims that map to maker and checker together (dual role off), or to no role at
    all: the sign-in is refused (403), no session exists, and the failure is audited."""
    browser, answer = world.sign_in(account)
    assert answer.status_code == 403 and why in answer.json()["error"]["message"]
    assert browser.get("/api/v1/status").status_code == 401
    failures = [e for e in _entries(world) if e.action == "sign_in_failed"]
    assert failures and failures[-1].payload["via"] == "oidc" and \
        why in failures[-1].payload["reason"]


def test_a_replayed_or_forged_callback_is_refused(world: World) -> None:
    """A callback's state works once; a made-up state or code is 401."""
    browser = httpx.Client(base_url=world.url, timeout=15)
    start = browser.get("/api/v1/auth/oidc/login")
    back = sign_in(start.headers["location"], "mia")
    assert browser.get(back).status_code == 200
    replayed = httpx.get(back, timeout=15)
    assert replayed.status_code == 401 and "unknown or expired" in replayed.text
    forged = httpx.get(f"{world.url}/api/v1/auth/oidc/callback",
                       params={"code": "x", "state": "y"}, timeout=15)
    assert forged.status_code == 401


def test_sign_out_ends_the_session_at_once(world: World) -> None:
    """After sign-out the old cookie is refused on the next request."""
    mia, answer = world.sign_in("mia")
    cookie = mia.cookies["segwatch_session"]
    assert mia.get("/api/v1/auth/me").status_code == 200
    out = mia.post("/api/v1/auth/logout", headers={"X-CSRF-Token": answer.json()["csrf"]})
    assert out.status_code == 200
    stale = httpx.get(f"{world.url}/api/v1/auth/me", cookies={"segwatch_session": cookie},
                      timeout=15)
    assert stale.status_code == 401


def _entries(world: World) -> list[Any]:
    from sqlmodel import Session, col, select

    from daemon.store.models import AuditEntry

    with Session(world.service.store.engine) as session:
        return list(session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))))
