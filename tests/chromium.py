"""A real browser for the console tests: Debian's Chromium driven by Playwright for
Python through `executable_path` (no browser download), with every console error, page
error and failed request of the pages collected (a Content-Security-Policy violation is a
console error), full-page screenshots kept as artifacts, and axe-core (npm, pinned in
tests/axe/package-lock.json) run in the page for an accessibility smoke check.

The browser is `SEGWATCH_CHROMIUM`, else `chromium` or `chromium-browser` on PATH. Without
it, Playwright or axe-core the tests skip; with CI=true they fail (`make test` installs
all three). Screenshots go to SEGWATCH_ARTIFACTS (default `.artifacts/console`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.realdeps import missing

REPO = Path(__file__).resolve().parents[1]
AXE = REPO / "tests" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORTS = {"wide": {"width": 1280, "height": 800}, "narrow": {"width": 390, "height": 844}}
TIMEOUT_MS = 15_000
IMPACTS = ("serious", "critical")


def chromium_executable() -> str:
    """The Chromium binary (skips, or fails under CI, without one)."""
    found = os.environ.get("SEGWATCH_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if not found:
        missing("chromium", "not installed (make chromium: Debian's package)")
    assert found is not None
    return found


def artifacts() -> Path:
    folder = Path(os.environ.get("SEGWATCH_ARTIFACTS") or REPO / ".artifacts" / "console")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Browser:
    """One Chromium; each `new_page` is a new context (its own cookies: a person)."""

    browser: Any
    seen: list[tuple[str, str]] = field(default_factory=list)
    """(page URL, problem) of every console error, page error and failed request."""

    def new_page(self, viewport: str = "wide") -> Any:
        context = self.browser.new_context(viewport=VIEWPORTS[viewport], accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("console", lambda m: self._console(page, m))
        page.on("pageerror", lambda e: self.seen.append((page.url, f"page error: {e}")))
        page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "") and
                self.seen.append((page.url, f"request failed: {r.url} {r.failure}")))
        page.on("response", lambda r: r.status >= 400 and r.request.resource_type not in (
            "document", "fetch", "xhr") and self.seen.append(
            (page.url, f"HTTP {r.status} for {r.url}")))
        return page

    def _console(self, page: Any, message: Any) -> None:
        if message.type not in ("error", "warning"):
            return
        document = (message.location or {}).get("url") == page.url
        if document and message.text.startswith("Failed to load resource"):
            return  # the page itself answered 4xx on purpose (a refusal page)
        self.seen.append((page.url, f"console {message.type}: {message.text}"))

    def problems(self, origin: str) -> list[str]:
        """What went wrong on pages of `origin` (another site's pages, such as the
        identity provider's, are not this product's to judge)."""
        return [f"{url}: {text}" for url, text in self.seen if url.startswith(origin)]


@contextmanager
def open_browser() -> Iterator[Browser]:
    """Start headless Chromium (stopped at exit)."""
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright", "not installed (make install: the dev extra)")
        raise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, timeout=TIMEOUT_MS,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield Browser(browser)
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page PNG of `page` as an artifact; return its path."""
    path = artifacts() / (re.sub(r"[^A-Za-z0-9._-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any, impacts: tuple[str, ...] = IMPACTS) -> list[dict[str, Any]]:
    """Run axe-core in `page` (evaluated through the DevTools protocol, which the page's
    CSP does not govern) and return its violations of those impacts: id, impact, help
    and up to five offending elements each."""
    if not AXE.is_file():
        missing("axe-core", "not installed (make axe: npm ci in tests/axe)")
    page.evaluate(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))")
    return [v for v in found if v.get("impact") in impacts]
