"""The command line: parse input, call the service, print, map errors to exit codes.

Exit codes (SPEC §5): 0 reconciled / success, 1 discrepancies found, 2 usage,
configuration or input error, 3 data source unavailable, 70 internal error (a bug).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from chains.errors import SegwatchError
from daemon import __version__
from daemon.cli.derive import app as derive_app
from daemon.cli.export import export_app, keys_app
from daemon.cli.identity import tokens_app, users_app
from daemon.errors import EXIT_DISCREPANCY, EXIT_OK, EXIT_SOURCE, InputError, exit_code_for
from daemon.inputs.builtin import builtin_chain, source_name
from daemon.inputs.config import ChainSettings, Settings, SourceSettings, config_path, load_settings
from daemon.runtime.logs import configure, redact_text
from daemon.service import CycleResult, Service, overall, utcnow

if TYPE_CHECKING:
    from daemon.auth.policy import Principal

EXIT_INTERNAL = 70
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")]



class LogFormat(StrEnum):
    json = "json"
    console = "console"


class DiscrepancyStatus(StrEnum):
    open = "open"
    proposed = "proposed"
    resolved = "resolved"
    self_cleared = "self_cleared"
    voided = "voided"


app = typer.Typer(help="segwatch: client-asset segregation monitor for custodied wallets.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
ledger_app = typer.Typer(help="Sub-ledger import.", no_args_is_help=True)
withdrawals_app = typer.Typer(help="Approved withdrawal instructions.", no_args_is_help=True)
disc_app = typer.Typer(help="Review discrepancies.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(withdrawals_app, name="withdrawals")
app.add_typer(disc_app, name="discrepancies")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(derive_app)  # `segwatch derive CHAIN KEY`
app.add_typer(export_app, name="export")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")

out = Console()
if not out.is_terminal:
    out.width = 200  # piped or captured output: never truncate addresses and amounts
err = Console(stderr=True)


@dataclass
class Globals:
    config: str | None
    db: str | None
    log_format: str | None
    token_file: Path | None = None

    def principal(self, service: Service) -> Principal | None:
        """The holder of SEGWATCH_TOKEN (or of the token in --token-file), or None when
        neither is given. Raises Unauthenticated for a token that does not authenticate."""
        token = read_token(self.token_file)
        if token is None:
            return None
        return service.identity.from_token(token, cli_client())

    def settings(self, required: bool = True) -> Settings:
        from daemon.runtime.logs import register_secrets, settings_secrets

        settings = load_settings(config_path(self.config), required=required)
        # every secret in the settings is masked in all logs and messages from here on
        register_secrets(settings_secrets(settings, self.db))
        return settings

    def service(self, settings: Settings | None = None) -> Service:
        from daemon.bootstrap import build_service

        return build_service(settings or self.settings(), self.db)


def _globals(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    assert isinstance(obj, Globals)
    return obj


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Option("--config", help="Configuration file "
                                               "(default: $SEGWATCH_CONFIG or segwatch.toml).")
                      ] = None,
    db: Annotated[str | None, typer.Option("--db", help="Store URL, overriding store.url.")
                  ] = None,
    log_format: Annotated[LogFormat | None, typer.Option(
        "--log-format", help="Log format (default: console on a terminal, else json).")
    ] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="File holding the API token to act with (default: "
        "$SEGWATCH_TOKEN).")] = None,
) -> None:
    ctx.obj = Globals(config, db, log_format.value if log_format else None, token_file)


MAX_TOKEN_FILE = 1024


def read_token(path: Path | None) -> str | None:
    """The token in `path` (at most 1 KiB, surrounding whitespace dropped), else the
    SEGWATCH_TOKEN environment variable, else None. Raises InputError."""
    if path is None:
        return os.environ.get("SEGWATCH_TOKEN", "").strip() or None
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise InputError(f"--token-file: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise InputError(f"--token-file: {path} is larger than {MAX_TOKEN_FILE} bytes")
    return data.decode("ascii", errors="replace").strip() or None


def cli_client() -> str:
    """How the CLI names itself as a token's client (audited on first use)."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli {user}@{socket.gethostname()}"[:200]


def _setup(ctx: typer.Context, verbose: bool) -> Globals:
    g = _globals(ctx)
    configure(g.log_format, verbose)
    return g


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


