"""Source URLs without their secrets: the only form that reaches logs and output."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# Path segments that look like API keys (Infura, Alchemy, QuickNode and similar
# put the key in the path): long runs of letters, digits, '-' and '_'.
_KEYLIKE_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{20,}$")


def redact_url(url: str) -> str:
    """Return `url` with user info, query string, fragment and key-like path parts masked.

    The result still names the host, so an operator knows which source is meant.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    netloc = host if port is None else f"{host}:{port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    segments = ["***" if _KEYLIKE_SEGMENT.match(s) else s for s in parts.path.split("/")]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, "/".join(segments), query, ""))


def url_secrets(url: str) -> list[str]:
    """Return the parts of `url` that must never appear in a message: the whole URL, user
    info, query, fragment and path segments (keys often sit in the path)."""
    try:
        parts = urlsplit(url)
        candidates = [url, parts.username, parts.password, parts.query, parts.fragment]
        candidates += [segment for segment in parts.path.split("/") if len(segment) >= 4]
    except ValueError:
        return [url]
    return [c for c in candidates if c]
