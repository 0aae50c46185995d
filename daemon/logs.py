"""structlog set-up: a chain of small processors, one of which redacts secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from chains.urls import redact_url

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization)", re.I)


def redact_text(text: str) -> str:
    """Return `text` with every URL in it redacted (credentials, keys, query strings)."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and every URL in string values."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key):
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


def configure(fmt: str | None = None, verbose: bool = False) -> None:
    """Configure structlog: JSON lines when stderr is not a terminal (or `fmt == "json"`),
    console output otherwise. Logs go to stderr so `--json` output on stdout stays clean.
    """
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
                     if fmt == "console" else structlog.processors.JSONRenderer())
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    _route_stdlib_logging(shared, renderer)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def _route_stdlib_logging(shared: list[Any], renderer: Any) -> None:
    """Send the libraries' stdlib logging (APScheduler, httpx, SQLAlchemy) through the
    same redaction and renderer, warnings and above only; APScheduler's notices about
    skipped runs of a cycle still in progress are expected, so only its errors pass."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
