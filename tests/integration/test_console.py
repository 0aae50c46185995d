"""The operator console's pages over HTTP on a real uvicorn listener and a real store
(SQLite and PostgreSQL): sign-in and expiry, every page rendering its figures in display
units, the maker-checker path through forms, refusals (no role, a forged or cross-site
form, a bad filter) as error pages that write nothing but their audit entry, uploads
with every bad line shown, escaping of hostile text, and the strict CSP on every page.
The real-browser tests are tests/e2e/test_console_browser.py."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
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
from daemon.web.pages import CSP
from tests.integration.test_workflow import ALICE, BOB, Clock, make_world

PASSWORD = "correct horse battery staple"
HOSTILE = '<script>alert("x")</script>'


@dataclass
class Console:
    service: Service
    clock: Clock
    url: str

    def browser(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)

    @contextmanager
    def signed_in(self, user: str) -> Iterator[httpx.Client]:
        with self.browser() as client:
            page = client.get("/login")
            assert page.status_code == 200
            answer = client.post("/login", data={"name": user, "password": PASSWORD,
                                                 "nonce": field(page.text, "nonce"),
                                                 "next": "/"})
            assert answer.status_code == 303, answer.text[:300]
            yield client


def field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} field"
    return html.unescape(found.group(1))


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


@pytest.fixture
def console(store_url: str, tmp_path: Path) -> Iterator[Console]:
    service, clock = make_world(store_url, tmp_path)
    # plain-HTTP loopback: httpx (unlike a browser on localhost) keeps Secure cookies off
    loopback = service.settings.auth.model_copy(update={"secure_cookies": False})
    service.settings = service.identity.settings = service.settings.model_copy(
        update={"auth": loopback})
    identity = service.identity
    identity.add_user(None, "root", ["admin"], PASSWORD)
    admin = identity.from_token(identity.create_own_token("root", PASSWORD, "t", None, None)[1],
                                "t")
    for name, roles in {"mia": ["maker"], "carl": ["checker"], "val": ["viewer"],
                        "books": ["feeder"], "audrey": ["auditor"]}.items():
        identity.add_user(admin, name, roles, PASSWORD)
    server = HealthServer("127.0.0.1:0", service.status, Metrics(),
                          app=build_app(service, Metrics())).start()
    try:
        yield Console(service, clock, f"http://{server.address}")
    finally:
        server.stop()


def open_ids(service: Service) -> list[int]:
    return [r.row.id or 0 for r in service.discrepancies(status="open")]


def test_pages_need_a_session_and_an_expired_one_says_so(console: Console) -> None:
    """Without a session every page redirects to the sign-in page (keeping where it
    was going); a wrong password is refused on the form; a session past auth.session_hours
    sends the person back to sign in with a message."""
    with console.browser() as anonymous:
        for path in ("/", "/exceptions?status=open", "/wallets", "/ledger", "/exports",
                     "/admin", f"/exceptions/{open_ids(console.service)[0]}"):
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/login?next=/"), path
        form = anonymous.get("/login")
        wrong = anonymous.post("/login", data={"name": "val", "password": "nope",
                                               "nonce": field(form.text, "nonce")})
        assert wrong.status_code == 401 and "Sign in" in wrong.text
        assert "segwatch_session" not in anonymous.cookies
    with console.signed_in("val") as val:
        assert val.get("/").status_code == 200
        console.clock.now += timedelta(hours=console.service.settings.auth.session_hours,
                                       minutes=1)
        expired = val.get("/exceptions")
        assert expired.status_code == 303
        assert expired.headers["location"] == "/login?next=/exceptions&expired=1"
        assert "session has expired" in val.get(expired.headers["location"]).text


def test_a_sign_in_form_from_elsewhere_and_open_redirects_are_refused(
        console: Console) -> None:
    """Login CSRF: a sign-in posted without the form's nonce cookie is refused; `next`
    only ever leads to a path on this site."""
    with console.browser() as client:
        forged = client.post("/login", data={"name": "val", "password": PASSWORD,
                                             "nonce": "guess"})
        assert forged.status_code == 403 and "segwatch_session" not in client.cookies
        page = client.get("/login", params={"next": "//evil.example/x"})
        assert field(page.text, "next") == "/"
        answer = client.post("/login", data={"name": "val", "password": PASSWORD,
                                             "nonce": field(page.text, "nonce"),
                                             "next": "https://evil.example/"})
        assert answer.headers["location"] == "/"


def test_every_page_renders_in_display_units_under_a_strict_csp(console: Console) -> None:
    """Dashboard, exceptions, an exception, wallets, a wallet, ledger, exports and admin
    render for their roles with amounts in display units and the asset symbol, times in
    the configured timezone with UTC on hover, and the CSP that allows no inline code:
    the one script is the console's own file."""
    first = open_ids(console.service)[0]
    with console.signed_in("root") as root:
        pages = {path: root.get(path) for path in (
            "/", "/exceptions", f"/exceptions/{first}", "/wallets?q=alice",
            f"/wallets/ethereum/{ALICE}", "/ledger", "/admin")}
    for path, page in pages.items():
        assert page.status_code == 200, (path, page.text[:500])
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self';" in CSP and "unsafe" not in CSP
        assert re.findall(r"<script[^>]*>", page.text) == [
            '<script src="/static/console.js" defer>']
    dashboard = text_of(pages["/"].text)
    assert "Overall: discrepancy" in " ".join(dashboard.split())
    assert "0.2 ETH" in dashboard and "2 ETH" in dashboard  # read 0.1 + 0.1, booked 1 + 1
    assert "-1.8 ETH" in dashboard
    detail = text_of(pages[f"/exceptions/{first}"].text)
    assert "balance_shortfall" in detail and "-0.9 ETH" in detail and "EST" in detail
    assert 'title="2026-11-20T15:00:00Z (UTC)"' in pages[f"/exceptions/{first}"].text
    assert ALICE in pages["/wallets?q=alice"].text and BOB not in pages["/wallets?q=alice"].text
    wallet = text_of(pages[f"/wallets/ethereum/{ALICE}"].text)
    assert "alice" in wallet and "0.1 ETH" in wallet and "1 ETH" in wallet
    with console.signed_in("audrey") as audrey:
        assert audrey.get("/exports").status_code == 200


