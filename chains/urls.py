"""Source URLs without their secrets: the only form that reaches logs and output.

API keys sit anywhere in a provider URL: in the path (`/v3/KEY`, of any length), in the
query (`?apikey=KEY`), in the user info (`https://user:KEY@host`). Rather than guess
which part is a key, everything after the host is masked: only the scheme, host and
port remain.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
UNPARSEABLE = "<unparseable url>"
# A source name or a bare host (what the store keeps since migration 0009): nothing to hide.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def redact_url(url: str) -> str:
    """Return `url` as `scheme://host[:port]`, plus `/***` when it had anything else (user
    info, a path other than `/`, a query or a fragment), or `<unparseable url>`.

    e.g. `https://mainnet.infura.io/v3/KEY` → `https://mainnet.infura.io/***`. The host
    stays so that an operator knows which source is meant. A source name or a bare host
    (no `://`) is returned as it is.
    """
    if "://" not in url and _PLAIN_NAME.fullmatch(url):
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return UNPARSEABLE
    if not parts.scheme or not host:
        return UNPARSEABLE
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    hidden = bool(parts.username or parts.password or parts.query or parts.fragment
                  or parts.path not in ("", "/") or "@" in parts.netloc)
    tail = f"/{MASK}" if hidden else parts.path
    return f"{parts.scheme}://{netloc}{tail}"


def url_host(url: str) -> str:
    """Return the host of `url` (lowercase, no port), or `""` when it has none."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def url_secrets(url: str) -> list[str]:
    """Return the parts of `url` that must never appear in a message: the whole URL, its
    user info, query (whole and each value), fragment and every non-empty path segment,
    each also percent-decoded. Longest first, without duplicates."""
    candidates = [url]
    try:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        candidates += [userinfo, *userinfo.split(":"), parts.query, parts.fragment]
        for text in (parts.query, parts.fragment):  # each value, raw and decoded
            candidates += [pair.partition("=")[2] for pair in re.split("[&;]", text)]
            candidates += [value for _, value in parse_qsl(text, keep_blank_values=True)]
        candidates += parts.path.split("/")
    except ValueError:
        pass
    found = {c for c in candidates if c} | {unquote(c) for c in candidates if c}
    return sorted((c for c in found if c), key=lambda c: (-len(c), c))
