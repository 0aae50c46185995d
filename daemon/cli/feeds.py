"""`segwatch ledger …` and `segwatch withdrawals …`: imports (as the feeder holding
SEGWATCH_TOKEN), snapshots and their diff."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import (
    JsonOpt,
    VerboseOpt,
    emit,
    out,
    parse_time,
    plural,
    progress,
    setup,
    typer_app,
)

ledger_app = typer_app(help="Sub-ledger import, snapshots and diffs.", no_args_is_help=True)
withdrawals_app = typer_app(help="Approved withdrawal instructions.", no_args_is_help=True)


@ledger_app.command("import")
def ledger_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON sub-ledger.")],
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="When the books were cut (ISO-8601 with a timezone); default: now, "
                        "the import time.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only.")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Validate and import the sub-ledger (all or nothing), cut at --as-of."""
    g = setup(ctx, verbose)
    service = g.service(create=not dry_run, or_memory=dry_run)
    actor = None if dry_run else g.principal(service)
    cut_off = parse_time(as_of, "--as-of") if as_of else None
    with progress("validating and importing the ledger…"):
        result = service.import_ledger(file, dry_run=dry_run, actor=actor, as_of=cut_off)
    doc = {"file": str(file), "dry_run": dry_run, "snapshot": result.snapshot_id,
           **result.summary}
    if as_json:
        emit(doc)
        return
    verb = "valid (dry run, nothing written)" if dry_run else \
        f"imported as snapshot {result.snapshot_id}"
    out.print(f"{file}: {plural(len(result.rows), 'allocation')} {verb}, cut off at "
              f"{result.summary['as_of']}", markup=False, highlight=False)
    if not result.summary["as_of_given"]:
        out.print("note: no --as-of given: the import time is the books' cut-off",
                  markup=False)
    corrected = result.summary.get("ledger_corrected")
    if corrected:
        out.print(f"ledger_corrected: discrepancies {corrected} are now proposed for a "
                  "checker (the new ledger would clear them)")


@ledger_app.command("snapshots")
def ledger_snapshots(ctx: typer.Context, as_json: JsonOpt = False,
                     verbose: VerboseOpt = False) -> None:
    """List ledger snapshots, newest first, with who imported each."""
    g = setup(ctx, verbose)
    snapshots = g.service().store.snapshots()
    if as_json:
        emit(snapshots)
        return
    for snap in snapshots:
        out.print(f"{snap['id']}: {snap['imported_at']} {snap['rows']} rows from "
                  f"{snap['source']} by {snap['imported_by']}", markup=False, highlight=False)


@ledger_app.command("diff")
def ledger_diff(ctx: typer.Context, before: Annotated[int, typer.Argument(metavar="FROM")],
                after: Annotated[int, typer.Argument(metavar="TO")], as_json: JsonOpt = False,
                verbose: VerboseOpt = False) -> None:
    """Allocations added, removed or changed from snapshot FROM to snapshot TO."""
    from daemon.rules.snapshots import diff

    g = setup(ctx, verbose)
    store = g.service().store
    changes = diff(store.snapshot(before), store.snapshot(after))
    if as_json:
        emit([c.as_json() for c in changes])
        return
    for c in changes:
        out.print(f"{c.kind:>7} {c.chain} {c.address} {c.asset} {c.owner}: "
                  f"{c.before if c.before is not None else '-'} → "
                  f"{c.after if c.after is not None else '-'}", markup=False, highlight=False)


@withdrawals_app.command("import")
def withdrawals_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON approved withdrawals.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only.")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Validate and import approved withdrawals (all or nothing)."""
    g = setup(ctx, verbose)
    service = g.service(create=not dry_run, or_memory=dry_run)
    actor = None if dry_run else g.principal(service)
    with progress("validating and importing withdrawals…"):
        result = service.import_withdrawals(file, dry_run=dry_run, actor=actor)
    if as_json:
        emit({"file": str(file), "dry_run": dry_run, **result.summary})
    else:
        verb = "valid (dry run, nothing written)" if dry_run else \
            f"imported ({result.summary.get('new')} new)"
        out.print(f"{file}: {plural(len(result.rows), 'withdrawal')} {verb}", markup=False,
                  highlight=False)


