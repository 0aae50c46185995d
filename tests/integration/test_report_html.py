"""report.html (SPEC §6): rendered by a real headless Chromium from Debian's packages,
whose DOM must show the key figures; the page loads nothing from anywhere.

The pure checks (escaping, no external assets, the house-wallet rule) live here too,
beside the browser test: they need no browser and always run. The browser is
`SEGWATCH_CHROMIUM`, else `chromium` or `chromium-browser` on PATH; without one the
browser test skips, and with CI=true it fails (`make chromium` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from daemon.export.report import render_report
from tests.realdeps import missing

BROWSER_TIMEOUT = 90.0
SUMMARY, BLOCKS, LIABILITIES = ("Client assets against allocations", "Pinned blocks",
                                "Liabilities (Merkle-sum roots)")
WALLET_TABLE, OPEN = "Wallets", "Open discrepancies"
PAYLOAD = '"><script>alert(1)</script>'
ETH = 10**18
ETH_A = "0x1111111111111111111111111111111111111111"
ETH_B = "0x2222222222222222222222222222222222222222"
ETH_HOUSE = "0x3333333333333333333333333333333333333333"
BTC_A = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"

MANIFEST: dict[str, Any] = {
    "generated_at": "2024-06-01T12:00:05Z",
    "as_of": "2024-06-01T12:00:00Z",
    "generator": {"name": "segwatch", "version": "0.1.0"},
    "pseudonymized": True,
    "chains": [
        {"name": "ethereum", "family": "evm", "chain_id": 1, "network": None,
         "block": {"height": 19876543, "hash": "0x" + "ab" * 32, "timestamp": 1717243200},
         "sources": ["https://***@eth.example/v3/***"]},
        {"name": "bitcoin", "family": "utxo", "chain_id": None, "network": "mainnet",
         "block": {"height": 842000, "hash": "00" * 4 + "cd" * 28, "timestamp": 1717243100},
         "sources": ["https://esplora.example/api"]},
    ],
    "liabilities": [
        {"chain": "bitcoin", "asset": "BTC", "root": "e" * 64, "total": "50000000", "leaves": 2},
        {"chain": "ethereum", "asset": "ETH", "root": "f" * 64, "total": str(1575 * ETH // 100),
         "leaves": 3},
        {"chain": "ethereum", "asset": "USDC", "root": "a" * 64, "total": "1500250000",
         "leaves": 1},
    ],
}


def wallet(chain: str, network: str, address: str, structure: str, asset: str,
           onchain: int | None, allocation: int, status: str,
           in_transit: int = 0) -> dict[str, str]:
    """A wallets.csv line: booked (allocation_total) + in_transit = expected; difference
    = onchain - expected."""
    expected = allocation + in_transit
    difference = "" if onchain is None else str(onchain - expected)
    return {"chain": chain, "network": network, "address": address, "structure": structure,
            "asset": asset, "onchain": "" if onchain is None else str(onchain),
            "allocation_total": str(allocation), "in_transit": str(in_transit),
            "expected": str(expected), "difference": difference, "status": status}


WALLETS = [
    wallet("ethereum", "1", ETH_A, "segregated", "ETH", 125 * ETH // 10, 125 * ETH // 10, "ok"),
    wallet("ethereum", "1", ETH_A, "segregated", "USDC", 1500250000, 1500250000, "ok"),
    wallet("ethereum", "1", ETH_B, "omnibus", "ETH", 3 * ETH, 325 * ETH // 100, "shortfall"),
    wallet("ethereum", "1", ETH_B, "omnibus", "USDC", 0, 0, "ok"),
    wallet("ethereum", "1", ETH_HOUSE, "house", "ETH", 100 * ETH, 0, "house"),
    wallet("bitcoin", "mainnet", BTC_A, "segregated", "BTC", 50000000, 50000000, "ok"),
    wallet("bitcoin", "mainnet", "bc1q" + PAYLOAD, "house", "BTC", 7, 0, "house"),
]

DISCREPANCIES = [
    {"id": "17", "type": "balance_shortfall", "severity": "critical", "status": "open",
     "chain": "ethereum", "address": ETH_B, "asset": "ETH", "onchain": str(3 * ETH),
     "ledger": str(325 * ETH // 100), "difference": str(-25 * ETH // 100), "tx_hash": "",
     "detected_at": "2024-06-01T11:58:00Z", "cure_deadline": "2024-06-03T11:58:00Z"},
]

DECIMALS = {("ethereum", "ETH"): 18, ("ethereum", "USDC"): 6, ("bitcoin", "BTC"): 8}

EXTERNAL = re.compile(r"""\b(?:src|href|action|srcset|poster|data)\s*=|url\s*\(|@import|"""
                      r"""<\s*(?:script|link|img|iframe|object|embed|base|meta\s+http-equiv=.refresh)""",
                      re.IGNORECASE)


class Tables(HTMLParser):
    """The rows of every table, as lists of cell texts, under their section's heading;
    and all visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._heading: list[str] | None = None
        self._section = ""
        self._cell: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "h2":
            self._heading = []
        elif tag == "tr":
            self.sections.setdefault(self._section, []).append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag == "h2" and self._heading is not None:
            self._section, self._heading = "".join(self._heading).strip(), None
        elif tag in ("td", "th") and self._cell is not None:
            self.sections[self._section][-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text.append(data)
        for part in (self._heading, self._cell):
            if part is not None:
                part.append(data)

    def row(self, section: str, *first: str) -> list[str]:
        """The one row of `section` whose first cells are `first`."""
        found = [r for r in self.sections.get(section, []) if tuple(r[:len(first)]) == first]
        assert len(found) == 1, (section, first, found)
        return found[0]


def parse(html: str) -> Tables:
    tables = Tables()
    tables.feed(html)
    tables.close()
    return tables


def shown(cell: str) -> str:
    """The display amount of an amount cell (its base units follow on the next line)."""
    return cell.split()[0]


def render(**overrides: Any) -> str:
    args: dict[str, Any] = {"manifest": MANIFEST, "wallets": WALLETS,
                            "discrepancies": DISCREPANCIES, "decimals": DECIMALS}
    return render_report(**{**args, **overrides})


# --- pure -------------------------------------------------------------------------------
def test_the_page_references_nothing_outside_itself() -> None:
    """No src/href/url()/@import or loading element; a CSP forbids loads anyway."""
    html = render()
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "default-src 'none'" in html
    assert "<script" not in html.lower()


def test_values_from_files_are_escaped() -> None:
    """A `<script>` in an address is shown as text, never as markup."""
    html = render()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;" in html
    assert PAYLOAD in "".join(parse(html).text)


def test_summary_compares_client_wallets_only() -> None:
    """House balances are shown apart and never counted against client allocations."""
    tables = parse(render())
    eth = tables.row(SUMMARY, "ethereum", "ETH")
    assert [shown(c) for c in eth[2:7]] == ["15.5", "15.75", "0", "15.75", "-0.25"]
    assert eth[7] == "shortfall"
    assert shown(eth[9]) == "100"
    assert tables.row(SUMMARY, "bitcoin", "BTC")[7] == "compliant"


def test_an_unreadable_client_wallet_makes_the_total_unknown() -> None:
    """With one client balance unreadable, the total and difference are '—' and the
    status is unreadable, not compliant."""
    wallets = [*WALLETS[:5],
               wallet("bitcoin", "mainnet", BTC_A, "segregated", "BTC", None, 50000000,
                      "unreadable")]
    btc = parse(render(wallets=wallets)).row(SUMMARY, "bitcoin", "BTC")
    assert (btc[2], btc[6], btc[7]) == ("—", "—", "unreadable")
    assert shown(btc[3]) == "0.5"


def test_no_discrepancies_says_none() -> None:
    tables = parse(render(discrepancies=[]))
    assert OPEN in tables.text
    assert OPEN not in tables.sections
    assert "None." in tables.text


def test_an_amount_that_is_not_an_integer_is_refused() -> None:
    bad = [{**WALLETS[0], "onchain": "1.5e18"}]
    with pytest.raises(ValueError, match="onchain"):
        render(wallets=bad)


# --- real browser -----------------------------------------------------------------------
def find_chromium() -> str | None:
    configured = os.environ.get("SEGWATCH_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(browser: str, page: Path, home: Path) -> str:
    """The DOM headless Chromium builds from `page`, serialized."""
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
               f"--user-data-dir={home / 'profile'}", "--no-first-run",
               "--disable-dev-shm-usage", "--disable-extensions",
               "--dump-dom", page.as_uri()]
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=BROWSER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT:.0f} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_chromium_renders_the_key_figures(tmp_path: Path) -> None:
    """A real headless Chromium shows the totals in display units, the pinned heights,
    the statuses and the open discrepancy, and runs no injected script."""
    browser = find_chromium()
    if browser is None:
        missing("chromium", "not found: `apt-get install chromium` or set SEGWATCH_CHROMIUM")
        return
    page = tmp_path / "report.html"
    page.write_text(render(), encoding="utf-8")
    dom = dump_dom(browser, page, tmp_path)

    assert "<script" not in dom.lower()
    tables = parse(dom)
    text = " ".join(" ".join(tables.text).split())
    assert "not compliant" in text
    assert PAYLOAD in text

    eth = tables.row(SUMMARY, "ethereum", "ETH")
    assert [shown(c) for c in eth[2:7]] + [eth[7]] == ["15.5", "15.75", "0", "15.75", "-0.25",
                                                       "shortfall"]
    usdc = tables.row(SUMMARY, "ethereum", "USDC")
    assert [shown(c) for c in (usdc[2], usdc[3], usdc[6])] + [usdc[7]] == [
        "1500.25", "1500.25", "0", "compliant"]
    assert "1500250000 base units" in usdc[2]
    btc = tables.row(SUMMARY, "bitcoin", "BTC")
    assert [shown(c) for c in (btc[2], btc[3], btc[6])] + [btc[7]] == [
        "0.5", "0.5", "0", "compliant"]

    assert tables.row(BLOCKS, "ethereum", "evm")[3] == "19876543"
    assert tables.row(BLOCKS, "bitcoin", "utxo")[3] == "842000"
    assert tables.row(BLOCKS, "ethereum", "evm")[5] == "2024-06-01 12:00:00 UTC"

    roots = tables.row(LIABILITIES, "ethereum", "ETH")
    assert (shown(roots[2]), roots[3], roots[4]) == ("15.75", "3", "f" * 64)

    issue = tables.row(OPEN, "17", "balance_shortfall")
    assert issue[2:4] == ["critical", "open"]
    assert shown(issue[11]) == "-0.25"
    wallet_row = tables.row(WALLET_TABLE, "ethereum", "1", ETH_B, "omnibus", "ETH")
    assert [shown(c) for c in (wallet_row[5], wallet_row[6], wallet_row[9])] + [
        wallet_row[10]] == ["3", "3.25", "-0.25", "shortfall"]
    assert "segwatch export verify DIR" in text


def test_the_reconciling_items_are_listed_and_escaped() -> None:
    """The report lists each reconciling item (wallet, transaction, what, direction,
    amount in display units, block, block time, side); text from outside is escaped."""
    item = {"chain": "ethereum", "address": "<b>0xabc</b>", "asset": "ETH",
            "what": "transfer", "direction": "out", "amount": str(3 * 10**17),
            "side": "unbooked", "block": "7", "block_time": "2026-12-05T00:43:34+00:00",
            "tx_hash": "0x2a80"}
    page = render(items=[item])
    section = page[page.index("Reconciling items (in transit)"):]
    assert "&lt;b&gt;0xabc&lt;/b&gt;" in section and "<b>0xabc" not in page
    assert "0.3" in section and "unbooked" in section and "0x2a80" in section
    assert "None." in render()[render().index("Reconciling items"):].split("</section>")[0]


ITEMS = "Reconciling items (in transit)"


def item(chain: str, address: str, asset: str, amount: int, *, side: str = "unbooked",
         direction: str = "out", block: int = 7, block_time: str = "2024-06-01T11:00:00+00:00",
         tx_hash: str = "0x2a80", what: str = "transfer") -> dict[str, str]:
    """An in_transit.csv line."""
    return {"chain": chain, "address": address, "asset": asset, "what": what,
            "direction": direction, "amount": str(amount), "side": side, "block": str(block),
            "block_time": block_time, "tx_hash": tx_hash}


def test_an_item_row_shows_wallet_transaction_direction_amount_block_time_and_age() -> None:
    """One row per item: wallet, transaction, what, direction, asset, the amount in display
    units (base units beside), block, block time, its age at the as-of time and side."""
    withdrawal = item("ethereum", ETH_A, "ETH", 3 * ETH // 10, block=19876540,
                      block_time="2024-06-01T10:54:30+00:00")
    row = parse(render(items=[withdrawal])).row(ITEMS, "ethereum", ETH_A)
    assert row[2:6] == ["0x2a80", "transfer", "out", "ETH"]
    assert shown(row[6]) == "0.3" and "300000000000000000 base units" in row[6]
    assert row[7:] == ["19876540", "2024-06-01 10:54:30 UTC", "1h 5m", "unbooked"]
    days = item("bitcoin", BTC_A, "BTC", 1, block_time="2024-05-29T09:59:00Z", side="ahead")
    assert parse(render(items=[days])).row(ITEMS, "bitcoin", BTC_A)[9:] == ["3d 2h", "ahead"]


def test_items_are_listed_by_chain_in_the_manifest_order_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Items follow the manifest's chain order; past ITEMS_SHOWN rows the page says how
    many more there are (in_transit.csv has them all)."""
    from daemon.export import report

    items = [item("bitcoin", BTC_A, "BTC", n + 1, tx_hash=f"btc{n}") for n in range(3)] + \
        [item("ethereum", ETH_A, "ETH", n + 1, tx_hash=f"eth{n}") for n in range(3)]
    tables = parse(render(items=items))
    assert [r[0] for r in tables.sections[ITEMS][1:]] == ["ethereum"] * 3 + ["bitcoin"] * 3
    assert "Items per chain: ethereum 3, bitcoin 3." in " ".join(" ".join(tables.text).split())
    monkeypatch.setattr(report, "ITEMS_SHOWN", 4)
    tables = parse(render(items=items))
    assert len(tables.sections[ITEMS]) == 1 + 4
    assert "2 more are not shown here" in " ".join(tables.text)


def test_untrusted_item_text_is_escaped() -> None:
    """Every text of an item line (wallet, transaction, what, side, a block time that is
    not a time) is shown as text, never as markup."""
    hostile = item("ethereum", ETH_A, "ETH", 1, tx_hash=PAYLOAD, what=PAYLOAD, side=PAYLOAD,
                   block_time=PAYLOAD, direction=PAYLOAD)
    html = render(items=[hostile])
    assert "<script>" not in html
    row = parse(html).row(ITEMS, "ethereum", ETH_A)
    assert row[2] == row[3] == row[4] == row[8] == row[10] == PAYLOAD
    assert row[9] == "—"


def test_the_summary_compares_on_chain_with_booked_plus_in_transit() -> None:
    """A client wallet whose 0.3 ETH withdrawal is mined but not yet booked holds 0.3 less
    than its allocations and is compliant: expected = booked + in transit, and the summary's
    difference is on-chain minus expected. The header names the books' cut-off."""
    wallets = [wallet("ethereum", "1", ETH_A, "segregated", "ETH", 122 * ETH // 10,
                      125 * ETH // 10, "ok", in_transit=-3 * ETH // 10), *WALLETS[1:2]]
    manifest = {**MANIFEST, "ledger": {"snapshot": 4, "as_of": "2024-06-01T10:00:00+00:00"}}
    tables = parse(render(manifest=manifest, wallets=wallets, discrepancies=[],
                          items=[item("ethereum", ETH_A, "ETH", 3 * ETH // 10)]))
    eth = tables.row(SUMMARY, "ethereum", "ETH")
    assert [shown(c) for c in eth[2:7]] + [eth[7]] == ["12.2", "12.5", "-0.3", "12.2", "0",
                                                       "compliant"]
    row = tables.row(WALLET_TABLE, "ethereum", "1", ETH_A, "segregated", "ETH")
    assert [shown(c) for c in row[5:10]] + [row[10]] == ["12.2", "12.5", "-0.3", "12.2", "0",
                                                         "ok"]
    text = " ".join(" ".join(tables.text).split())
    assert "Books cut off at 2024-06-01T10:00:00+00:00" in text
    assert "compliant every client wallet holds exactly its expected balance" in text
