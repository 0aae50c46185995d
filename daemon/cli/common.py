"""What every command shares: the global options' state (configuration, store, log
format, credentials), output helpers, and the options every command takes."""

from __future__ import annotations

import json
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from daemon.errors import InputError

if TYPE_CHECKING:  # the heavy modules load when a command runs, not for --help
    from daemon.auth.policy import Principal
    from daemon.inputs.config import Settings
    from daemon.service import Service

def typer_app(**kwargs: Any) -> typer.Typer:
    """A command group whose help is plain text: no Rich markup (a "[...]" in a help text
    or default is shown as written, not eaten as a style tag), no `<bool>` metavar on flags
    (typer's Rich help shows one), and a faster `--help` (Rich's help renderer and Markdown
    are not imported)."""
    return typer.Typer(rich_markup_mode=None, **kwargs)


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")]

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
        from daemon.inputs.config import config_path, load_settings
        from daemon.runtime.logs import register_secrets, settings_secrets

        settings = load_settings(config_path(self.config), required=required)
        # every secret in the settings is masked in all logs and messages from here on
        register_secrets(settings_secrets(settings, self.db))
        return settings

    def service(self, settings: Settings | None = None, *, create: bool = False,
                or_memory: bool = False) -> Service:
        """The service on the configured store. Only commands that write (`create`) may
        create a new SQLite store; the others refuse a missing one (InputError), except
        those that can work without one (`or_memory`: a spot check, a dry run), which then
        use an empty in-memory store and write no file."""
        from daemon.bootstrap import build_service

        settings = settings or self.settings()
        try:
            return build_service(settings, self.db, create=create)
        except InputError as exc:
            if not or_memory or "no such file" not in exc.user_message:
                raise
            return build_service(settings, "sqlite://")


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    assert isinstance(obj, Globals)
    return obj


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


def setup(ctx: typer.Context, verbose: bool) -> Globals:
    """The global options, with logging configured for this command."""
    from daemon.runtime.logs import configure

    g = globals_of(ctx)
    configure(g.log_format, verbose)
    return g


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """"1 finding", "2 findings" (`nouns` for an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def emit(data: Any) -> None:
    """Write `data` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def progress(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr when it is a terminal; nothing otherwise."""
    return err.status(message, spinner="dots") if err.is_terminal else nullcontext()


def parse_time(text: str, option: str) -> datetime:
    """An ISO-8601 time with an offset (or Z), as aware UTC. Raises InputError."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{option} {text[:60]!r}: not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise InputError(f"{option} {text[:60]!r}: give a timezone (e.g. Z or +00:00)")
    return moment.astimezone(UTC)
