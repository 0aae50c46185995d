"""The console's review pages (SPEC §10): the dashboard, the exceptions and an
exception's page with its maker-checker actions, wallet search and a wallet's page with a
live spot check. Handlers parse the query, call the service, render; authorization is
the service's (daemon/auth/policy.py), the templates only leave out what a role may not
do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from chains.addresses import canonical_address
from chains.errors import InvalidAddress, SegwatchError
from chains.types import Address
from daemon.errors import InputError
from daemon.rules.reconcile import SEVERITY
from daemon.rules.transit import adjustments
from daemon.rules.workflow import REASON_CODES
from daemon.runtime.health import Statuses
from daemon.service import Service
from daemon.status import ChainStatus, overall
from daemon.store import models as m
from daemon.store.console import SEVERITY_ORDER, SORTS, Filters, Sort
from daemon.web.pages import Pages
from daemon.web.session import PostedForm, SignedInViewer, Viewer, text

PER_PAGE = 50
REFRESH_SECONDS = 30
STATUS_FILTERS = {"active": m.OPEN_STATUSES, "open": ("open",), "proposed": ("proposed",),
                  "resolved": ("resolved",), "self_cleared": ("self_cleared",),
                  "voided": ("voided",), "all": ()}


@dataclass(frozen=True, slots=True)
class AssetLine:
    """One chain and asset on the dashboard."""

    chain: str
    asset: str
    onchain: int | None
    """None until every ledger wallet's balance of the asset was read."""
    unreadable: int
    booked: int
    in_transit: int
    items: int

    @property
    def expected(self) -> int:
        return self.booked + self.in_transit

    @property
    def difference(self) -> int | None:
        return None if self.onchain is None else self.onchain - self.expected


def dashboard_lines(service: Service, current: list[ChainStatus]) -> list[AssetLine]:
    """Per chain and asset: on-chain total of the newest reads, booked total, the
    reconciling items' net and count (at each chain's last cycle block)."""
    lines = []
    by_chain = {s.chain: s for s in current}
    for chain in service.settings.chains:
        status = by_chain.get(chain.name)
        wallets = service.store.ledger_view(chain.name).wallets.values()
        read = {t.asset: t for t in service.store.onchain_totals(chain.name)}
        moving: dict[str, int] = defaultdict(int)
        counts: dict[str, int] = defaultdict(int)
        for (_, asset), delta in adjustments(status.items if status else []).items():
            moving[asset] += delta
        for item in status.items if status else []:
            counts[item.movement.asset] += 1
        symbols = [a.symbol for a in chain.assets]
        symbols += sorted(set(read) - set(symbols))
        for symbol in symbols:
            total = read.get(symbol)
            booked = sum(w.ledger_total(symbol) for w in wallets)
            if total is None and not booked:
                continue
            complete = total is not None and total.unreadable == 0
            lines.append(AssetLine(chain.name, symbol, total.total if complete and total
                                   else None, total.unreadable if total else 0, booked,
                                   moving[symbol], counts[symbol]))
    return lines


