"""The HTTP API on a real uvicorn listener over a real store (SQLite and PostgreSQL): the
maker-checker path by two authenticated users, every refusal (401, 403, self-approval,
dual role, expired and revoked tokens) with nothing written but its audit entry, local
sign-in with session cookies, CSRF and lockout, and bad input answered as JSON 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.api.app import build_app
from daemon.runtime.health import HealthServer
from daemon.runtime.metrics import Metrics
from daemon.service import Service
from tests.integration.test_workflow import ALICE, BOB, Clock, make_world

PASSWORD = "correct horse battery staple"


@dataclass
class Api:
    service: Service
    clock: Clock
    url: str
    tokens: dict[str, str]

    def client(self, user: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=10)

    def call(self, method: str, path: str, user: str | None = None, **kwargs: Any
             ) -> httpx.Response:
        with self.client(user) as client:
            return client.request(method, path, **kwargs)

    def audit_count(self) -> int:
        return self.service.store.verify_audit().checked

    def open_ids(self) -> list[int]:
        return [r.row.id or 0 for r in self.service.discrepancies(status="open")]


@pytest.fixture
def api(store_url: str, tmp_path: Path) -> Iterator[Api]:
    service, clock = make_world(store_url, tmp_path)
    identity = service.identity
    identity.add_user(None, "root", ["admin"], PASSWORD)
    root = identity.create_own_token("root", PASSWORD, "test", None, None)[1]
    admin = identity.from_token(root, "test")
    tokens = {"root": root}
    for name, roles in {"mia": ["maker"], "carl": ["checker"], "cora": ["maker", "checker"],
                        "val": ["viewer"], "books": ["feeder"], "audrey": ["auditor"]}.items():
        identity.add_user(admin, name, roles, PASSWORD)
        tokens[name] = identity.create_token(admin, name, None, 1)[1]
    server = HealthServer("127.0.0.1:0", service.status, Metrics(),
                          app=build_app(service, Metrics())).start()
    world = Api(service, clock, f"http://{server.address}", tokens)
    for user in tokens:  # each token's first use from this client is audited: done here
        assert world.call("GET", "/auth/me", user).status_code == 200
    try:
        yield world
    finally:
        server.stop()


def test_maker_and_checker_resolve_a_finding_over_the_api(api: Api) -> None:
    """mia proposes, carl approves, each with their own token: the finding is resolved and
    its history names both; a viewer reads status and the list but cannot act."""
    first = api.open_ids()[0]
    proposed = api.call("POST", f"/discrepancies/{first}/propose", "mia",
                        json={"reason": "false_positive", "note": "test wallet"})
    assert proposed.status_code == 200 and proposed.json()["status"] == "proposed"
    approved = api.call("POST", f"/discrepancies/{first}/approve", "carl", json={})
    assert approved.status_code == 200 and approved.json()["status"] == "resolved"
    shown = api.call("GET", f"/discrepancies/{first}", "val").json()
    assert [(e["actor"], e["action"]) for e in shown["history"]] == [
        ("engine", "detected"), ("mia", "proposed"), ("carl", "resolved")]
    assert api.call("GET", "/status", "val").json()["status"] == "discrepancy"
    listed = api.call("GET", "/discrepancies", "val", params={"status": "resolved"}).json()
    assert [d["id"] for d in listed] == [first]


@pytest.mark.parametrize(("user", "path", "body", "code", "message"), [
    (None, "propose", {"reason": "false_positive", "note": "x"}, 401, "credentials"),
    ("val", "propose", {"reason": "false_positive", "note": "x"}, 403, "maker role"),
    ("mia", "approve", {}, 403, "checker role"),
    ("books", "propose", {"reason": "false_positive", "note": "x"}, 403, "maker role"),
    ("cora", "propose", {"reason": "false_positive", "note": "x"}, 403,
     "both maker and checker"),
])
def test_refusals_write_nothing_but_their_audit_entry(
        api: Api, user: str | None, path: str, body: dict[str, str], code: int,
        message: str) -> None:
    """No credentials: 401 and nothing written. Wrong role or dual role: 403, the
    discrepancy unchanged, one `refused` audit entry."""
    api.service.settings.daemon.__dict__["allow_dual_role"] = False  # the production default
    first = api.open_ids()[0]
    before = api.audit_count()
    answer = api.call("POST", f"/discrepancies/{first}/{path}", user, json=body)
    assert answer.status_code == code and message in answer.json()["error"]["message"]
    assert api.open_ids()[0] == first
    assert api.audit_count() == before + (0 if user is None else 1)


def test_self_approval_is_refused_over_the_api(api: Api) -> None:
    """Where dual roles are allowed, the proposer still may not approve their own
    proposal (400, audited); another checker may."""
    first = api.open_ids()[0]
    api.call("POST", f"/discrepancies/{first}/propose", "cora",
             json={"reason": "funds_restored", "note": "returned"})
    before = api.audit_count()
    own = api.call("POST", f"/discrepancies/{first}/approve", "cora", json={})
    assert own.status_code == 400 and "may not approve it too" in own.json()["error"]["message"]
    assert api.audit_count() == before + 1
    assert api.call("POST", f"/discrepancies/{first}/approve", "carl",
                    json={}).json()["status"] == "resolved"


def test_expired_and_revoked_tokens_stop_at_once(api: Api) -> None:
    """A token past its expiry, or revoked by an admin, is refused on the next request
    (401), and the failure is audited under its user."""
    assert api.call("GET", "/status", "val").status_code == 200
    api.clock.now += timedelta(days=1, seconds=1)
    expired = api.call("GET", "/status", "val")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    token_id = api.tokens["root"].split("_")[1]
    assert api.call("GET", "/users", "root").status_code == 200
    assert api.call("DELETE", f"/tokens/{token_id}", "root").status_code == 200
    revoked = api.call("GET", "/users", "root")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    failures = [e for e in _audit(api) if e.action == "sign_in_failed"]
    assert [e.actor for e in failures] == ["val", "root"]


def test_session_cookie_needs_its_csrf_token_and_wrong_passwords_lock(api: Api) -> None:
    """Signing in sets an HttpOnly, SameSite=Strict cookie; a state-changing request with
    the cookie but without X-CSRF-Token is 401, with it 200; a forged cookie is 401; five
    wrong passwords lock the account (the right one is then refused too)."""
    first = api.open_ids()[0]
    with httpx.Client(base_url=api.url + "/api/v1", timeout=10) as browser:
        signed = browser.post("/auth/login", json={"name": "mia", "password": PASSWORD})
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
        browser.cookies.set("segwatch_session", signed.cookies["segwatch_session"])
        body = {"reason": "false_positive", "note": "x"}
        csrfless = browser.post(f"/discrepancies/{first}/propose", json=body)
        assert csrfless.status_code == 401 and "CSRF" in csrfless.json()["error"]["message"]
        assert browser.get("/auth/me").json()["user"] == "mia"
        ok = browser.post(f"/discrepancies/{first}/propose", json=body,
                          headers={"X-CSRF-Token": signed.json()["csrf"]})
        assert ok.status_code == 200 and ok.json()["status"] == "proposed"
    forged = api.call("GET", "/status", cookies={"segwatch_session": "x" * 43})
    assert forged.status_code == 401
    for _ in range(5):
        wrong = api.call("POST", "/auth/login", json={"name": "val", "password": "nope" * 4})
        assert wrong.status_code == 401
    locked = api.call("POST", "/auth/login", json={"name": "val", "password": PASSWORD})
    assert locked.status_code == 401 and locked.json()["error"]["message"] == \
        "invalid credentials"
    reasons = [e.payload["reason"] for e in _audit(api) if e.action == "sign_in_failed"]
    assert reasons[-2:] == ["wrong password; locked for 15 minutes", "locked"]


@pytest.mark.parametrize(("request_args", "code", "message"), [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422,
     "JSON"),
    ({"json": {"reason": "false_positive", "note": "x", "extra": 1}}, 422, "extra"),
    ({"json": {"reason": "false_positive"}}, 422, "note"),
    ({"json": {"reason": "false_positive", "note": "x" * 3000}}, 422, "note"),
    ({"content": b"x" * (33 * 1024 * 1024),
      "headers": {"content-type": "application/json"}}, 413, "larger than"),
])
def test_bad_bodies_are_json_4xx_and_write_nothing(
        api: Api, request_args: dict[str, Any], code: int, message: str) -> None:
    """Malformed JSON, unknown or missing fields, over-long text and a huge body: a JSON
    4xx naming the problem, no traceback, nothing written."""
    first = api.open_ids()[0]
    before = api.audit_count()
    answer = api.call("POST", f"/discrepancies/{first}/propose", "mia", **request_args)
    assert answer.status_code == code
    assert message.lower() in answer.json()["error"]["message"].lower()
    assert "Traceback" not in answer.text
    assert api.audit_count() == before and api.open_ids()[0] == first


def test_a_feeder_pushes_a_ledger_and_a_cut_goes_to_a_checker(api: Api) -> None:
    """A feeder's push is a new snapshot recorded under the feeder; a cut that would clear
    both shortfalls makes them proposed (ledger_corrected); a maker's push is 403; a bad
    file lists its bad lines and writes nothing."""
    cut = ("chain,address,structure,owner,asset,amount\n"
           f"ethereum,{ALICE},segregated,alice,ETH,0.1\n"
           f"ethereum,{BOB},segregated,bob,ETH,0.1\n")
    assert api.call("POST", "/ledger", "mia", content=cut).status_code == 403
    bad = api.call("POST", "/ledger", "books", content=cut + "ethereum,0xnope,segregated,x,"
                   "ETH,1\n")
    assert bad.status_code == 400 and len(bad.json()["error"]["lines"]) == 1
    naive = api.call("POST", "/ledger", "books", content=cut,
                     params={"as_of": "2026-11-20T15:00:00"})
    assert naive.status_code == 400 and "timezone" in naive.json()["error"]["message"]
    pushed = api.call("POST", "/ledger", "books", content=cut,
                      params={"as_of": api.clock.now.isoformat()})
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["as_of"] == api.clock.now.isoformat()
    assert pushed.json()["pushed_by"] == "books" and len(pushed.json()["ledger_corrected"]) == 2
    proposed = api.call("GET", "/discrepancies", "val", params={"status": "proposed"}).json()
    assert {(d["proposal"]["by"], d["proposal"]["reason"]) for d in proposed} == {
        ("books", "ledger_corrected")}
    snapshots = api.call("GET", "/ledger/snapshots", "val").json()
    assert [(s["id"], s["imported_by"]) for s in snapshots] == [(2, "books"),
                                                                (1, "feeder-test")]
    changes = api.call("GET", "/ledger/diff", "val", params={"from": 1, "to": 2}).json()
    assert {(c["owner"], c["change"], c["before"], c["after"]) for c in changes} == {
        ("alice", "changed", str(10**18), str(10**17)),
        ("bob", "changed", str(10**18), str(10**17))}
    assert api.call("GET", "/ledger/diff", "val", params={"from": 1, "to": 9}
                    ).status_code == 400
    # an id past what the database's integers hold is a 422, not a server error (found
    # by the schemathesis run: SQLite raised OverflowError)
    huge = api.call("GET", "/ledger/diff", "val", params={"from": 1, "to": 2**70})
    assert huge.status_code == 422 and "error" in huge.json()


def test_every_api_route_needs_credentials_but_healthz(api: Api) -> None:
    """The OpenAPI document lists every route; without credentials each answers 401,
    the sign-in routes another 4xx (no password, no provider configured), never a 2xx;
    /healthz answers without."""
    doc = api.call("GET", "/openapi.json", "val")
    assert doc.status_code == 200
    assert api.call("GET", "/openapi.json").status_code == 401
    for path, methods in doc.json()["paths"].items():
        for method in methods:
            concrete = path.replace("{id_}", "1").replace("{token_id}", "abc")
            answer = httpx.request(method.upper(), api.url + concrete, timeout=10)
            assert 400 <= answer.status_code < 500, (method, path, answer.status_code)
            if not path.startswith(("/api/v1/auth/login", "/api/v1/auth/oidc/")):
                assert answer.status_code == 401, (method, path)
    assert httpx.get(api.url + "/healthz", timeout=10).status_code in (200, 503)


def _audit(api: Api) -> list[Any]:
    from sqlmodel import Session, col, select

    from daemon.store.models import AuditEntry

    with Session(api.service.store.engine) as session:
        return list(session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))))


def test_an_auditor_makes_downloads_and_verifies_a_package_over_the_api(
        store_url: str, tmp_path: Path) -> None:
    """POST /exports signs a package with export.sign_key (auditor only; audited), GET
    lists and downloads it, POST /exports/verify checks an upload against the trusted
    signers: the real package verifies, an altered one does not."""
    import io
    import zipfile

    from daemon.export.signing import generate_key

    service, _ = make_world(store_url, tmp_path)
    made = generate_key(tmp_path / "sign.pem")
    export = {"sign_key": str(tmp_path / "sign.pem"), "dir": str(tmp_path / "exports"),
              "trusted_keys": [made.fingerprint]}
    service.settings = service.settings.model_copy(update={
        "export": service.settings.export.model_copy(update=export)})
    identity = service.identity
    identity.add_user(None, "root", ["admin"], PASSWORD)
    admin = identity.from_token(identity.create_own_token("root", PASSWORD, "t", None,
                                                          None)[1], "t")
    tokens = {}
    for name, role in (("audrey", "auditor"), ("val", "viewer")):
        identity.add_user(admin, name, [role], None)
        tokens[name] = identity.create_token(admin, name, None, None)[1]
    server = HealthServer("127.0.0.1:0", service.status, Metrics(),
                          app=build_app(service, Metrics())).start()
    try:
        api = Api(service, Clock(), f"http://{server.address}", tokens)
        assert api.call("POST", "/exports", "val", json={}).status_code == 403
        created = api.call("POST", "/exports", "audrey", json={})
        assert created.status_code == 201, created.text
        package_id = created.json()["id"]
        assert created.json()["audit_head"]["seq"] > 0
        listed = api.call("GET", "/exports", "audrey").json()
        assert [p["id"] for p in listed] == [package_id]
        zipped = api.call("GET", f"/exports/{package_id}", "audrey")
        assert zipped.status_code == 200 and zipped.headers["content-type"] == \
            "application/zip"
        verified = api.call("POST", "/exports/verify", "audrey", content=zipped.content)
        assert verified.json() == {"ok": True, "problems": []}
        altered = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(zipped.content)) as source, \
                zipfile.ZipFile(altered, "w") as target:
            for item in source.infolist():
                data = source.read(item)
                target.writestr(item, data + b"\n" if item.filename == "wallets.csv"
                                else data)
        forged = api.call("POST", "/exports/verify", "audrey", content=altered.getvalue())
        assert forged.json()["ok"] is False
        assert api.call("GET", "/exports/../../etc", "audrey").status_code in (404, 422)
        assert any(e.action == "exported" and e.actor == "audrey" for e in _audit(api))
    finally:
        server.stop()


def test_sign_in_attempts_from_one_address_are_rate_limited(api: Api) -> None:
    """A guesser spreading attempts over many accounts (no single one locks) is slowed:
    the 11th attempt within a minute from one address is 429 with Retry-After, even with
    the right password."""
    for n in range(10):
        wrong = api.call("POST", "/auth/login", json={"name": f"user{n}", "password": "x" * 12})
        assert wrong.status_code == 401
    limited = api.call("POST", "/auth/login", json={"name": "mia", "password": PASSWORD})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_wallets_show_booked_read_and_difference_per_asset(api: Api) -> None:
    """GET /wallets?chain=…: each wallet with its structure, owners and, per asset, the
    booked total, the newest balance read, its block and the difference."""
    listed = api.call("GET", "/wallets", "val", params={"chain": "ethereum"}).json()
    assert [w["address"] for w in listed] == sorted([ALICE, BOB])
    alice = next(w for w in listed if w["address"] == ALICE)
    assert alice["owners"] == ["alice"] and alice["structure"] == "segregated"
    (eth,) = [a for a in alice["assets"] if a["asset"] == "ETH"]
    assert (eth["booked"], eth["onchain"], eth["difference"], eth["block"]) == (
        str(10**18), str(10**17), str(10**17 - 10**18), 100)
    assert api.call("GET", "/wallets", "val", params={"chain": "nope"}).status_code == 400
    assert api.call("GET", "/wallets", params={"chain": "ethereum"}).status_code == 401