# --- commands ---------------------------------------------------------------------------
@app.command()
def version(as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Print segwatch's version."""
    _emit({"version": __version__}) if as_json else out.print(__version__)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: JsonOpt = False, verbose: VerboseOpt = False
               ) -> None:
    """Apply pending schema migrations to the store. On PostgreSQL with
    SEGWATCH_DB_OWNER_URL set, migrate as that owner role and confine store.url's role
    (the daemon's) to what it needs: only INSERT and SELECT on the audit tables."""
    from daemon.runtime.logs import register_secrets
    from daemon.store.db import make_engine, upgrade, upgrade_as_owner

    g = _setup(ctx, verbose)
    url = g.db or g.settings(required=False).store.url
    owner = os.environ.get("SEGWATCH_DB_OWNER_URL", "").strip()
    if owner:
        from chains.urls import url_secrets

        register_secrets(url_secrets(owner))
        revision = upgrade_as_owner(owner, url)
    else:
        revision = upgrade(make_engine(url))
    _emit({"revision": revision}) if as_json else out.print(f"schema at revision {revision}")


@ledger_app.command("import")
def ledger_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON sub-ledger.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only.")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Validate and import the sub-ledger (all or nothing)."""
    g = _setup(ctx, verbose)
    service = g.service()
    actor = None if dry_run else g.principal(service)
    with _progress("validating and importing the ledger…"):
        result = service.import_ledger(file, dry_run=dry_run, actor=actor)
    doc = {"file": str(file), "dry_run": dry_run, "snapshot": result.snapshot_id,
           **result.summary}
    if as_json:
        _emit(doc)
    else:
        verb = "valid (dry run, nothing written)" if dry_run else \
            f"imported as snapshot {result.snapshot_id}"
        out.print(f"{file}: {len(result.rows)} allocations {verb}")
        corrected = result.summary.get("ledger_corrected")
        if corrected:
            out.print(f"ledger_corrected: discrepancies {corrected} are now proposed for a "
                      "checker (the new ledger would clear them)")


@ledger_app.command("snapshots")
def ledger_snapshots(ctx: typer.Context, as_json: JsonOpt = False,
                     verbose: VerboseOpt = False) -> None:
    """List ledger snapshots, newest first, with who imported each."""
    g = _setup(ctx, verbose)
    snapshots = g.service().store.snapshots()
    if as_json:
        _emit(snapshots)
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

    g = _setup(ctx, verbose)
    store = g.service().store
    changes = diff(store.snapshot(before), store.snapshot(after))
    if as_json:
        _emit([c.as_json() for c in changes])
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
    g = _setup(ctx, verbose)
    service = g.service()
    actor = None if dry_run else g.principal(service)
    with _progress("validating and importing withdrawals…"):
        result = service.import_withdrawals(file, dry_run=dry_run, actor=actor)
    if as_json:
        _emit({"file": str(file), "dry_run": dry_run, **result.summary})
    else:
        verb = "valid (dry run, nothing written)" if dry_run else \
            f"imported ({result.summary.get('new')} new)"
        out.print(f"{file}: {len(result.rows)} withdrawals {verb}")


