"""PURE `report.html` of an auditor export package (SPEC §6): one page a person reads.

The page is self-contained: inline CSS only, no scripts, images, fonts or links, and a
Content-Security-Policy that forbids loading anything should a value ever slip through.
Every value from the package is HTML-escaped (addresses and owner refs come from files).

Amounts arrive as base-unit integer strings, as in the CSVs; they are shown in display
units through `format_amount` (integer arithmetic, never a float) with the base units
beside them. Where the decimals of an asset are unknown, base units only.

The liability comparison counts client wallets only (segregated and omnibus): house
wallets hold the firm's own assets, so their balances are shown for information in a
column of their own and never offset a client shortfall. Balances are compared with the
expected amount, not the booked one (SPEC §8): expected = booked (the allocation total) +
in transit (the net of the reconciling items, the transfers booked on one side only at
the pinned block), and difference = on-chain - expected. The items are listed (at most
ITEMS_SHOWN; in_transit.csv has them all) with their age at the package's as-of time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from chains.urls import redact_url
from daemon.export.package import parse_instant
from daemon.rules.amounts import format_amount

Row = Mapping[str, Any]

STATUS_ORDER = ("shortfall", "unreadable", "surplus")
"""A (chain, asset) takes the first of these that any client wallet has, else compliant:
a shortfall is a known breach, an unreadable balance hides one, a surplus breaches nothing."""

_STATUS_CLASSES = {"ok", "compliant", "shortfall", "surplus", "unreadable", "house", "open",
                   "proposed", "critical", "warning", "info", "not-compliant"}
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
_NO_VALUE = "—"

_CSS = """
@page { size: A4 landscape; margin: 12mm; }
body { font: 10pt/1.4 system-ui, sans-serif; color: #111; margin: 1.5em; }
h1 { font-size: 1.6em; margin: 0 0 .3em; }
h2 { font-size: 1.2em; margin: 1.6em 0 .4em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; margin: .4em 0; }
th, td { border: 1px solid #bbb; padding: .25em .45em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, monospace; word-break: break-all; }
.base { display: block; color: #666; font-size: .8em; white-space: normal;
        overflow-wrap: anywhere; }
.status { font-weight: bold; }
.status-ok, .status-compliant { color: #1a6b1a; }
.status-shortfall, .status-critical, .status-unreadable, .status-not-compliant {
  color: #a40000; }
.status-surplus, .status-warning { color: #8a5a00; }
.result { font-size: 1.2em; padding: .3em .6em; border: 2px solid currentColor;
          display: inline-block; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; }
.note { color: #444; font-size: .9em; }
footer { margin-top: 2em; }
code { font-family: ui-monospace, monospace; }
tr { page-break-inside: avoid; }
thead { display: table-header-group; }
@media print { body { margin: 0; } a { color: inherit; text-decoration: none; } }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'"


@dataclass
class _Summary:
    """One (chain, asset) of the liability comparison, accumulated over its wallets."""

    onchain: int = 0
    allocation: int = 0
    moving: int = 0
    """The reconciling items' net (in transit) over the client wallets."""
    house: int | None = 0
    unreadable: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, wallet: Row) -> None:
        onchain = _units(wallet.get("onchain"), "onchain")
        status = _text(wallet.get("status")) or "unreadable"
        if _is_house(wallet):
            self.house = None if onchain is None or self.house is None else self.house + onchain
            return
        if onchain is None:
            status = "unreadable"
            self.unreadable += 1
        else:
            self.onchain += onchain
        self.allocation += _units(wallet.get("allocation_total"), "allocation_total") or 0
        self.moving += _units(wallet.get("in_transit"), "in_transit") or 0
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def status(self) -> str:
        """`compliant`, or the first of STATUS_ORDER any client wallet has."""
        for status in STATUS_ORDER:
            if self.statuses.get(status):
                return status
        unknown = [s for s in self.statuses if s != "ok"]
        return unknown[0] if unknown else "compliant"


def render_report(manifest: Mapping[str, Any], wallets: Sequence[Row],
                  discrepancies: Sequence[Row],
                  decimals: Mapping[tuple[str, str], int],
                  items: Sequence[Row] = ()) -> str:
    """Return the `report.html` of an export package as one self-contained HTML page.

    `manifest` is the package's manifest (its signature may be absent), `wallets`,
    `discrepancies` and `items` the rows of wallets.csv, discrepancies.csv and
    in_transit.csv (strings as in the CSVs), `decimals` the decimals of each (chain,
    asset symbol). Raises ValueError naming the field when an amount is neither empty
    nor a base-unit integer.
    """
    fmt = _Formatter(decimals)
    order = _chain_order(manifest, wallets)
    summaries = _summaries(wallets, order)
    sections = [
        _header(manifest, summaries, discrepancies),
        _summary_section(summaries, fmt),
        _blocks_section(manifest.get("chains") or []),
        _liabilities_section(manifest.get("liabilities") or [], order, fmt),
        _wallets_section(wallets, order, fmt),
        _items_section(items, order, fmt, parse_instant(manifest.get("as_of"))),
        _discrepancies_section(discrepancies, fmt),
        _footer(manifest),
    ]
    title = "segwatch reconciliation report"
    as_of = _text(manifest.get("as_of"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(title)} — as of {_e(as_of)}</title>\n<style>{_CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


class _Formatter:
    """Amount cells in display units with their base units, per (chain, asset)."""

    def __init__(self, decimals: Mapping[tuple[str, str], int]) -> None:
        self._decimals = decimals

    def cell(self, chain: str, asset: str, units: int | None, *, signed: bool = False) -> str:
        """A right-aligned table cell of `units` of `asset` on `chain` ('—' if unknown)."""
        if units is None:
            return f'<td class="num">{_NO_VALUE}</td>'
        sign = "+" if signed and units > 0 else ""
        places = self._decimals.get((chain, asset))
        if places is None:
            return f'<td class="num">{sign}{units}<span class="base">base units</span></td>'
        shown = f"{sign}{format_amount(units, places)}"
        if places == 0:
            return f'<td class="num">{_e(shown)}</td>'
        return (f'<td class="num">{_e(shown)}'
                f'<span class="base">{sign}{units} base units</span></td>')

    def text_cell(self, chain: str, asset: str, text: Any, name: str) -> str:
        """`cell` of a base-unit string field as found in a CSV row."""
        return self.cell(chain, asset, _units(text, name), signed=name == "difference")


def _chain_order(manifest: Mapping[str, Any], wallets: Iterable[Row]) -> dict[str, int]:
    """Chain name → position: the manifest's order, then chains only wallets name."""
    names = [_text(c.get("name")) for c in manifest.get("chains") or []]
    names += sorted({_text(w.get("chain")) for w in wallets} - set(names))
    return {name: i for i, name in enumerate(names)}


def _summaries(wallets: Iterable[Row], order: Mapping[str, int]) -> dict[tuple[str, str], _Summary]:
    """(chain, asset) → its comparison, in chain then asset order."""
    summaries: dict[tuple[str, str], _Summary] = {}
    for wallet in wallets:
        key = (_text(wallet.get("chain")), _text(wallet.get("asset")))
        summaries.setdefault(key, _Summary()).add(wallet)
    return dict(sorted(summaries.items(), key=lambda kv: (order.get(kv[0][0], 0), kv[0][1])))


def _header(manifest: Mapping[str, Any], summaries: Mapping[tuple[str, str], _Summary],
            discrepancies: Sequence[Row]) -> str:
    generator = manifest.get("generator") or {}
    failing = [f"{c} {a}" for (c, a), s in summaries.items() if s.status() != "compliant"]
    result = "compliant" if not failing else "not compliant"
    detail = ("every client wallet holds exactly its expected balance (its allocations "
              "plus the items in transit)") if not failing else "see " + ", ".join(failing)
    ledger = manifest.get("ledger")
    ledger = ledger if isinstance(ledger, Mapping) else {}
    meta = [
        ("As of", _text(manifest.get("as_of"))),
        ("Books cut off at", _text(ledger.get("as_of")) or _NO_VALUE),
        ("Generated at", _text(manifest.get("generated_at"))),
        ("Generator", f"{_text(generator.get('name'))} {_text(generator.get('version'))}"),
        ("Owners pseudonymized", "yes" if manifest.get("pseudonymized") else "no"),
        ("Open discrepancies", str(len(discrepancies))),
    ]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta)
    return (
        "<header>\n<h1>segwatch reconciliation report</h1>\n"
        f'<p><span class="result status {_status_class(result)}">{_e(result)}</span> '
        f"{_e(detail)}</p>\n<dl class=\"meta\">{items}</dl>\n</header>"
    )


def _summary_section(summaries: Mapping[tuple[str, str], _Summary], fmt: _Formatter) -> str:
    rows = []
    for (chain, asset), s in summaries.items():
        known = s.onchain if not s.unreadable else None
        expected = s.allocation + s.moving
        difference = None if known is None else known - expected
        rows.append(
            f"<tr><td>{_e(chain)}</td><td>{_e(asset)}</td>"
            f"{fmt.cell(chain, asset, known)}{fmt.cell(chain, asset, s.allocation)}"
            f"{fmt.cell(chain, asset, s.moving, signed=True)}"
            f"{fmt.cell(chain, asset, expected)}"
            f"{fmt.cell(chain, asset, difference, signed=True)}"
            f"{_status_cell(s.status())}<td>{_e(_counts(s.statuses))}</td>"
            f"{fmt.cell(chain, asset, s.house)}</tr>")
    head = ("chain", "asset", "on-chain (client wallets)", "allocation total (booked)",
            "in transit", "expected", "difference", "status", "client wallets",
            "house wallets (not compared)")
    note = ("<p class=\"note\">On-chain totals add the balances of client wallets "
            "(segregated and omnibus) at the pinned block. Expected is the allocation total "
            "(booked) plus the reconciling items in transit at the pinned block (listed "
            "below); the difference is on-chain minus expected. A (chain, asset) is "
            "compliant when every client wallet holds exactly its expected balance; a "
            "surplus in one wallet never offsets a shortfall in another. House wallets "
            "hold the firm's own assets: their balances are shown for information and "
            "excluded from the comparison. "
            "Where a client wallet could not be read, the total is unknown (—).</p>")
    return _section("Client assets against allocations", head, rows, note)


def _blocks_section(chains: Sequence[Row]) -> str:
    rows = []
    for chain in chains:
        block = chain.get("block") or {}
        network = chain.get("chain_id") if chain.get("chain_id") is not None \
            else chain.get("network")
        sources = "<br>".join(_e(redact_url(_text(s))) for s in chain.get("sources") or [])
        rows.append(
            f"<tr><td>{_e(chain.get('name'))}</td><td>{_e(chain.get('family'))}</td>"
            f"<td>{_e(network)}</td><td class=\"num\">{_e(block.get('height'))}</td>"
            f"<td class=\"mono\">{_e(block.get('hash'))}</td>"
            f"<td>{_e(_block_time(block.get('timestamp')))}</td>"
            f"<td class=\"mono\">{sources or _NO_VALUE}</td></tr>")
    head = ("chain", "family", "chain id / network", "height", "block hash", "block time",
            "sources")
    note = "<p class=\"note\">Every balance of a chain was read at its pinned block.</p>"
    return _section("Pinned blocks", head, rows, note)


def _liabilities_section(liabilities: Sequence[Row], order: Mapping[str, int],
                         fmt: _Formatter) -> str:
    rows = []
    for item in sorted(liabilities, key=lambda i: (order.get(_text(i.get("chain")), 0),
                                                   _text(i.get("asset")))):
        chain, asset = _text(item.get("chain")), _text(item.get("asset"))
        rows.append(
            f"<tr><td>{_e(chain)}</td><td>{_e(asset)}</td>"
            f"{fmt.text_cell(chain, asset, item.get('total'), 'total')}"
            f"<td class=\"num\">{_e(item.get('leaves'))}</td>"
            f"<td class=\"mono\">{_e(item.get('root'))}</td></tr>")
    head = ("chain", "asset", "liabilities total", "leaves", "Merkle-sum root")
    note = ("<p class=\"note\">Each root commits to every allocation line of allocations.csv "
            "and to their total; an owner checks their own line with "
            "<code>segwatch export proof DIR --owner OWNER</code>.</p>")
    return _section("Liabilities (Merkle-sum roots)", head, rows, note)


def _wallets_section(wallets: Sequence[Row], order: Mapping[str, int], fmt: _Formatter) -> str:
    def key(w: Row) -> tuple[int, str, bool, str]:
        chain = _text(w.get("chain"))
        return order.get(chain, 0), _text(w.get("asset")), _is_house(w), _text(w.get("address"))

    rows = []
    for w in sorted(wallets, key=key):
        chain, asset = _text(w.get("chain")), _text(w.get("asset"))
        rows.append(
            f"<tr><td>{_e(chain)}</td><td>{_e(w.get('network'))}</td>"
            f"<td class=\"mono\">{_e(w.get('address'))}</td><td>{_e(w.get('structure'))}</td>"
            f"<td>{_e(asset)}</td>{fmt.text_cell(chain, asset, w.get('onchain'), 'onchain')}"
            f"{fmt.text_cell(chain, asset, w.get('allocation_total'), 'allocation_total')}"
            f"{fmt.text_cell(chain, asset, w.get('in_transit'), 'in_transit')}"
            f"{fmt.text_cell(chain, asset, w.get('expected'), 'expected')}"
            f"{fmt.text_cell(chain, asset, w.get('difference'), 'difference')}"
            f"{_status_cell(_text(w.get('status')))}</tr>")
    head = ("chain", "chain id / network", "address", "structure", "asset", "on-chain",
            "allocation total (booked)", "in transit", "expected", "difference", "status")
    note = ("<p class=\"note\">Expected is the allocation total plus the reconciling items "
            "(below) at the pinned block; the difference is on-chain minus expected.</p>")
    return _section("Wallets", head, rows, note)


ITEMS_SHOWN = 1000
"""The report lists at most this many reconciling items; in_transit.csv has them all."""


def _items_section(items: Sequence[Row], order: Mapping[str, int], fmt: _Formatter,
                   as_of: datetime | None) -> str:
    """The reconciling items (SPEC §8): transfers booked on one side only, by chain (the
    manifest's order), at most ITEMS_SHOWN of them; their age is at the as-of time."""
    ordered = sorted(items, key=lambda i: order.get(_text(i.get("chain")), len(order)))
    rows = []
    for item in ordered[:ITEMS_SHOWN]:
        chain, asset = _text(item.get("chain")), _text(item.get("asset"))
        when = parse_instant(item.get("block_time"))
        shown = when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else _text(item.get("block_time"))
        age = _age(as_of - when) if when and as_of else _NO_VALUE
        rows.append(
            f"<tr><td>{_e(chain)}</td><td class=\"mono\">{_e(item.get('address'))}</td>"
            f"<td class=\"mono\">{_e(item.get('tx_hash') or _NO_VALUE)}</td>"
            f"<td>{_e(item.get('what'))}</td><td>{_e(item.get('direction'))}</td>"
            f"<td>{_e(asset)}</td>{fmt.text_cell(chain, asset, item.get('amount'), 'amount')}"
            f"<td class=\"num\">{_e(item.get('block'))}</td><td>{_e(shown or _NO_VALUE)}</td>"
            f"<td class=\"num\">{_e(age)}</td><td>{_e(item.get('side'))}</td></tr>")
    more = len(ordered) - len(rows)
    counts = ", ".join(f"{chain} {n}" for chain, n in _per_chain(ordered, order))
    note = ("<p class=\"note\">Transfers the chain has and the books not yet (unbooked), "
            "or the books have and the pinned block not yet (ahead, or removed by a reorg: "
            "reorged); each explains part of the difference between the booked and the "
            "expected balance. The age is counted from the block time to the as-of time."
            + (f" Items per chain: {_e(counts)}." if counts else "")
            + "</p>" + (f"\n<p class=\"note more\">{more} more are not shown here: "
                        "in_transit.csv lists them all.</p>" if more > 0 else ""))
    head = ("chain", "wallet", "transaction", "what", "direction", "asset", "amount",
            "block", "block time", "age", "side")
    return _section("Reconciling items (in transit)", head, rows, note)


def _discrepancies_section(discrepancies: Sequence[Row], fmt: _Formatter) -> str:
    if not discrepancies:
        return "<section>\n<h2>Open discrepancies</h2>\n<p>None.</p>\n</section>"
    rows = []
    for d in discrepancies:
        chain, asset = _text(d.get("chain")), _text(d.get("asset"))
        amounts = "".join(fmt.text_cell(chain, asset, d.get(name), name)
                          for name in ("onchain", "ledger", "in_transit", "expected",
                                       "difference"))
        tx_hash = d.get("tx_hash") or _NO_VALUE
        rows.append(
            f"<tr><td>{_e(d.get('id'))}</td><td>{_e(d.get('type'))}</td>"
            f"{_status_cell(_text(d.get('severity')))}<td>{_e(d.get('status'))}</td>"
            f"<td>{_e(chain)}</td><td class=\"mono\">{_e(d.get('address'))}</td>"
            f"<td>{_e(asset)}</td>{amounts}<td class=\"mono\">{_e(tx_hash)}</td>"
            f"<td>{_e(d.get('detected_at'))}</td><td>{_e(d.get('cure_deadline'))}</td></tr>")
    head = ("id", "type", "severity", "status", "chain", "address", "asset", "on-chain",
            "ledger (booked)", "in transit", "expected", "difference", "transaction",
            "detected at", "cure deadline")
    note = ("<p class=\"note\">For a balance finding, expected is the booked amount plus "
            "the items in transit when it was last seen, and the difference is on-chain "
            "minus expected.</p>")
    return _section("Open discrepancies", head, rows, note)


def _footer(manifest: Mapping[str, Any]) -> str:
    signer = manifest.get("signer") or {}
    fingerprint = _e(signer.get("fingerprint")) if isinstance(signer, Mapping) else ""
    signed = (f"<code>manifest.sig</code> is an Ed25519 signature over its exact bytes by "
              f"the key with fingerprint <code class=\"mono\">{fingerprint}</code>: trust "
              "the package only if that is the key you expect from its issuer."
              if fingerprint else "The signature is in manifest.sig.")
    return (
        "<footer>\n<h2>How to verify</h2>\n"
        "<p>This page is a summary; the package's files are the evidence. "
        "<code>manifest.json</code> holds the SHA-256 of every file (this one included), "
        f"the pinned blocks and the Merkle roots. {signed}</p>\n"
        "<p>Run <code>segwatch export verify DIR --fingerprint HEX</code> to check the "
        "signer, the hashes, the signature "
        "and the Merkle roots, and <code>segwatch export verify DIR --recheck</code> to "
        "re-read every balance from the chain at the pinned blocks.</p>\n</footer>"
    )


def _section(title: str, head: Sequence[str], rows: Sequence[str], note: str) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "\n".join(rows) or f'<tr><td colspan="{len(head)}">None.</td></tr>'
    return (f"<section>\n<h2>{_e(title)}</h2>\n{note}\n<table>\n<thead><tr>{header}</tr></thead>"
            f"\n<tbody>\n{body}\n</tbody>\n</table>\n</section>")


def _is_house(wallet: Row) -> bool:
    """House wallets are left out of the comparison; any other structure is compared."""
    return _text(wallet.get("structure")) == "house"


def _status_cell(status: str) -> str:
    return f'<td class="status {_status_class(status)}">{_e(status or _NO_VALUE)}</td>'


def _status_class(status: str) -> str:
    """A CSS class from a fixed set, whatever the row says."""
    word = status.replace(" ", "-")
    return f"status-{word}" if word in _STATUS_CLASSES else "status-other"


def _counts(statuses: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none"


def _block_time(timestamp: Any) -> str:
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        return _NO_VALUE
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _per_chain(items: Sequence[Row], order: Mapping[str, int]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for item in items:
        chain = _text(item.get("chain"))
        counts[chain] = counts.get(chain, 0) + 1
    return sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))


def _age(elapsed: timedelta) -> str:
    """`elapsed` in its two largest units: '3d 4h', '2h 5m', '4m 10s', '12s' (a negative
    one, from a clock ahead of the as-of time, keeps its sign)."""
    seconds = int(elapsed.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    return f"{sign}{minutes}m {secs}s" if minutes else f"{sign}{secs}s"


def _units(value: Any, name: str) -> int | None:
    """Base units of a CSV amount; None when empty. Raises ValueError naming `name`."""
    text = _text(value).strip()
    if not text:
        return None
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{name}: not a base-unit integer: {text[:40]!r}")
    return int(text)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _e(value: Any) -> str:
    return escape(_text(value), quote=True)