def routes(router: APIRouter, service: Service, pages: Pages, statuses: Statuses) -> None:
    """Add the review pages to `router`."""

    @router.get("/", response_class=HTMLResponse)
    def dashboard(request: Request, viewer: SignedInViewer) -> Response:
        service.identity.require(viewer.principal, "read", "the dashboard")
        current = statuses.get()
        now = service.now()
        severities: dict[str, dict[str, int]] = defaultdict(dict)
        nearest = None
        for s in service.store.severity_counts(now):
            severities[s.chain][s.severity] = s.count
            if s.nearest_deadline and (nearest is None or s.nearest_deadline < nearest):
                nearest = s.nearest_deadline
        return pages.render(
            request, "dashboard.html", viewer, overall=overall(current), chains=current,
            doubts={s.chain: _doubt(s) for s in current},
            lines=dashboard_lines(service, current), severities=severities,
            severity_order=SEVERITY_ORDER, nearest=nearest,
            nearest_left=None if nearest is None else (nearest - now).total_seconds(),
            now=now, refresh=REFRESH_SECONDS)

    @router.get("/exceptions", response_class=HTMLResponse)
    def exceptions(request: Request, viewer: SignedInViewer,
                   status: Annotated[str, Query(max_length=20)] = "active",
                   chain: Annotated[str, Query(max_length=64)] = "",
                   type: Annotated[str, Query(max_length=40)] = "",
                   severity: Annotated[str, Query(max_length=16)] = "",
                   overdue: Annotated[str, Query(max_length=3)] = "",
                   sort: Annotated[str, Query(max_length=12)] = "id",
                   dir: Annotated[Literal["asc", "desc"], Query()] = "desc",
                   page: Annotated[int, Query(ge=1, le=10**6)] = 1) -> Response:
        service.identity.require(viewer.principal, "read", "discrepancies")
        _known("status", status, STATUS_FILTERS)
        _known("chain", chain, [c.name for c in service.settings.chains], blank=True)
        _known("type", type, SEVERITY, blank=True)
        _known("severity", severity, SEVERITY_ORDER, blank=True)
        _known("sort", sort, SORTS)
        now = service.now()
        filters = Filters(STATUS_FILTERS[status], chain or None, type or None,
                          severity or None, now if overdue else None)
        rows, total = service.store.discrepancy_page(
            filters, _sort(sort), dir == "desc", PER_PAGE, (page - 1) * PER_PAGE)
        params = {"status": status, "chain": chain, "type": type, "severity": severity,
                  "overdue": "1" if overdue else "", "sort": sort, "dir": dir}
        return pages.render(
            request, "exceptions.html", viewer, rows=rows, total=total, page=page,
            pages=max(1, -(-total // PER_PAGE)), params=params, now=now,
            statuses=list(STATUS_FILTERS), chains=[c.name for c in service.settings.chains],
            types=sorted(SEVERITY), severities=SEVERITY_ORDER, sorts=SORTS)

    @router.get("/exceptions/{id_}", response_class=HTMLResponse)
    def exception(request: Request, viewer: SignedInViewer,
                  id_: Annotated[int, PathParam(ge=1, le=2**62)],
                  done: Annotated[str, Query(max_length=20)] = "") -> Response:
        service.identity.require(viewer.principal, "read", "a discrepancy")
        found = service.store.discrepancy(id_)
        if found is None:
            raise InputError(f"no discrepancy with id {id_}")
        record, history = found
        row = record.row
        chain = service.settings.chain(record.chain)
        return pages.render(
            request, "exception.html", viewer, record=record, row=row, history=history,
            items=service.items_for(record), now=service.now(),
            transfers=service.store.transfers_of(record.chain, row.tx_hash)
            if row.tx_hash else [],
            depth=chain.confirmations if chain else None,
            actions=_actions(viewer, row, service.settings.daemon.allow_dual_role),
            reasons=REASON_CODES, done=done if done in ("proposed", "approved", "rejected")
            else "")

    async def act(request: Request, form: PostedForm, id_: int, action: Any) -> Response:
        viewer, fields = form
        reason = text(fields, "reason", 40) if action == "propose" else None
        note = text(fields, "note", 2000) if action != "approve" else None
        await run_in_threadpool(service.act, id_, action, viewer.principal,
                                reason=reason, note=note)
        past = {"propose": "proposed", "approve": "approved", "reject": "rejected"}[action]
        return RedirectResponse(f"/exceptions/{id_}?done={past}", status_code=303)

    @router.post("/exceptions/{id_}/propose")
    async def propose(request: Request, form: PostedForm,
                      id_: Annotated[int, PathParam(ge=1, le=2**62)]) -> Response:
        return await act(request, form, id_, "propose")

    @router.post("/exceptions/{id_}/approve")
    async def approve(request: Request, form: PostedForm,
                      id_: Annotated[int, PathParam(ge=1, le=2**62)]) -> Response:
        return await act(request, form, id_, "approve")

    @router.post("/exceptions/{id_}/reject")
    async def reject(request: Request, form: PostedForm,
                     id_: Annotated[int, PathParam(ge=1, le=2**62)]) -> Response:
        return await act(request, form, id_, "reject")

    @router.get("/wallets", response_class=HTMLResponse)
    def wallets(request: Request, viewer: SignedInViewer,
                q: Annotated[str, Query(max_length=200)] = "") -> Response:
        service.identity.require(viewer.principal, "read", "wallets")
        hits = service.store.search_wallets(q) if q.strip() else []
        return pages.render(request, "wallets.html", viewer, q=q, hits=hits)

    @router.get("/wallets/{chain}/{address}", response_class=HTMLResponse)
    async def wallet(request: Request, viewer: SignedInViewer,
                     chain: Annotated[str, PathParam(max_length=64)],
                     address: Annotated[str, PathParam(max_length=100)],
                     check: Annotated[str, Query(max_length=3)] = "") -> Response:
        service.identity.require(viewer.principal, "read", "a wallet")
        settings = service.settings.chain(chain)
        if settings is None:
            raise InputError(f"unknown chain {chain[:64]!r}")
        try:
            address = canonical_address(settings.family, settings.network, address)
        except InvalidAddress as exc:
            raise InputError(f"{settings.name}: {exc.user_message}") from None
        page = await run_in_threadpool(_wallet_page, service, settings.name, address)
        spot, spot_error = None, None
        if check:
            try:
                spot = await run_in_threadpool(service.check, settings, address)
            except SegwatchError as exc:  # unreachable source, invalid address: shown
                spot_error = exc.user_message
        return pages.render(request, "wallet.html", viewer, chain=settings, address=address,
                            spot=spot, spot_error=spot_error, now=service.now(), **page)


def _wallet_page(service: Service, chain: str, address: str) -> dict[str, Any]:
    ledger = service.store.ledger_view(chain)
    settings = service.settings.chain(chain)
    assert settings is not None
    checkpoint = service.store.last_checkpoint(chain)
    items = service.store.reconciling_items(ledger, checkpoint.block_height,
                                            settings.native_asset.symbol, [address]) \
        if checkpoint and address in ledger.wallets else []
    open_rows, _ = service.store.discrepancy_page(
        Filters(m.OPEN_STATUSES, chain, address=address), "id", True, PER_PAGE)
    return {"wallet": ledger.wallets.get(Address(address)),
            "row": service.store.wallet_row(chain, address),
            "reads": service.store.wallet_reads(chain, address), "items": items,
            "moving": adjustments(items), "transfers": service.store.wallet_transfers(
                chain, address), "open_rows": open_rows, "cut_off": ledger.cut_off,
            "block": checkpoint.block_height if checkpoint else None}


def _doubt(status: ChainStatus) -> str | None:
    """PURE: why a chain's totals are not vouched for now (None: they are): no fresh
    cycle, or the last one could not read or verify everything. A chain with open
    findings says `discrepancy` but may be unreadable as well."""
    if not status.fresh:
        return "no recent cycle"
    if status.last_error or status.scan_error:
        return "the last cycle could not read or verify the chain"
    return "not vouched for" if status.status == "unverified" else None


def _known(name: str, value: str, known: Any, blank: bool = False) -> None:
    if (blank and value == "") or value in known:
        return
    raise InputError(f"unknown {name} {value[:40]!r}")


def _sort(value: str) -> Sort:
    return next(s for s in SORTS if s == value)


def _actions(viewer: Viewer, row: m.Discrepancy, allow_dual_role: bool) -> set[str]:
    """PURE: the workflow actions to offer: those the viewer's roles allow on this
    status (never approving their own proposal, never both sides of maker-checker)."""
    roles = viewer.principal.roles
    if {"maker", "checker"} <= roles and not allow_dual_role:
        return set()
    if row.status == "open" and viewer.may("propose"):
        return {"propose"}
    if row.status == "proposed" and viewer.may("approve") and row.proposed_by != viewer.name:
        return {"approve", "reject"}
    return set()
