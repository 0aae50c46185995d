"""The operator console in a real browser: Debian's Chromium driven by Playwright, a
real OpenID Provider (npm oidc-provider) and a real store and listener.

Signing in with a local account (from the keyboard) and through the provider; a maker
proposes, a different checker approves, the books upload corrected books through the
console, and once a cycle finds the condition cleared the dashboard turns compliant; a
maker sees no approve button and her forged approve POST is refused; an upload with bad
lines shows each; an export is created, downloaded and verified (and a tampered one is
not); no page logs a console error (a CSP violation would be one); no serious or
critical axe-core violation on the main pages; the pages fit a phone's width. Every page
visited is saved as a screenshot under the artifacts folder (SEGWATCH_ARTIFACTS, default
.artifacts/console).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chains.evm.devnet import free_port
from daemon.api.app import build_app
from daemon.export.signing import generate_key
from daemon.inputs.config import Settings
from daemon.runtime.health import HealthServer
from daemon.runtime.metrics import Metrics
from daemon.service import Service
from tests.chromium import Browser, axe_violations, open_browser, screenshot
from tests.integration.test_workflow import ALICE, BOB, FakeAdapter, make_world
from tests.oidcprovider import OidcProvider

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
GROUPS = {"custody-checkers": ["checker"], "custody-viewers": ["viewer"]}
ACCOUNTS = {"olivia": {"email": "olivia@example.test", "email_verified": True,
                       "name": "Olivia", "groups": ["custody-viewers"]}}
PEOPLE = {"root": ["admin"], "mia": ["maker"], "carl": ["checker"], "books": ["feeder"],
          "audrey": ["auditor"], "val": ["viewer"]}
ETH = 10**18


@dataclass
class Console:
    service: Service
    url: str
    provider: OidcProvider
    browser: Browser
    tmp: Path
    shots: list[Path] = field(default_factory=list)

    def shot(self, page: Any, name: str) -> None:
        self.shots.append(screenshot(page, f"console-{name}"))

    def sign_in(self, user: str, viewport: str = "wide") -> Any:
        """A new browser context (its own cookies) signed in with a local account."""
        page = self.browser.new_page(viewport)
        page.goto(self.url + "/")
        assert page.url.startswith(self.url + "/login?next=/")
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.url + "/")
        return page

    def cycle(self) -> None:
        assert self.service.run_cycle(self.service.settings.chains[0]).error is None


@pytest.fixture
def console(oidc_provider: Callable[..., OidcProvider], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = oidc_provider(accounts=ACCOUNTS,
                             redirect_uri=f"{url}/api/v1/auth/oidc/callback")
    service, _clock = make_world(f"sqlite:///{tmp_path / 'segwatch.db'}", tmp_path)
    key = generate_key(tmp_path / "sign.pem")
    monkeypatch.setenv("SEGWATCH_OIDC_ISSUER", provider.issuer)
    monkeypatch.setenv("SEGWATCH_OIDC_CLIENT_ID", provider.client_id)
    monkeypatch.setenv("SEGWATCH_OIDC_CLIENT_SECRET", provider.client_secret)
    service.settings = Settings(**{
        **service.settings.model_dump(),
        "daemon": {"allow_dual_role": False},
        "export": {"sign_key": str(tmp_path / "sign.pem"), "dir": str(tmp_path / "exports"),
                   "trusted_keys": [key.fingerprint]},
        "auth": {"secure_cookies": False, "oidc": {
            "public_url": url, "roles": GROUPS, "scope": "openid email profile groups"}}})
    service.identity.settings = service.settings
    identity = service.identity
    identity.add_user(None, "root", ["admin"], PASSWORD)
    admin = identity.from_token(identity.create_own_token("root", PASSWORD, "t", None, None)[1],
                                "t")
    for name, roles in PEOPLE.items():
        if name != "root":
            identity.add_user(admin, name, roles, PASSWORD)
    server = HealthServer(f"127.0.0.1:{port}", service.status, Metrics(),
                          app=build_app(service, Metrics())).start()
    try:
        with open_browser() as browser:
            world = Console(service, url, provider, browser, tmp_path)
            yield world
            problems = browser.problems(origin=url)
            assert problems == [], problems  # CSP violations, script errors, failed loads
    finally:
        server.stop()


def open_ids(service: Service) -> list[int]:
    return [r.row.id or 0 for r in service.discrepancies(status="open")]


def test_local_sign_in_from_the_keyboard_and_oidc_sign_in(console: Console) -> None:
    """A local account signs in with the keyboard alone (the name field has focus, Tab,
    Enter); a person signs in through the identity provider's pages and lands on the
    dashboard with the role their groups map to; both sign out."""
    page = console.browser.new_page("wide")
    page.goto(console.url + "/exceptions")
    assert "/login?next=/exceptions" in page.url
    console.shot(page, "login")
    page.keyboard.type("val")  # autofocus on the user name
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(console.url + "/exceptions")
    assert page.get_by_role("heading", name=re.compile("Exceptions")).is_visible()
    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login\?signed_out=1"))

    oidc = console.browser.new_page("wide")
    oidc.goto(console.url + "/login")
    oidc.get_by_role("link", name="Sign in with your identity provider").click()
    oidc.wait_for_url(console.provider.issuer + "/**")
    oidc.locator("input[name=login]").fill("olivia")
    oidc.locator("input[name=password]").fill("any")
    oidc.locator("button[type=submit]").click()
    oidc.locator("button[type=submit]").click()  # the provider's consent page
    oidc.wait_for_url(console.url + "/")
    header = oidc.locator("header form.who").inner_text()
    assert "olivia@example.test" in header and "viewer" in header
    assert oidc.get_by_test_id("overall").inner_text() == "discrepancy"


def test_maker_proposes_checker_approves_and_the_dashboard_turns_compliant(
        console: Console) -> None:
    """mia (maker) proposes from the exception page and is offered no approve button;
    her forged approve POST (her own session and CSRF token) is refused with 403 and
    changes nothing; carl (checker) approves; the books upload corrected books, which
    send the other finding to carl as ledger_corrected; he approves it; once a cycle
    reads the chain again the dashboard says compliant."""
    first, second = open_ids(console.service)
    mia = console.sign_in("mia")
    assert mia.get_by_test_id("overall").inner_text() == "discrepancy"
    console.shot(mia, "dashboard-discrepancy")
    mia.get_by_role("link", name="Exceptions").click()
    console.shot(mia, "exceptions")
    mia.get_by_role("link", name=str(first), exact=True).click()
    assert mia.get_by_test_id("approve").count() == 0
    mia.get_by_label("Reason").select_option("funds_restored")
    mia.get_by_label(re.compile("^Note")).fill("top-up of 0.9 ETH sent, ticket 4711")
    mia.get_by_role("button", name="Propose resolution").click()
    assert mia.get_by_test_id("status").inner_text() == "proposed"
    assert mia.get_by_test_id("approve").count() == 0
    token = mia.locator("input[name=csrf]").first.get_attribute("value")
    forged = mia.request.post(f"{console.url}/exceptions/{first}/approve",
                              form={"csrf": token or ""}, max_redirects=0)
    assert forged.status == 403 and "needs the checker role" in forged.text()
    assert console.service.store.discrepancy(first)[0].row.status == "proposed"  # type: ignore[index]

    carl = console.sign_in("carl")
    carl.goto(f"{console.url}/exceptions/{first}")
    console.shot(carl, "exception-proposed")
    carl.get_by_test_id("approve").click()
    assert carl.get_by_test_id("status").inner_text() == "resolved"

    books = console.sign_in("books")
    books.get_by_role("link", name="Ledger").click()
    corrected = console.tmp / "books-corrected.csv"
    corrected.write_text("chain,address,structure,owner,asset,amount\n"
                         f"ethereum,{ALICE},segregated,alice,ETH,0.1\n"
                         f"ethereum,{BOB},segregated,bob,ETH,0.1\n")
    books.get_by_label("File (CSV or JSON)").set_input_files(str(corrected))
    books.get_by_role("button", name="Upload").click()
    assert "Imported: 2 lines" in books.get_by_role("status").inner_text()
    carl.goto(f"{console.url}/exceptions/{second}")
    assert carl.get_by_test_id("status").inner_text() == "proposed"  # ledger_corrected
    carl.get_by_test_id("approve").click()
    assert carl.get_by_test_id("status").inner_text() == "resolved"

    console.cycle()
    for _ in range(20):  # the status is cached for a second: bounded retries
        carl.goto(console.url + "/")
        if carl.get_by_test_id("overall").inner_text() == "compliant":
            break
        carl.wait_for_timeout(250)
    assert carl.get_by_test_id("overall").inner_text() == "compliant"
    console.shot(carl, "dashboard-compliant")


def test_an_upload_with_bad_lines_shows_every_one(console: Console) -> None:
    books = console.sign_in("books")
    books.goto(console.url + "/ledger")
    bad = console.tmp / "books-bad.csv"
    bad.write_text("chain,address,structure,owner,asset,amount\n"
                   f"ethereum,{ALICE},segregated,alice,ETH,1\n"
                   "ethereum,0xnot-an-address,segregated,bob,ETH,1\n"
                   f"ethereum,{BOB},segregated,bob,ETH,-3\n")
    books.get_by_label("File (CSV or JSON)").set_input_files(str(bad))
    books.get_by_role("button", name="Upload").click()
    lines = books.get_by_test_id("bad-lines").locator("li").all_inner_texts()
    assert [line.split(":")[:2] for line in lines] == [["books-bad.csv", "3"],
                                                        ["books-bad.csv", "4"]]
    console.shot(books, "ledger-bad-lines")
    assert len(console.service.store.snapshots()) == 1


def test_an_export_is_created_downloaded_and_verified(console: Console) -> None:
    """audrey creates a signed package, downloads it through the browser, uploads it to
    the verify form (verified), then a copy with one byte changed (NOT verified, with the
    problem named)."""
    audrey = console.sign_in("audrey")
    audrey.get_by_role("link", name="Exports").click()
    audrey.get_by_role("button", name="Create and sign").click()
    with audrey.expect_download() as download:
        audrey.get_by_test_id("download-new").click()
    package = console.tmp / "package.zip"
    download.value.save_as(package)
    assert zipfile.is_zipfile(package)
    audrey.get_by_label("Package (.zip)").set_input_files(str(package))
    audrey.get_by_role("button", name="Verify").click()
    assert "package.zip: verified" in audrey.get_by_test_id("verdict").inner_text()
    console.shot(audrey, "exports-verified")
    tampered = console.tmp / "tampered.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data + b"\n" if item.filename == "wallets.csv" else data)
    audrey.get_by_label("Package (.zip)").set_input_files(str(tampered))
    audrey.get_by_role("button", name="Verify").click()
    verdict = audrey.get_by_test_id("verdict").inner_text()
    assert "NOT verified" in verdict and "wallets.csv" in verdict
    assert io.BytesIO(package.read_bytes()).getbuffer().nbytes > 0


def test_main_pages_pass_axe_and_fit_a_phone(console: Console) -> None:
    """axe-core finds no serious or critical violation on the main pages at 1280 px; at
    390 px no page is wider than the screen (wide tables scroll in their own box)."""
    first = open_ids(console.service)[0]
    paths = {"dashboard": "/", "exceptions": "/exceptions",
             "exception": f"/exceptions/{first}", "wallets": "/wallets?q=alice",
             "wallet": f"/wallets/ethereum/{ALICE}", "ledger": "/ledger",
             "exports": "/exports", "admin": "/admin"}
    root = console.sign_in("root")
    found = {}
    for name, path in paths.items():
        root.goto(console.url + path)
        console.shot(root, f"{name}-1280")
        found[name] = axe_violations(root)
    narrow = console.sign_in("root", viewport="narrow")
    for name, path in paths.items():
        narrow.goto(console.url + path)
        console.shot(narrow, f"{name}-390")
        overflow = narrow.evaluate(
            "document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (name, overflow)
    login = console.browser.new_page("wide")
    login.goto(console.url + "/login")
    found["login"] = axe_violations(login)
    assert {k: v for k, v in found.items() if v} == {}


def test_the_live_spot_check_reads_the_chain_and_says_when_it_cannot(
        console: Console) -> None:
    """The wallet page's spot check reads the chain now; when the node cannot be read the
    page says so and shows nothing as compliant."""
    val = console.sign_in("val")
    val.goto(console.url + "/wallets")
    val.get_by_label("Address, owner or label").fill("bob")
    val.keyboard.press("Enter")
    val.get_by_role("link", name=BOB).click()
    val.get_by_role("link", name="Run a live spot check").click()
    spot = val.get_by_test_id("spot").inner_text()
    assert "0.1 ETH" in spot
    console.shot(val, "wallet-spot-check")
    adapter = console.service.connect(console.service.settings.chains[0])
    assert isinstance(adapter, FakeAdapter)
    adapter.fail = True  # the node stops answering
    val.reload()
    alert = val.get_by_role("alert").inner_text()
    assert "could not read the chain" in alert and "compliant" not in alert
