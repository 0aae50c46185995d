"""The command line (Typer): parse input, call the service, present, map errors to
exit codes."""

from daemon.cli.app import main

__all__ = ["main"]
