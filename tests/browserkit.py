"""A reusable real-browser harness: Debian's Chromium driven by Playwright for Python
through `executable_path` (no browser download), an ASGI app served on loopback, every
page's problems collected, full-page screenshots kept, and axe-core run in the page.

    from tests.browserkit import (assert_clean, axe_violations, open_browser, screenshot,
                                  serve_app)

    with serve_app(app) as url, open_browser() as browser:
        alice = browser.new_page()                 # a context of its own: her cookies
        bob = browser.new_page(viewport="narrow")  # another person, at 390x844
        tab = browser.new_page(context=alice.context)  # alice again, another tab
        alice.goto(url + "/")
        assert axe_violations(alice) == []         # no serious or critical violation
        screenshot(alice, "dashboard-wide")        # .artifacts/browser/dashboard-wide.png
        assert_clean(alice)    # no console error or warning (CSP violations are errors)
                               # and no page error so far

Problems: every console message of level error or warning and every uncaught page error,
on every page of the session's contexts (popups included). A Content-Security-Policy
violation is one of them: Chromium reports it through the DevTools `Log` domain (source
"security", level error) and Playwright delivers those as console errors ("Executing
inline script violates the following Content Security Policy directive ..."); the
self-tests in tests/integration/test_browserkit.py check that this stays so. A page's own
answer being a 4xx/5xx (a refusal page visited on purpose) is not a problem: the test sees
the status; a sub-resource's failed load is.

axe-core (npm, pinned in tests/axe/package-lock.json, `make axe`) is evaluated through the
DevTools protocol (`page.evaluate`), which the page's CSP does not govern, so it runs on a
page with `script-src 'self'` and adds no violation of its own (an injected <script> tag
would be refused).

The browser is `SEGWATCH_CHROMIUM`, else `chromium` or `chromium-browser` on PATH
(`make chromium`). Without it, Playwright (the dev extra) or axe-core the tests skip; with
CI=true they fail. Screenshots go to SEGWATCH_ARTIFACTS, default `.artifacts/browser`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tests.realdeps import missing

if TYPE_CHECKING:
    from playwright.sync_api import Browser as PlaywrightBrowser
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page, ViewportSize, WebError

REPO = Path(__file__).resolve().parents[1]
AXE = REPO / "tests" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORTS: dict[str, ViewportSize] = {
    "wide": {"width": 1280, "height": 800},
    "narrow": {"width": 390, "height": 844},
}
Viewport = Literal["wide", "narrow"]
TIMEOUT_MS = 15_000
"""Default bound of every Playwright navigation and action (and of the browser's start)."""
START_SECONDS = 15.0
"""How long serve_app waits for the app to answer."""
AXE_TIMEOUT_MS = 30_000
AXE_NODES = 5
"""Offending elements reported per axe violation (the count says how many in all)."""
IMPACTS = ("serious", "critical")
CHROMIUM_ARGS = [
    # /dev/shm is 64 MB in a default container: Chromium's renderers would crash there.
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
]


# -- Finding what the tests need ------------------------------------------------------


def chromium_executable() -> str:
    """The Chromium binary: SEGWATCH_CHROMIUM, else chromium or chromium-browser on PATH.
    Skips the test (fails it under CI=true) when there is none."""
    configured = os.environ.get("SEGWATCH_CHROMIUM")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            missing("Chromium", f"SEGWATCH_CHROMIUM={configured} is not an executable file")
        return configured
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("Chromium", "no chromium or chromium-browser on PATH (make chromium: "
                "Debian's package), nor SEGWATCH_CHROMIUM")
    assert found is not None
    return found


def axe_source() -> str:
    """axe-core's script. Skips (fails under CI=true) when it is not installed."""
    if not AXE.is_file():
        missing("axe-core", f"{AXE.relative_to(REPO)} is absent (make axe: npm ci in tests/axe)")
    return AXE.read_text(encoding="utf-8")


def artifacts_dir() -> Path:
    """Where screenshots go: SEGWATCH_ARTIFACTS, else <repo>/.artifacts/browser (made)."""
    folder = Path(os.environ.get("SEGWATCH_ARTIFACTS") or REPO / ".artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- Serving an app ---------------------------------------------------------------------


@contextmanager
def serve_app(app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto",
              timeout: float = START_SECONDS) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn from a background thread on 127.0.0.1 and a free
    port; yield its base URL ("http://127.0.0.1:PORT") once it answers HTTP (at most
    `timeout` seconds, else RuntimeError); stop it at exit.

    The socket is bound before the thread starts, so no other process can take the port
    between choosing and listening (the same way daemon.runtime.health.HealthServer
    serves the product's API)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan=lifespan))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the waiting test, not lost in a thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"serve_app {url}", daemon=True)
    thread.start()
    try:
        _wait_until_answering(url, server, thread, failure, timeout)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():  # a connection kept open: close it without waiting
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


def _wait_until_answering(url: str, server: Any, thread: threading.Thread,
                          failure: list[BaseException], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if failure or not thread.is_alive():
            raise RuntimeError(f"the app at {url} stopped while starting: {failure!r}")
        if server.started:
            try:
                with urllib.request.urlopen(url + "/", timeout=2):  # noqa: S310 (loopback)
                    return
            except urllib.error.HTTPError:  # any HTTP answer, 404 included, is an answer
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app at {url} did not answer within {timeout} s")
        time.sleep(0.02)


# -- The browser ------------------------------------------------------------------------


_PROBLEMS: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()
_SESSIONS: weakref.WeakKeyDictionary[Page, Browser] = weakref.WeakKeyDictionary()


@dataclass
class Browser:
    """One headless Chromium. Each `new_context` is a person (cookies and storage of its
    own); every page of those contexts, popups included, has its problems collected."""

    browser: PlaywrightBrowser
    artifacts: Path
    contexts: list[BrowserContext] = field(default_factory=list)

    def new_context(self, viewport: Viewport = "wide", **options: Any) -> BrowserContext:
        """A new context (a person) whose pages are `viewport` sized; `options` go to
        Playwright's `new_context` (e.g. locale, base_url). CSP is never bypassed."""
        if options.get("bypass_csp"):
            raise ValueError("bypass_csp would hide the CSP violations the tests look for")
        context = self.browser.new_context(viewport=VIEWPORTS[viewport],
                                           accept_downloads=True, **options)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        self._adopt(context)
        return context

    def new_page(self, viewport: Viewport = "wide",
                 context: BrowserContext | None = None) -> Page:
        """A page in `context`, else in a new context of its own (a new person)."""
        if context is not None:
            self._adopt(context)
        page = (context or self.new_context(viewport)).new_page()
        self._watch(page)
        return page

    def _adopt(self, context: BrowserContext) -> None:
        # Listening on the context, not on each page: a popup's first messages arrive
        # before a listener added from the context's "page" event would be.
        if context in self.contexts:
            return
        self.contexts.append(context)
        context.on("page", self._watch)  # fires before new_page() returns
        context.on("console", self._console)
        context.on("weberror", self._page_error)

    def _watch(self, page: Page) -> None:
        self._seen(page)

    def _seen(self, page: Page) -> list[str]:
        _SESSIONS.setdefault(page, self)
        return _PROBLEMS.setdefault(page, [])

    def _page_error(self, error: WebError) -> None:
        if error.page is not None:  # an uncaught exception or unhandled rejection
            self._seen(error.page).append(f"page error: {error.error}")

    def _console(self, message: ConsoleMessage) -> None:
        page = message.page
        if page is None or message.type not in ("error", "warning"):
            return  # a worker's message: no page to charge it to
        where = (message.location or {}).get("url", "")
        if where and where == page.url and message.text.startswith("Failed to load resource"):
            return  # the document itself answered 4xx/5xx: a refusal page visited on purpose
        self._seen(page).append(f"console {message.type}: {message.text}"
                                + (f" ({where})" if where and where != page.url else ""))


@contextmanager
def open_browser(artifacts: Path | None = None) -> Iterator[Browser]:
    """Start headless Chromium (closed at exit, with its contexts); screenshots of its
    pages go to `artifacts` (default: artifacts_dir())."""
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright", "the playwright package is not installed (make install: "
                "the dev extra)")
        raise
    folder = artifacts or artifacts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        # chromium_sandbox=False passes --no-sandbox: as root Chromium refuses to start
        # with its sandbox ("Running as root without --no-sandbox is not supported").
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, chromium_sandbox=False,
            timeout=TIMEOUT_MS, args=CHROMIUM_ARGS)
        try:
            yield Browser(chromium, folder)
        finally:
            chromium.close()


# -- What a test asks of a page ---------------------------------------------------------


def problems(page: Page) -> list[str]:
    """The console errors and warnings (CSP violations among them) and page errors of
    `page` so far, in order. The page must come from a Browser of this module."""
    try:
        return list(_PROBLEMS[page])
    except KeyError:
        raise ValueError(f"{page} was not opened through tests.browserkit") from None


def assert_clean(page: Page, ignore: Iterable[str] = ()) -> None:
    """Fail unless `page` has had no problem, apart from those matching a regular
    expression of `ignore`."""
    patterns = [re.compile(pattern) for pattern in ignore]
    found = [p for p in problems(page) if not any(rx.search(p) for rx in patterns)]
    assert not found, f"{page.url}: " + "\n".join(found)


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of `page` as `<artifacts>/<name>.png` (name made file-safe);
    return its path."""
    session = _SESSIONS.get(page)
    folder = session.artifacts if session is not None else artifacts_dir()
    path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


_AXE_RUN = """async ([timeout, limit]) => {
  const results = await Promise.race([
    axe.run(document, {resultTypes: ['violations']}),
    new Promise((_, reject) => setTimeout(
      () => reject(new Error(`axe.run took over ${timeout} ms`)), timeout)),
  ]);
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl, count: v.nodes.length,
    nodes: v.nodes.slice(0, limit).map(n => n.target.map(String).join(' ')),
  }));
}"""


def axe_violations(page: Page, impact: Iterable[str] = IMPACTS) -> list[dict[str, Any]]:
    """Run axe-core's standard rules on `page`'s document and return its violations of
    the given impacts: each {id, impact, help, helpUrl, count, nodes} with at most
    AXE_NODES element selectors in `nodes` and their total in `count`.

    axe is evaluated through the DevTools protocol (not a <script> tag), which the page's
    Content-Security-Policy does not govern: it adds no problem to the page."""
    wanted = set(impact)
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    found: list[dict[str, Any]] = page.evaluate(_AXE_RUN, [AXE_TIMEOUT_MS, AXE_NODES])
    return [v for v in found if v.get("impact") in wanted]
