"""Self-tests of tests/browserkit.py in Debian's real Chromium against a tiny Starlette
app on loopback: a CSP violation (inline script, inline style attribute) is caught, a
clean page under the same strict CSP has no problem, console errors and warnings, page
errors and a sub-resource's 404 are caught (a refusal page's own 403 is not), popups are
watched, axe-core finds a bad page's violations and none on a good page (and adds no CSP
violation of its own), a screenshot is a PNG file, two contexts keep separate cookies,
the narrow viewport is a phone's, the server stops at exit, and a missing Chromium or
axe-core skips (fails under CI=true)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests import browserkit
from tests.browserkit import (
    Browser,
    assert_clean,
    axe_violations,
    open_browser,
    problems,
    screenshot,
    serve_app,
)

pytestmark = pytest.mark.browser

CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'"
HEAD = {"Content-Security-Policy": CSP}
ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1">'
        b'<rect width="1" height="1"/></svg>')


def page_of(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}'
            '</title><link rel="icon" href="/icon.svg"><link rel="stylesheet" href="/app.css">'
            f'</head><body>{body}</body></html>')


GOOD = page_of("Good", '<header><h1>Balances</h1></header><main><form method="post">'
               '<label for="who">Wallet</label><input id="who" name="who">'
               '<img src="/icon.svg" alt="Segwatch" width="16" height="16">'
               '<button type="submit">Check</button></form></main>'
               '<script src="/app.js"></script>')
INLINE = page_of("Inline", '<main><h1 style="color: red">Hi</h1>'
                 '<script>document.title = "ran"</script></main>')
BROKEN = page_of("Broken", '<main><h1>Hi</h1><img src="/gone.png" alt="Gone">'
                 '<script src="/broken.js"></script></main>')
BAD = page_of("Bad", '<main><input type="text"><img src="/icon.svg"></main>')


def app() -> Starlette:
    def html(content: str, status: int = 200) -> Response:
        return HTMLResponse(content, status, headers=HEAD)

    def signin(request: Request) -> Response:
        answer = PlainTextResponse("signed in")
        answer.set_cookie("who", request.query_params["user"], httponly=True,
                          samesite="strict")
        return answer

    def whoami(request: Request) -> Response:
        return PlainTextResponse(request.cookies.get("who", "nobody"))

    routes = [
        Route("/", lambda _: html(GOOD)),
        Route("/inline", lambda _: html(INLINE)),
        Route("/broken", lambda _: html(BROKEN)),
        Route("/bad", lambda _: html(BAD)),
        Route("/refused", lambda _: html(page_of("Refused", "<main><h1>No</h1></main>"), 403)),
        Route("/app.js", lambda _: Response("document.body.dataset.ready = 'yes';",
                                            media_type="text/javascript")),
        Route("/broken.js", lambda _: Response(
            "console.error('the books are off'); console.warn('careful'); null.boom;",
            media_type="text/javascript")),
        Route("/app.css", lambda _: Response("h1 { color: #222; }", media_type="text/css")),
        Route("/icon.svg", lambda _: Response(ICON, media_type="image/svg+xml")),
        Route("/signin", signin),
        Route("/whoami", whoami),
    ]
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_app(app()) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with open_browser(tmp_path_factory.mktemp("shots")) as session:
        yield session


def test_csp_violations_are_problems(browser: Browser, url: str) -> None:
    page = browser.new_page()
    page.goto(url + "/inline")
    page.wait_for_load_state("load")
    assert page.title() == "Inline"  # the inline script was refused
    found = problems(page)
    assert any("inline script" in p and "script-src" in p for p in found), found
    assert any("inline style" in p and "style-src" in p for p in found), found
    with pytest.raises(AssertionError, match="Content Security Policy"):
        assert_clean(page)
    assert_clean(page, ignore=[r"Content Security Policy"])


def test_a_clean_page_has_no_problem(browser: Browser, url: str) -> None:
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_load_state("load")
    assert page.locator("body").get_attribute("data-ready") == "yes"  # 'self' script ran
    assert problems(page) == []
    assert_clean(page)


def test_console_errors_warnings_and_page_errors_are_problems(browser: Browser,
                                                               url: str) -> None:
    page = browser.new_page()
    page.goto(url + "/broken")
    page.wait_for_load_state("load")
    found = problems(page)
    assert any(p.startswith("console error: the books are off") for p in found), found
    assert any(p.startswith("console warning: careful") for p in found), found
    assert any(p.startswith("page error:") and "null" in p for p in found), found
    assert any("404" in p and p.endswith("/gone.png)") for p in found), found


def test_a_refusal_page_visited_on_purpose_is_not_a_problem(browser: Browser,
                                                             url: str) -> None:
    page = browser.new_page()
    answer = page.goto(url + "/refused")
    assert answer is not None and answer.status == 403
    assert_clean(page)


def test_axe_finds_the_bad_page_violations(browser: Browser, url: str) -> None:
    page = browser.new_page()
    page.goto(url + "/bad")
    found = {v["id"]: v for v in axe_violations(page)}
    assert {"image-alt", "label"} <= set(found), found
    assert found["image-alt"]["impact"] == "critical"
    assert found["image-alt"]["nodes"] == ["img"]
    assert found["label"]["nodes"] == ["input"]
    assert found["label"]["count"] == 1 and found["label"]["help"]
    assert_clean(page)  # axe ran under script-src 'self' and added no CSP violation


def test_axe_finds_nothing_on_the_good_page(browser: Browser, url: str) -> None:
    page = browser.new_page(viewport="narrow")
    page.goto(url + "/")
    assert axe_violations(page) == []
    assert axe_violations(page, impact=("minor", "moderate", "serious", "critical")) == []
    assert_clean(page)


def test_screenshot_is_a_png_in_the_artifacts(browser: Browser, url: str) -> None:
    page = browser.new_page()
    page.goto(url + "/")
    path = screenshot(page, "good page/wide")
    assert path.parent == browser.artifacts and path.name == "good-page-wide.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_contexts_keep_separate_cookies(browser: Browser, url: str) -> None:
    alice, bob = browser.new_page(), browser.new_page(viewport="narrow")
    alice.goto(url + "/signin?user=alice")
    bob.goto(url + "/signin?user=bob")
    alice.goto(url + "/whoami")
    bob.goto(url + "/whoami")
    assert alice.locator("body").inner_text() == "alice"
    assert bob.locator("body").inner_text() == "bob"
    second = browser.new_page(context=alice.context)  # the same person, another tab
    second.goto(url + "/whoami")
    assert second.locator("body").inner_text() == "alice"
    assert bob.viewport_size == {"width": 390, "height": 844}
    assert bob.evaluate("() => window.innerWidth") == 390


def test_popups_are_watched_too(browser: Browser, url: str) -> None:
    page = browser.new_page()
    page.goto(url + "/")
    with page.expect_popup() as popup:
        page.evaluate("u => window.open(u)", url + "/inline")
    opened = popup.value
    opened.wait_for_load_state("load")
    assert any("Content Security Policy" in p for p in problems(opened))


def test_the_server_stops_at_exit() -> None:
    with serve_app(app()) as base, \
            urllib.request.urlopen(base + "/whoami", timeout=5) as answer:  # noqa: S310
        assert answer.read() == b"nobody"
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_missing_chromium_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.delenv("SEGWATCH_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="Chromium"):
        browserkit.chromium_executable()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium"):
        browserkit.chromium_executable()
    monkeypatch.setenv("SEGWATCH_CHROMIUM", str(tmp_path / "nothing"))
    with pytest.raises(pytest.fail.Exception, match="SEGWATCH_CHROMIUM"):
        browserkit.chromium_executable()


def test_missing_axe_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(browserkit, "AXE", browserkit.REPO / "tests" / "nothing" / "axe.js")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="axe-core"):
        browserkit.axe_source()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="axe-core"):
        browserkit.axe_source()
