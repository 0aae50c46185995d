"""`segwatch discrepancies …` (review and the maker-checker workflow, acting as the
holder of SEGWATCH_TOKEN) and `segwatch audit …` (verify the log, print its head)."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from daemon.cli.common import JsonOpt, VerboseOpt, emit, out, setup, typer_app
from daemon.errors import EXIT_DISCREPANCY, InputError

if TYPE_CHECKING:  # loaded when a command runs, not for --help
    from daemon.service import Service


def utcnow() -> datetime:
    """The service's clock (daemon.service.utcnow), imported when a command runs."""
    from daemon.service import utcnow as now

    return now()

disc_app = typer_app(help="Review discrepancies.", no_args_is_help=True)
audit_app = typer_app(help="The hash-chained, signed audit log.", no_args_is_help=True)


class DiscrepancyStatus(StrEnum):
    open = "open"
    proposed = "proposed"
    resolved = "resolved"
    self_cleared = "self_cleared"
    voided = "voided"


@disc_app.command("list")
def disc_list(
    ctx: typer.Context,
    status_: Annotated[DiscrepancyStatus | None, typer.Option(
        "--status", help="Only discrepancies in this state.")] = None,
    chain: Annotated[str | None, typer.Option(
        "--chain", help="Only this configured chain.")] = None,
    type_: Annotated[str | None, typer.Option(
        "--type", help="Only this type: balance_shortfall, balance_surplus, "
        "unauthorized_outflow, commingling, unexplained_balance_change, source_disagreement, "
        "source_stale, balance_unverified, ledger_stale or scan_stalled.")] = None,
    overdue: Annotated[bool, typer.Option(
        "--overdue", help="Only open or proposed items past their cure deadline.")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """List discrepancies (oldest first)."""
    from daemon.cli.present import asset_decimals, discrepancy_json, discrepancy_table

    g = setup(ctx, verbose)
    service = g.service()
    records = service.discrepancies(status=status_.value if status_ else None, chain=chain,
                                    type_=type_, overdue=overdue)
    now = utcnow()
    depths = {c.name: c.confirmations for c in service.settings.chains}
    if as_json:
        emit([discrepancy_json(r, now, depths.get(r.chain)) for r in records])
    else:
        decimals = asset_decimals({c.name: c.assets for c in service.settings.chains})
        out.print(discrepancy_table(records, now, decimals))


@disc_app.command("show")
def disc_show(ctx: typer.Context, id_: Annotated[int, typer.Argument(metavar="ID")],
              as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Show one discrepancy with its full history."""
    from daemon.cli.present import (
        asset_decimals,
        audit_json,
        discrepancy_json,
        discrepancy_lines,
    )

    g = setup(ctx, verbose)
    service = g.service()
    store = service.store
    found = store.discrepancy(id_)
    if found is None:
        raise InputError(f"no discrepancy with id {id_}")
    record, history = found
    now = utcnow()
    doc = {**discrepancy_json(record, now, _depth(service, record.chain)),
           "reopenings": store.reopenings(id_),
           "reconciling_items": [i.as_json(now) for i in service.items_for(record)],
           "history": [audit_json(e) for e in history]}
    if as_json:
        emit(doc)
        return
    places = asset_decimals({c.name: c.assets for c in service.settings.chains})
    for key, value in discrepancy_lines(doc, places.get((record.chain, record.row.asset or ""))):
        # values are untrusted text (notes, owners): never markup
        out.print(f"[bold]{key}[/bold]: {escape(value)}", highlight=False)
    for entry in doc["history"]:
        out.print(f"  #{entry['seq']} {entry['at']} {entry['actor']} {entry['action']} "
                  f"{json.dumps(entry['payload'])}", markup=False, highlight=False)


def _depth(service: Service, chain: str) -> int | None:
    """The chain's confirmation depth: a transfer finding deeper than it is final."""
    settings = service.settings.chain(chain)
    return settings.confirmations if settings else None


IdArg = Annotated[int, typer.Argument(metavar="ID")]


def _act(ctx: typer.Context, id_: int, action: str, as_json: bool, verbose: bool,
         reason: str | None = None, note: str | None = None) -> None:
    from daemon.cli.present import discrepancy_json

    g = setup(ctx, verbose)
    service = g.service()
    actor = g.principal(service)
    record = service.act(id_, action, actor, reason=reason, note=note)  # type: ignore[arg-type]
    doc = discrepancy_json(record, utcnow(), _depth(service, record.chain))
    if as_json:
        emit(doc)
    else:
        assert actor is not None
        out.print(f"discrepancy {id_}: {doc['status']} ({action} by {actor.name})",
                  markup=False, highlight=False)


@disc_app.command("propose")
def disc_propose(ctx: typer.Context, id_: IdArg,
                 reason: Annotated[str, typer.Option("--reason", help="Reason code.")],
                 note: Annotated[str, typer.Option("--note", help="Why (required).")],
                 as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Propose a resolution (maker): open → proposed. Acts as the token's holder."""
    _act(ctx, id_, "propose", as_json, verbose, reason, note)


@disc_app.command("approve")
def disc_approve(ctx: typer.Context, id_: IdArg, as_json: JsonOpt = False,
                 verbose: VerboseOpt = False) -> None:
    """Approve a proposed resolution (checker, not the proposer): proposed → resolved."""
    _act(ctx, id_, "approve", as_json, verbose)


@disc_app.command("reject")
def disc_reject(ctx: typer.Context, id_: IdArg,
                note: Annotated[str, typer.Option("--note", help="Why (required).")],
                as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Reject a proposed resolution (checker): proposed → open."""
    _act(ctx, id_, "reject", as_json, verbose, note=note)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    against: Annotated[Path | None, typer.Option(
        "--against", help="A package (directory or .zip) or its manifest.json: prove the "
        "log still extends the audit head it recorded.")] = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="The audit key's public half (PEM), to check head signatures "
        "where daemon.audit_key is not configured.")] = None,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Verify the audit log: its hash chain, every signed head, each discrepancy replayed
    from the log against the table, and with --against a head kept elsewhere. Exit 1
    naming every problem."""
    from daemon.audit import head_of, verify
    from daemon.export.signing import load_public_key

    g = setup(ctx, verbose)
    service = g.service()
    public = load_public_key(public_key) if public_key else None
    report = verify(service, public, head_of(against) if against else None)
    if as_json:
        emit(report.as_json())
    elif report.ok:
        extra = f"; extends the head of {against} (entry {report.against.seq})" \
            if against and report.against else ""
        out.print(f"audit log intact: {report.entries} entries, {report.heads} signed heads "
                  f"verified, every discrepancy matches its history{extra}", markup=False)
    else:
        if report.broken_seq is not None:
            out.print(f"audit log broken at entry {report.broken_seq}: "
                      f"{report.chain_problem} ({report.entries} entries before it verified)",
                      markup=False)
        for problem in report.problems:
            out.print(problem, markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_DISCREPANCY)


@audit_app.command("head")
def audit_head(ctx: typer.Context, as_json: JsonOpt = False, verbose: VerboseOpt = False
               ) -> None:
    """Print the newest signed audit head (signing the log's head first when
    daemon.audit_key is set); an unsigned head without a key."""
    from daemon.store.heads import current

    g = setup(ctx, verbose)
    service = g.service()
    head = service.sign_head() or current(service.store.engine)
    if as_json:
        emit(head.as_json() if head else None)
    elif head is None:
        out.print("the audit log is empty", markup=False)
    else:
        for key, value in head.as_json().items():
            out.print(f"{key}: {value or '-'}", markup=False, highlight=False)