def test_maker_proposes_checker_approves_through_the_forms(console: Console) -> None:
    """A maker sees the propose form and no approve button; a forged approve POST with
    the maker's own valid session and CSRF token is refused by the server (403, audited,
    nothing changed); another checker sees approve and resolves it."""
    first = open_ids(console.service)[0]
    with console.signed_in("mia") as mia:
        page = mia.get(f"/exceptions/{first}")
        assert "Propose resolution" in page.text and 'data-testid="approve"' not in page.text
        done = mia.post(f"/exceptions/{first}/propose", data={
            "csrf": field(page.text, "csrf"), "reason": "ledger_corrected",
            "note": HOSTILE})
        assert done.status_code == 303
        proposed = mia.get(done.headers["location"])
        assert "The exception was proposed" in proposed.text
        assert HOSTILE not in proposed.text and "&lt;script&gt;alert(" in proposed.text
        assert 'data-testid="approve"' not in proposed.text  # not a checker, and her own
        forged = mia.post(f"/exceptions/{first}/approve",
                          data={"csrf": field(proposed.text, "csrf")})
        assert forged.status_code == 403 and "needs the checker role" in forged.text
    assert console.service.store.discrepancy(first)[0].row.status == "proposed"  # type: ignore[index]
    with console.signed_in("carl") as carl:
        page = carl.get(f"/exceptions/{first}")
        assert 'data-testid="approve"' in page.text and "Propose resolution" not in page.text
        done = carl.post(f"/exceptions/{first}/approve", data={"csrf": field(page.text,
                                                                             "csrf")})
        assert done.status_code == 303
    record, history = console.service.store.discrepancy(first)  # type: ignore[misc]
    assert (record.row.status, record.row.resolved_by) == ("resolved", "carl")
    assert [(e.actor, e.action) for e in history][-3:] == [
        ("mia", "proposed"), ("mia", "refused"), ("carl", "resolved")]