@app.command()
def check(
    ctx: typer.Context,
    chain: Annotated[str, typer.Argument(help="Chain name (configured or built in).")],
    address: Annotated[str, typer.Argument(help="Wallet address.")],
    source: Annotated[str | None, typer.Option("--source", help="Read through this URL.")
                      ] = None,
    blocks: Annotated[str | None, typer.Option("--blocks", help="FROM:TO block range for "
                                               "transfers (default: the newest 128 blocks).")
                      ] = None,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Spot-check one wallet: live balances, ledger comparison, findings."""
    from daemon.cli.present import check_json, check_status, check_table, transfers_table

    g = _setup(ctx, verbose)
    settings = g.settings(required=source is None)
    chain_settings, source_settings = _resolve_chain(settings, chain, source)
    if not config_path(g.config).exists() and g.db is None:
        g = Globals(g.config, "sqlite://", g.log_format)  # ad hoc: no ledger, write no file
    service = g.service(settings)
    report = service.check(chain_settings, address, source_settings, _block_range(blocks))
    doc = check_json(report)
    if as_json:
        _emit(doc)
    else:
        out.print(check_table(report))
        out.print(transfers_table(report))
        for note in doc["notes"]:
            out.print(f"note: {note}", markup=False, highlight=False)
        out.print(f"status: {doc['status']}")
    codes = {"discrepancy": EXIT_DISCREPANCY, "unverified": EXIT_SOURCE}
    raise typer.Exit(codes.get(check_status(report), EXIT_OK))


def _block_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    first, sep, last = text.partition(":")
    if not sep or not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise InputError(f"--blocks: expected FROM:TO with FROM <= TO, got {text!r}")
    return int(first), int(last)


def _resolve_chain(settings: Settings, name: str, source: str | None
                   ) -> tuple[ChainSettings, SourceSettings | None]:
    if source:  # its key parts are masked in every message from here on
        from chains.urls import url_secrets
        from daemon.runtime.logs import register_secrets

        register_secrets(url_secrets(source))
    configured = settings.chain(name)
    try:
        if configured is None:
            chain = builtin_chain(name, source) if source else None
            if chain is None:
                raise InputError(f"unknown chain {name!r} (configure it, or use a built-in "
                                 "chain with --source URL)")
            return chain, None
        kind = configured.sources[0].kind
        return configured, (SourceSettings(kind=kind, url=source, name=source_name(source))
                            if source else None)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InputError(f"--source: {message}") from None


def _tune_gc() -> None:
    """A long-running daemon: keep the start-up objects (libraries, configuration) out of
    every collection, and collect the young generation less often. A 10,000-wallet cycle
    allocates hundreds of thousands of short-lived objects, which with the default
    thresholds (700, 10, 10) set off 2-3 full collections per cycle, a quarter to a
    third of its time (BENCHMARKS.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)


GC_YOUNG_THRESHOLD = 50_000


@app.command()
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One full cycle, then exit.")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Poll every chain, reconcile, persist (the daemon)."""
    from daemon.bootstrap import build_alerts
    from daemon.cli.present import cycle_json, untrusted

    g = _setup(ctx, verbose)
    service = g.service()
    from daemon.bootstrap import prepare

    prepare(service)
    if not once:
        from daemon.audit import check as check_audit
        from daemon.runtime.lock import single_daemon
        from daemon.runtime.scheduler import (
            ALERT_SECONDS,
            AUDIT_SECONDS,
            ESCALATION_SECONDS,
            Job,
            run_forever,
        )

        _tune_gc()
        jobs = [Job("escalate", ESCALATION_SECONDS, service.escalate),
                Job("audit", AUDIT_SECONDS, lambda: check_audit(service))]
        alerts = build_alerts(service.settings, service.store)
        if alerts is not None:
            jobs.append(Job("alerts", ALERT_SECONDS, alerts.deliver_pending, wake_on_change=True))
        try:
            with single_daemon(g.db or service.settings.store.url):
                clean = run_forever(service, jobs=jobs)
        finally:
            if alerts is not None:
                alerts.close()
        if not clean:  # a cycle still running past the bound: abandon it (nothing commits)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_OK)
        return
    with _progress("reconciling…"):
        from daemon.audit import check as check_audit

        results = service.run_once()
        service.escalate()
        check_audit(service)
        alerts = build_alerts(service.settings, service.store)
        if alerts is not None:  # failures are logged; they do not change the exit code
            try:
                alerts.deliver_pending()
            finally:
                alerts.close()
    if as_json:
        _emit([cycle_json(r) for r in results])
    else:
        for r in results:
            line = (f"{r.chain}: {untrusted(r.error)}" if r.error else
                    f"{r.chain}: block {r.block.height if r.block else '?'}, {r.wallets} wallets, "
                    f"{len(r.findings)} findings ({r.write.opened if r.write else 0} new), "
                    f"{r.read_errors} read errors, {r.duration:.2f}s")
            out.print(line)
    raise typer.Exit(run_exit_code(results))


@app.command()
def serve(ctx: typer.Context, verbose: VerboseOpt = False) -> None:
    """Serve the HTTP API (and /healthz, /metrics) on daemon.listen without the reconcile
    loop: an API replica beside the reconcilers. Stops on SIGTERM or SIGINT."""
    import signal
    import threading

    from daemon.api.app import build_app
    from daemon.bootstrap import prepare
    from daemon.runtime.health import HealthServer
    from daemon.runtime.metrics import Metrics

    g = _setup(ctx, verbose)
    service = g.service()
    prepare(service)
    metrics, token = Metrics(), service.settings.daemon.metrics_token
    stop = threading.Event()
    server = HealthServer(service.settings.daemon.listen, service.status, metrics, token,
                          app=build_app(service, metrics, token)).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    err.print(f"serving the API on http://{server.address}/api/v1/", markup=False)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()


def run_exit_code(results: Sequence[CycleResult]) -> int:
    """3 when a chain could not be read, 1 for findings, 3 when a balance could not be
    read or verified (never reported as reconciled), else 0."""
    if any(r.error for r in results):
        return EXIT_SOURCE
    if any(f.type != "balance_unverified" for r in results for f in r.findings):
        return EXIT_DISCREPANCY
    if any(r.read_errors or r.findings for r in results):
        return EXIT_SOURCE
    return EXIT_OK


def _progress(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr when it is a terminal; nothing otherwise."""
    return err.status(message, spinner="dots") if err.is_terminal else nullcontext()


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """One signal per chain and overall: compliant, discrepancy or stale."""
    from daemon.cli.present import status_json, status_table

    g = _setup(ctx, verbose)
    statuses = g.service().status()
    signal = overall(statuses)
    _emit(status_json(statuses, signal)) if as_json else out.print(status_table(statuses, signal))
    codes = {"compliant": EXIT_OK, "discrepancy": EXIT_DISCREPANCY, "stale": EXIT_SOURCE,
             "unverified": EXIT_SOURCE}
    raise typer.Exit(codes[signal])


@disc_app.command("list")
def disc_list(
    ctx: typer.Context,
    status_: Annotated[DiscrepancyStatus | None, typer.Option("--status")] = None,
    chain: Annotated[str | None, typer.Option("--chain")] = None,
    type_: Annotated[str | None, typer.Option("--type")] = None,
    overdue: Annotated[bool, typer.Option(
        "--overdue", help="Only open or proposed items past their cure deadline.")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """List discrepancies (oldest first)."""
    from daemon.cli.present import asset_decimals, discrepancy_json, discrepancy_table

    g = _setup(ctx, verbose)
    service = g.service()
    records = service.discrepancies(status=status_.value if status_ else None, chain=chain,
                                    type_=type_, overdue=overdue)
    now = utcnow()
    depths = {c.name: c.confirmations for c in service.settings.chains}
    if as_json:
        _emit([discrepancy_json(r, now, depths.get(r.chain)) for r in records])
    else:
        decimals = asset_decimals({c.name: c.assets for c in service.settings.chains})
        out.print(discrepancy_table(records, now, decimals))


@disc_app.command("show")
def disc_show(ctx: typer.Context, id_: Annotated[int, typer.Argument(metavar="ID")],
              as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Show one discrepancy with its full history."""
    from daemon.cli.present import audit_json, discrepancy_json

    g = _setup(ctx, verbose)
    found = g.service().store.discrepancy(id_)
    if found is None:
        raise InputError(f"no discrepancy with id {id_}")
    record, history = found
    doc = {**discrepancy_json(record, utcnow()), "history": [audit_json(e) for e in history]}
    if as_json:
        _emit(doc)
        return
    for key, value in doc.items():
        if key != "history":
            out.print(f"[bold]{key}[/bold]: {value}")
    for entry in doc["history"]:
        out.print(f"  #{entry['seq']} {entry['at']} {entry['actor']} {entry['action']} "
                  f"{json.dumps(entry['payload'])}")


IdArg = Annotated[int, typer.Argument(metavar="ID")]


def _act(ctx: typer.Context, id_: int, action: str, as_json: bool, verbose: bool,
         reason: str | None = None, note: str | None = None) -> None:
    from daemon.cli.present import discrepancy_json

    g = _setup(ctx, verbose)
    service = g.service()
    actor = g.principal(service)
    record = service.act(id_, action, actor, reason=reason, note=note)  # type: ignore[arg-type]
    doc = discrepancy_json(record, utcnow())
    if as_json:
        _emit(doc)
    else:
        assert actor is not None
        out.print(f"discrepancy {id_}: {doc['status']} ({action} by {actor.name})")


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

    g = _setup(ctx, verbose)
    service = g.service()
    public = load_public_key(public_key) if public_key else None
    report = verify(service, public, head_of(against) if against else None)
    if as_json:
        _emit(report.as_json())
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
def audit_head(ctx: typer.Context, verbose: VerboseOpt = False) -> None:
    """Print the newest signed audit head as JSON (signing the log's head first when
    daemon.audit_key is set); an unsigned head without a key."""
    from daemon.store.heads import current

    g = _setup(ctx, verbose)
    service = g.service()
    head = service.sign_head() or current(service.store.engine)
    _emit(head.as_json() if head else None)


# --- entry point ------------------------------------------------------------------------
def _fail(lines: list[str], code: int) -> NoReturn:
    for line in lines:
        sys.stderr.write(f"segwatch: {redact_text(line)}\n")
    raise SystemExit(code)


def main() -> None:
    """Console-script entry point: run the CLI and map every error to its exit code."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        _fail(["aborted"], 2)
    except InputError as exc:
        _fail(exc.lines, exit_code_for(exc))
    except SegwatchError as exc:
        _fail([exc.user_message], exit_code_for(exc))
    except (BrokenPipeError, KeyboardInterrupt):
        raise SystemExit(130) from None
    except Exception as exc:
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            # typer's (vendored click) usage errors: bad option, missing argument
            _fail([f"usage: {exc.format_message()}"], 2)
        # a bug: still one line, never a traceback
        _fail([f"internal error ({type(exc).__name__}): {exc}"], EXIT_INTERNAL)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
