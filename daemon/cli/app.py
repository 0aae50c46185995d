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
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from chains.errors import SegwatchError
from daemon import __version__
from daemon.cli.common import (
    Globals,
    JsonOpt,
    VerboseOpt,
    emit,
    err,
    out,
    plural,
    progress,
    setup,
    typer_app,
)
from daemon.cli.derive import app as derive_app
from daemon.cli.export import export_app, keys_app
from daemon.cli.feeds import ledger_app, withdrawals_app
from daemon.cli.identity import tokens_app, users_app
from daemon.cli.review import audit_app, disc_app
from daemon.errors import EXIT_DISCREPANCY, EXIT_OK, EXIT_SOURCE, InputError, exit_code_for

if TYPE_CHECKING:  # the heavy modules load when a command runs, not for --help or version
    from daemon.inputs.chain_settings import ChainSettings
    from daemon.inputs.config import Settings
    from daemon.inputs.source_settings import SourceSettings
    from daemon.runtime.inbox import Inbox
    from daemon.service import CycleResult, Service

EXIT_INTERNAL = 70



class LogFormat(StrEnum):
    json = "json"
    console = "console"


app = typer_app(help="segwatch: client-asset segregation monitor for custodied wallets.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer_app(help="Database schema.", no_args_is_help=True)
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


# --- commands ---------------------------------------------------------------------------
@app.command()
def version(as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Print segwatch's version."""
    emit({"version": __version__}) if as_json else out.print(__version__)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: JsonOpt = False, verbose: VerboseOpt = False
               ) -> None:
    """Apply pending schema migrations to the store. On PostgreSQL with
    SEGWATCH_DB_OWNER_URL set, migrate as that owner role and confine store.url's role
    (the daemon's) to what it needs: only INSERT and SELECT on the audit tables."""
    from daemon.runtime.logs import register_secrets
    from daemon.store.db import make_engine, upgrade, upgrade_as_owner

    g = setup(ctx, verbose)
    url = g.db or g.settings(required=False).store.url
    owner = os.environ.get("SEGWATCH_DB_OWNER_URL", "").strip()
    if owner:
        from chains.urls import url_secrets

        register_secrets(url_secrets(owner))
        revision = upgrade_as_owner(owner, url)
    else:
        revision = upgrade(make_engine(url))
    emit({"revision": revision}) if as_json else out.print(f"schema at revision {revision}")


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
    timeout: Annotated[float | None, typer.Option(
        "--timeout", min=0.1, max=600, help="Seconds to wait for each answer of the source "
        "(default: its timeout_seconds, 10); an unanswered request is tried 3 times.")
    ] = None,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Spot-check one wallet: live balances, ledger comparison, findings."""
    from daemon.cli.present import (
        check_json,
        check_status,
        check_table,
        check_transfers,
        items_table,
        transfers_table,
    )
    from daemon.inputs.config import config_path

    g = setup(ctx, verbose)
    settings = g.settings(required=source is None)
    chain_settings, source_settings = _resolve_chain(settings, chain, source)
    if timeout is not None:
        chain_settings, source_settings = _with_timeout(chain_settings, source_settings,
                                                        timeout)
    if not config_path(g.config).exists() and g.db is None:
        g = Globals(g.config, "sqlite://", g.log_format)  # ad hoc: no ledger, write no file
    service = g.service(settings, or_memory=True)
    shown = source_settings.name if source_settings else chain_settings.sources[0].name
    with progress(f"reading {chain_settings.name} through {shown}…"):
        report = service.check(chain_settings, address, source_settings,
                               _block_range(blocks))
    doc = check_json(report)
    if as_json:
        emit(doc)
    else:
        out.print(check_table(report))
        if report.items:
            out.print(items_table(report.items, report.checked_at, report.chain))
        if check_transfers(report):
            out.print(transfers_table(report))
        elif report.scan is not None:
            out.print("no transfers in the blocks scanned", markup=False)
        for note in doc["notes"]:
            out.print(f"note: {note}", markup=False, highlight=False)
        if doc["ledger_as_of"]:
            out.print(f"ledger cut off at {doc['ledger_as_of']}", markup=False)
        out.print(f"status: {doc['status']}")
    codes = {"discrepancy": EXIT_DISCREPANCY, "unverified": EXIT_SOURCE}
    raise typer.Exit(codes.get(check_status(report), EXIT_OK))


def _with_timeout(chain: ChainSettings, source: SourceSettings | None, seconds: float
                  ) -> tuple[ChainSettings, SourceSettings | None]:
    """`chain` and `source` with every source's timeout and deadline set to `seconds`."""
    limits = {"timeout_seconds": seconds, "deadline_seconds": seconds}
    sources = [s.model_copy(update=limits) for s in chain.sources]
    return (chain.model_copy(update={"sources": sources}),
            source.model_copy(update=limits) if source else None)


def _block_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    first, sep, last = text.partition(":")
    if not sep or not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise InputError(f"--blocks: expected FROM:TO with FROM <= TO, got {text!r}")
    return int(first), int(last)


def _resolve_chain(settings: Settings, name: str, source: str | None
                   ) -> tuple[ChainSettings, SourceSettings | None]:
    from pydantic import ValidationError

    from daemon.inputs.builtin import builtin_chain, source_name
    from daemon.inputs.source_settings import SourceSettings

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

    g = setup(ctx, verbose)
    service = g.service(create=True)
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
        inbox = _inbox(service)
        if inbox is not None:
            jobs.append(Job("inbox", service.settings.ledger.inbox_seconds, inbox.poll))
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
    from daemon.runtime.lock import single_daemon

    with single_daemon(g.db or service.settings.store.url, "run --once"), \
            progress("reconciling…"):
        from daemon.audit import check as check_audit

        inbox = _inbox(service)
        if inbox is not None:  # files waiting in the inbox are imported first
            inbox.poll()
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
        emit([cycle_json(r) for r in results])
    else:
        for r in results:
            line = (f"{r.chain}: {untrusted(r.error)}" if r.error else
                    f"{r.chain}: block {r.block.height if r.block else '?'}, "
                    f"{plural(r.wallets, 'wallet')}, {plural(len(r.findings), 'finding')} "
                    f"({r.write.opened if r.write else 0} new), "
                    f"{plural(r.read_errors, 'read error')}, {r.duration:.2f}s")
            out.print(line)
    raise typer.Exit(run_exit_code(results))


@app.command()
def serve(ctx: typer.Context, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Serve the HTTP API (and /healthz, /metrics) on daemon.listen without the reconcile
    loop: an API replica beside the reconcilers. Stops on SIGTERM or SIGINT."""
    import signal
    import threading

    from daemon.api.app import build_app
    from daemon.bootstrap import prepare
    from daemon.runtime.health import HealthServer
    from daemon.runtime.metrics import Metrics

    g = setup(ctx, verbose)
    service = g.service(create=True)
    prepare(service)
    metrics, token = Metrics(), service.settings.daemon.metrics_token
    stop = threading.Event()
    server = HealthServer(service.settings.daemon.listen, service.status, metrics, token,
                          app=build_app(service, metrics, token)).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if as_json:  # where it listens, as a document for a supervisor or a script
        emit({"console": f"http://{server.address}/", "api": f"http://{server.address}/api/v1/"})
        sys.stdout.flush()
    else:
        err.print(f"serving the console on http://{server.address}/ and the API on "
                  f"http://{server.address}/api/v1/", markup=False)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()


def _inbox(service: Service) -> Inbox | None:
    """The configured inbox feed, or None."""
    from daemon.runtime.inbox import Inbox

    folder = service.settings.ledger.inbox
    return Inbox(Path(folder), service, service.settings.ledger.inbox_user) if folder else None


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


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """One signal per chain and overall: compliant, discrepancy, stale or unverified."""
    from daemon.cli.present import heartbeat_line, items_table, status_json, status_table
    from daemon.status import overall

    g = setup(ctx, verbose)
    service = g.service()
    statuses = service.status()
    signal = overall(statuses)
    if as_json:
        emit(status_json(statuses, signal, service.now(), service.heartbeat()))
    else:
        out.print(status_table(statuses, signal))
        out.print(heartbeat_line(service.heartbeat(), service.now()), markup=False,
                  highlight=False)
        for s in statuses:
            chain = service.settings.chain(s.chain)
            if s.items and chain is not None:
                out.print(items_table(s.items, service.now(), chain))
    codes = {"compliant": EXIT_OK, "discrepancy": EXIT_DISCREPANCY, "stale": EXIT_SOURCE,
             "unverified": EXIT_SOURCE}
    raise typer.Exit(codes[signal])


# --- entry point ------------------------------------------------------------------------
def _fail(lines: list[str], code: int) -> NoReturn:
    """Each line on stderr; with --json, also {"error": {"code", "message"}} on stdout (the
    lines joined), so that a program reading stdout always gets a document."""
    from daemon.runtime.logs import redact_text

    shown = [redact_text(line) for line in lines]
    for line in shown:
        sys.stderr.write(f"segwatch: {line}\n")
    if "--json" in sys.argv[1:]:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": "; ".join(shown)}})
                         + "\n")
    raise SystemExit(code)


GLOBAL_OPTIONS = ("--config", "--db", "--log-format", "--token-file")


def _global_hint(exc: Exception) -> str:
    """A hint when a global option was given after the command (`status --db URL`)."""
    name = getattr(exc, "option_name", None)
    if name in GLOBAL_OPTIONS:
        return (f" ({name} is a global option: give it before the command, as in "
                f"`segwatch {name} … COMMAND …`)")
    return ""


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
            _fail([f"usage: {exc.format_message()}{_global_hint(exc)}"], 2)
        # a bug: still one line, never a traceback
        _fail([f"internal error ({type(exc).__name__}): {exc}"], EXIT_INTERNAL)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
