"""structlog set-up: a chain of small processors, one of which redacts secrets.

Secrets are kept out of every log line three ways: URLs are reduced to scheme, host and
port (chains/urls.py); values under secret-sounding keys are masked; and every string
registered with `register_secrets` (the CLI registers each configured source's URL
parts, header values and alert secrets) is replaced by `***` wherever it shows up —
in event values at any depth, in exception text and tracebacks, in the standard-library
logging of the libraries, and finally in the rendered line itself.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from chains.urls import MASK, redact_url, url_host, url_secrets

if TYPE_CHECKING:
    from daemon.inputs.config import Settings

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization|cookie|"
                          r"credential)", re.I)

MIN_SECRET = 4
"""Registered strings shorter than this are ignored: masking every `v3` or `rpc` in every
line would make logs unreadable, and a 3-character key protects nothing."""
SUBSTRING_SECRET = 8
"""Registered strings this long are masked wherever they occur; shorter ones only as a
whole token (not inside a longer word), so that a path segment like `main` does not
mangle `mainnet`."""
MAX_SECRETS = 4096
MAX_SECRET_CHARS = 4096
MAX_DEPTH = 8
"""Nested event values deeper than this are replaced by a marker, not walked."""
MAX_ITEMS = 1000
"""Items of one container that are redacted and kept; the rest are dropped (counted)."""
MAX_TRACEBACK_CHARS = 20_000

_lock = threading.Lock()
_registered: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Add `values` to the process-wide set of strings masked in every logged or printed
    text. Values shorter than MIN_SECRET or longer than MAX_SECRET_CHARS are ignored,
    and at most MAX_SECRETS are kept (process-wide, for the life of the process)."""
    global _pattern
    with _lock:
        for value in values:
            if (isinstance(value, str) and MIN_SECRET <= len(value) <= MAX_SECRET_CHARS
                    and len(_registered) < MAX_SECRETS):
                _registered.add(value)
        _pattern = _compile(_registered) if _registered else None


def clear_secrets() -> None:
    """Forget every registered secret (tests, and a process that reloads settings)."""
    global _pattern
    with _lock:
        _registered.clear()
        _pattern = None


def _compile(values: set[str]) -> re.Pattern[str]:
    # Longest first, so that a secret containing another is masked whole.
    alternatives = [re.escape(v) if len(v) >= SUBSTRING_SECRET else
                    rf"(?<![A-Za-z0-9]){re.escape(v)}(?![A-Za-z0-9])"
                    for v in sorted(values, key=lambda v: (-len(v), v))]
    return re.compile("|".join(alternatives))


def scrub_secrets(text: str) -> str:
    """Return `text` with every registered secret replaced by `***`."""
    pattern = _pattern
    return text if pattern is None else pattern.sub(MASK, text)


def redact_text(text: str) -> str:
    """Return `text` with every registered secret masked and every URL in it redacted
    (user info, path, query and fragment)."""
    return _URL.sub(lambda match: redact_url(match.group(0)), scrub_secrets(text))


def redact_value(value: Any, depth: int = 0) -> Any:
    """Return `value` redacted: strings as `redact_text`, exceptions as their redacted
    `Type: text`, dicts, lists, tuples and sets walked (secret-named keys masked) to
    MAX_DEPTH levels and MAX_ITEMS items each. Other objects are returned as they are
    (the rendered line is scrubbed again as a whole)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    if not isinstance(value, Mapping | list | tuple | set | frozenset):
        return value
    if depth >= MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        items = list(value.items())
        out: dict[Any, Any] = {}
        for key, item in items[:MAX_ITEMS]:
            safe_key = redact_text(key) if isinstance(key, str) else key
            secret = isinstance(key, str) and _SECRET_KEYS.search(key)
            out[safe_key] = MASK if secret else redact_value(item, depth + 1)
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more"
        return out
    elements = list(value)
    kept = [redact_value(item, depth + 1) for item in elements[:MAX_ITEMS]]
    if len(elements) > MAX_ITEMS:
        kept.append(f"… {len(elements) - MAX_ITEMS} more")
    if isinstance(value, tuple):
        return tuple(kept)
    if isinstance(value, set | frozenset):
        try:
            return set(kept)
        except TypeError:  # a redacted element became unhashable: keep the list
            return kept
    return kept


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: render `exc_info` into a redacted `exception` text, mask
    secret-named keys, and redact every value (nested ones too)."""
    exc_info = event.pop("exc_info", None)
    if exc_info:
        text = _format_exception(exc_info)
        if text:
            event["exception"] = text
    for key, value in list(event.items()):
        if key.startswith("_"):  # structlog's own (the stdlib record): never rendered
            continue
        event[key] = MASK if _SECRET_KEYS.search(key) else redact_value(value)
    return event


