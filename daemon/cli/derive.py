"""`segwatch derive CHAIN KEY`: the addresses of an HD key, for ledger rows.

HD custody often gives each client one address of one key; operators list those
addresses here (`--json` for scripts) to write the sub-ledger. The chain's network
comes from the configuration, or from the built-in UTXO chains (bitcoin, litecoin,
testnet, signet, regtest, litecoin-regtest) when it is not configured. Registered on
the root app by daemon/cli/app.py (`app.add_typer(...)` without a name merges this
command into the root).
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from daemon.cli.common import typer_app
from daemon.errors import InputError
from daemon.inputs.builtin import BUILTIN_CHAINS, UTXO_BUILTINS

if TYPE_CHECKING:
    from chains.utxo.esplora import EsploraAdapter

MAX_COUNT = 10_000
"""Deriving costs about 2 ms an address; larger sets go through several windows."""

app = typer_app()

out = Console()
if not out.is_terminal:
    out.width = 200  # piped or captured output: never truncate addresses


@app.command("derive")
def derive_command(
    ctx: typer.Context,
    chain: Annotated[str, typer.Argument(
        help=f"UTXO chain name (configured, or built in: {UTXO_BUILTINS}).")],
    key: Annotated[str, typer.Argument(
        help="Extended public key (xpub, ypub, zpub, tpub, …; path 0/* unless KEY/…/*) "
             "or descriptor pkh(…), wpkh(…), sh(wpkh(…)).")],
    start: Annotated[int, typer.Option("--start", min=0, help="First index.")] = 0,
    count: Annotated[int, typer.Option("--count", min=1, max=MAX_COUNT,
                                       help="How many addresses.")] = 20,
    gap: Annotated[int | None, typer.Option(
        "--gap", min=1, max=1000,
        help="Discover instead: every address up to the last used one, stopping after GAP "
             "unused in a row (reads the chain's esplora source).")] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="Esplora URL for --gap (default: the chain's first esplora source).")
                      ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")
                       ] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")] = False,
) -> None:
    """Derive the addresses of an HD key (watch-only; private keys are refused)."""
    from chains.utxo.hd import HARDENED, derive, discover, parse_watch_key
    from daemon.runtime.logs import configure

    config, log_format = _root_options(ctx)
    configure(log_format, verbose)
    network = chain_network(config, chain)
    watch = parse_watch_key(key, network)
    if gap is not None:
        if start:
            raise InputError("--start does not apply to --gap discovery (it starts at 0)")
        with _esplora(config, chain, network, source) as adapter:
            addresses = discover(watch, adapter.used, gap_limit=gap, max_addresses=MAX_COUNT)
        start, count = 0, len(addresses)
    else:
        if start + count > HARDENED:
            raise InputError(f"--start/--count: indices must stay below 2^31 ({HARDENED})")
        addresses = derive(watch, start, count)
    indexed = list(enumerate(addresses, start))
    if as_json:
        rows = [{"index": index, "address": address} for index, address in indexed]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    branch = "".join(f"{step}/" for step in watch.path)
    out.print(f"descriptor: {watch.descriptor}", soft_wrap=True, markup=False,
              highlight=False)  # a key origin "[fingerprint/84h/…]" is not markup
    table = Table(title=f"{chain} ({network}), indices {start}…{start + count - 1}")
    for column in ("index", "path", "address"):
        table.add_column(column)
    for index, address in indexed:
        table.add_row(str(index), f"{branch}{index}", address)
    out.print(table)


def _esplora(config: str | None, name: str, network: str, url: str | None) -> EsploraAdapter:
    """The Esplora source discovery reads: `url`, else the chain's first esplora source.
    Raises InputError when there is none."""
    from chains.utxo.esplora import EsploraAdapter
    from daemon.inputs.config import config_path, load_settings

    if url is None:
        explicit = config or os.environ.get("SEGWATCH_CONFIG")
        configured = load_settings(config_path(config), required=explicit is not None) \
            .chain(name)
        urls = [s.url for s in configured.sources if s.kind == "esplora"] if configured else []
        if not urls:
            raise InputError(f"--gap needs an esplora source: chain {name!r} has none "
                             "configured; give one with --source URL")
        url = urls[0]
    try:
        return EsploraAdapter(url, network=network)
    except ValueError as exc:
        raise InputError(f"--source: {exc}") from None


def _root_options(ctx: typer.Context) -> tuple[str | None, str | None]:
    """`--config` and `--log-format` from the root app (daemon.cli.app.Globals), if any."""
    root = ctx.find_root().obj
    return getattr(root, "config", None), getattr(root, "log_format", None)


def chain_network(config: str | None, name: str) -> str:
    """Return the UTXO network of chain `name`: configured, else built in.

    The configuration is required only when named (`--config` or SEGWATCH_CONFIG).
    Raises InputError for an unknown or EVM chain, ConfigError for a bad configuration.
    """
    from daemon.inputs.config import config_path, load_settings

    explicit = config or os.environ.get("SEGWATCH_CONFIG")
    settings = load_settings(config_path(config), required=explicit is not None)
    configured = settings.chain(name)
    family, network = ((configured.family, configured.network) if configured else
                       (BUILTIN_CHAINS.get(name, {}).get("family"),
                        BUILTIN_CHAINS.get(name, {}).get("network")))
    if family is None:
        raise InputError(f"unknown chain {name!r} (configure it, or use a built-in utxo "
                         f"chain: {UTXO_BUILTINS})")
    if family != "utxo" or network is None:
        raise InputError(f"chain {name!r} is an {family} chain; derive is for utxo chains")
    return str(network)