def test_forms_without_their_csrf_token_or_from_another_site_are_refused(
        console: Console) -> None:
    """A POST with the session cookie but no or a wrong CSRF token, or with another
    site's Origin, is refused before the handler runs: nothing is written."""
    first = open_ids(console.service)[0]
    with console.signed_in("mia") as mia:
        token = field(mia.get("/").text, "csrf")
        before = console.service.store.verify_audit().checked
        form = {"reason": "false_positive", "note": "x"}
        assert mia.post(f"/exceptions/{first}/propose", data=form).status_code == 403
        assert mia.post(f"/exceptions/{first}/propose",
                        data={**form, "csrf": "wrong"}).status_code == 403
        cross = mia.post(f"/exceptions/{first}/propose", data={**form, "csrf": token},
                         headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and "another site" in cross.text
    assert console.service.store.verify_audit().checked == before
    assert first in open_ids(console.service)


def test_an_upload_with_bad_lines_shows_every_one_and_imports_nothing(
        console: Console, tmp_path: Path) -> None:
    """A ledger file with several bad lines is refused whole; the page lists each with
    its line number (escaped); a good file imports as the uploading feeder; a viewer
    cannot upload."""
    snapshots = len(console.service.store.snapshots())
    bad = ("chain,address,structure,owner,asset,amount\n"
           f"ethereum,{ALICE},segregated,alice,ETH,1.5\n"
           f"ethereum,0xnot-an-address,segregated,bob,ETH,1\n"
           f"ethereum,{BOB},segregated,{HOSTILE},ETH,-3\n")
    with console.signed_in("books") as books:
        page = books.get("/ledger")
        answer = books.post("/ledger/upload", data={"csrf": field(page.text, "csrf"),
                                                    "kind": "ledger"},
                            files={"file": ("books.csv", bad.encode(), "text/csv")})
        assert answer.status_code == 400
        shown = re.findall(r"<li>([^<]*)</li>",
                           answer.text.split('data-testid="bad-lines"')[1].split("</ul>")[0])
        assert {tuple(s.split(":")[:2]) for s in shown} == {("books.csv", "3"),
                                                            ("books.csv", "4")}
        assert "segwatch-upload" not in answer.text  # the server's folder is not shown
        assert HOSTILE not in answer.text
        assert len(console.service.store.snapshots()) == snapshots
        good = bad.splitlines()[0] + "\n" + bad.splitlines()[1] + "\n"
        ok = books.post("/ledger/upload", data={"csrf": field(page.text, "csrf"),
                                                "kind": "ledger", "as_of": ""},
                        files={"file": ("books.csv", good.encode(), "text/csv")})
        assert ok.status_code == 200 and "Imported: 1 line" in text_of(ok.text)
        first, second = sorted(s["id"] for s in console.service.store.snapshots())
        diff = books.get("/ledger", params={"from": first, "to": second}).text
        changed = diff.split('data-testid="diff"')[1].split("</table>")[0]
        assert "2 allocations differ from snapshot" in " ".join(text_of(diff).split())
        rows = [" ".join(text_of(r).split()) for r in changed.split("<tr>")[2:]]
        assert rows[0].startswith("changed ethereum") and rows[0].endswith("alice 1 ETH 1.5 ETH")
        assert rows[1].startswith("removed ethereum") and rows[1].endswith("bob 1 ETH —")
    assert console.service.store.snapshots()[0]["imported_by"] == "books"
    with console.signed_in("val") as val:
        page = val.get("/ledger")
        assert "Uploading needs the feeder role" in page.text
        refused = val.post("/ledger/upload", data={"csrf": field(page.text, "csrf"),
                                                   "kind": "ledger"},
                           files={"file": ("books.csv", good.encode(), "text/csv")})
        assert refused.status_code == 403


def test_filters_sort_and_paginate_and_bad_filters_are_one_line_errors(
        console: Console) -> None:
    """The list filters by status, chain, type, severity and overdue, sorts both ways,
    and a filter value it does not know is a 400 page, not a traceback."""
    ids = open_ids(console.service)
    with console.signed_in("val") as val:
        newest_first = val.get("/exceptions", params={"sort": "id", "dir": "desc"})
        oldest_first = val.get("/exceptions", params={"sort": "id", "dir": "asc"})
        found = [int(i) for i in re.findall(r'href="/exceptions/(\d+)"', newest_first.text)]
        assert found == sorted(ids, reverse=True)
        assert [int(i) for i in re.findall(r'href="/exceptions/(\d+)"',
                                           oldest_first.text)] == sorted(ids)
        none = val.get("/exceptions", params={"type": "commingling"})
        assert "No exception matches" in none.text
    console.clock.now += timedelta(days=5)
    with console.signed_in("val") as val:
        late = val.get("/exceptions", params={"overdue": "1"})
        assert len(re.findall(r'href="/exceptions/\d+"', late.text)) == len(ids)
        for params in ({"status": "bogus"}, {"sort": "amount; drop"}, {"chain": "mars"}):
            bad = val.get("/exceptions", params=params)
            assert bad.status_code == 400 and "unknown" in bad.text
            assert "Traceback" not in bad.text
        assert val.get("/exceptions/999999").status_code == 404
        assert val.get("/nowhere").status_code == 404


def test_admin_creates_a_token_shown_once_and_revokes_it(console: Console) -> None:
    """An admin adds a user, creates a token (shown once on that answer only), revokes
    it; a non-admin gets a 403 page and no admin link."""
    with console.signed_in("root") as root:
        page = root.get("/admin")
        csrf = field(page.text, "csrf")
        added = root.post("/admin/users", data={"csrf": csrf, "name": "nina",
                                                "roles": ["viewer"], "password": PASSWORD})
        assert added.status_code == 303
        created = root.post("/admin/tokens", data={"csrf": csrf, "user": "nina",
                                                   "expires_days": "1"})
        token = re.search(r'data-testid="new-token">([^<]+)<', created.text)
        assert token is not None
        assert console.service.identity.from_token(token.group(1), "t").name == "nina"
        listing = root.get("/admin").text
        assert token.group(1) not in listing
        token_id = re.search(r"<h2>Token (\S+) for nina</h2>", created.text)
        assert token_id is not None
        assert root.post(f"/admin/tokens/{token_id.group(1)}/revoke",
                         data={"csrf": csrf}).status_code == 303
    with pytest.raises(Exception, match="revoked"):
        console.service.identity.from_token(token.group(1), "t")
    with console.signed_in("val") as val:
        assert 'href="/admin"' not in val.get("/").text
        assert val.get("/admin").status_code == 403


def test_sign_out_ends_the_session(console: Console) -> None:
    with console.signed_in("val") as val:
        cookie = val.cookies["segwatch_session"]
        out = val.post("/logout", data={"csrf": field(val.get("/").text, "csrf")})
        assert out.status_code == 303 and out.headers["location"] == "/login?signed_out=1"
    with console.browser() as again:
        again.cookies.set("segwatch_session", cookie)
        assert again.get("/").status_code == 303


def test_a_transfer_finding_shows_its_transfer_with_block_and_confirmations(
        console: Console) -> None:
    """An unauthorized outflow's page lists the transaction's transfer with its block,
    its confirmations at the newest scanned block, both sides and the amount in ETH."""
    from chains.evm.address import canonical_evm_address
    from chains.fake import FakeAdapter
    from chains.types import BaseUnits, ChainHead, TransferObservation

    chain = console.service.settings.chains[0]
    fake = console.service.connect(chain)
    assert isinstance(fake, FakeAdapter)
    thief = canonical_evm_address("0x" + "99" * 20)
    fake.transfers = [TransferObservation(
        "native", ChainHead(101, f"0x{101:064x}"), "0x" + "cd" * 32, None, ALICE, thief,
        None, BaseUnits(5 * 10**16), "fake")]
    pinned = fake.head_block.hash  # block 100 as the first cycle read it
    scan = fake.scan

    def chained(*args: Any, **kwargs: Any) -> Any:  # block 101 builds on that block 100
        found = scan(*args, **kwargs)
        return dataclasses.replace(found, blocks=tuple(
            dataclasses.replace(b, parent_hash=pinned) if b.height == 101 else b
            for b in found.blocks))

    fake.scan = chained  # type: ignore[method-assign]
    fake.head_block = ChainHead(103, f"0x{103:064x}")
    fake.balances_by_key = {**fake.balances_by_key, (ALICE, "ETH"): 5 * 10**16}
    assert console.service.run_cycle(chain).error is None
    (outflow,) = console.service.discrepancies(status="open", type_="unauthorized_outflow")
    with console.signed_in("val") as val:
        page = text_of(val.get(f"/exceptions/{outflow.row.id}").text)
    assert "Transfers of this transaction" in page
    assert "101 · 3 confirmations" in " ".join(page.split())
    assert "0.05 ETH" in page and thief in page


def test_a_wallet_page_takes_any_spelling_of_its_address_and_refuses_a_bad_one(
        console: Console) -> None:
    with console.signed_in("val") as val:
        page = val.get(f"/wallets/ethereum/{ALICE.lower()}")
        assert page.status_code == 200 and "segregated" in page.text and ALICE in page.text
        bad = val.get("/wallets/ethereum/0xnot-an-address")
        assert bad.status_code == 400 and "not an EVM address" in html.unescape(bad.text)
        assert val.get(f"/wallets/mars/{ALICE}").status_code == 400


def test_a_chain_that_cannot_be_read_is_never_shown_as_vouched_for(console: Console) -> None:
    """Fail closed on the dashboard: once the node stops answering, the chain's signal is
    not compliant and its totals say they are not vouched for."""
    from chains.fake import FakeAdapter

    chain = console.service.settings.chains[0]
    fake = console.service.connect(chain)
    assert isinstance(fake, FakeAdapter)
    fake.fail = True
    console.service.run_cycle(chain)
    console.clock.now += timedelta(seconds=2)  # past the status cache
    with console.signed_in("val") as val:
        page = " ".join(text_of(val.get("/").text).split())
    assert "Overall: compliant" not in page
    assert "(not vouched for: the last cycle could not read or verify the chain)" in page