def _format_exception(exc_info: Any) -> str:
    """The traceback of `exc_info` (True, an exception or a sys.exc_info() triple),
    redacted and bounded; `""` when there is none."""
    info: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    if isinstance(exc_info, BaseException):
        info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        info = exc_info
    else:
        info = sys.exc_info()
    if info[1] is None:
        return ""
    text = "".join(traceback.format_exception(info[0], info[1], info[2]))
    return redact_text(text[-MAX_TRACEBACK_CHARS:])


def _scrubbed(renderer: Any) -> Any:
    """Wrap a renderer so that the finished line is redacted once more as a whole: a
    secret inside an object's repr (which `redact` does not walk) is caught here."""
    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        line = renderer(logger, name, event)
        return redact_text(line) if isinstance(line, str) else line
    return render


def settings_secrets(settings: Settings, store_url: str | None = None) -> list[str]:
    """Return the secrets in `settings` to register: every source URL's parts
    (`url_secrets`), every header value (and its words of 8+ characters), every alert
    URL's parts and signing secret, the metrics token, and the user info and query of the
    store URL (and of `store_url`, the --db override).

    Parts that also occur in a public string (a host, a chain, source or asset name) are
    left out: they are shown anyway, and masking them would blank the host in every line.
    """
    values: list[str] = []
    public: list[str] = []
    for chain in settings.chains:
        public += [chain.name, *(a.symbol for a in chain.assets)]
        for source in chain.sources:
            public += [source.name, source.kind, url_host(source.url)]
            values += url_secrets(source.url)
            if source.ws_url:
                public.append(url_host(source.ws_url))
                values += url_secrets(source.ws_url)
            for header in source.headers.values():
                values += [header, *(w for w in header.split() if len(w) >= SUBSTRING_SECRET)]
    for alert in settings.alerts:
        public.append(url_host(alert.url))
        values += url_secrets(alert.url)
        if alert.secret:
            values.append(alert.secret.decode(errors="replace"))
    if settings.daemon.metrics_token:
        values.append(settings.daemon.metrics_token)
    if settings.auth.oidc is not None:
        values.append(settings.auth.oidc.client_secret)
    token = os.environ.get("SEGWATCH_TOKEN")
    if token:
        values.append(token)
    for url in (settings.store.url, store_url or ""):
        values += _credentials(url)
    lowered = [p.lower() for p in public if p]
    return [v for v in dict.fromkeys(values)
            if v and not any(v.lower() in p for p in lowered)]


def _credentials(url: str) -> list[str]:
    """The user info and query of a database or sink URL, and the HTTP Basic form of the
    user info (its path names a database or file, which is not secret)."""
    try:
        parts = urlsplit(url)
        user, password = parts.username or "", parts.password or ""
    except ValueError:
        return []
    found = [parts.query, user, password] if (user or password) else [parts.query]
    if user or password:
        found.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    return [f for f in found if f]


def configure(fmt: str | None = None, verbose: bool = False) -> None:
    """Configure structlog: JSON lines when stderr is not a terminal (or `fmt == "json"`),
    console output otherwise. Logs go to stderr so `--json` output on stdout stays clean.
    """
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    renderer: Any = _scrubbed(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
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
