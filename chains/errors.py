"""The error tree. Library errors (httpx, web3, eth_abi) never leave `chains/`.

    SegwatchError                 root; carries a one-line `user_message`
    ├── SourceUnavailable         transient: timeouts, refused connections, 5xx, 429,
    │   │                         JSON-RPC error bodies; worth retrying or failing over
    │   └── SourceStale           the source answers but its head is too old
    ├── DecodeError               permanent: a payload that does not parse (names field, source)
    ├── ChainMismatch             permanent: a source serves another chain than configured
    └── InvalidAddress            permanent: an address that is not valid for the chain

The daemon adds its own permanent branch (configuration and input errors) under the
same root, so the CLI maps every error to an exit code in one place.
"""

from __future__ import annotations


class SegwatchError(Exception):
    """Root of segwatch's errors; `user_message` is one line, safe to print (no secrets)."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class SourceUnavailable(SegwatchError):
    """A data source could not answer; transient, worth a retry or another source."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"source {source} unavailable: {reason}")
        self.source = source
        self.reason = reason


class SourceStale(SourceUnavailable):
    """A source answered, but its head is older or further behind than allowed."""


class DecodeError(SegwatchError):
    """A payload from a source that does not parse."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"source {source} returned a malformed {field}: {reason}")
        self.source = source
        self.field = field


class ChainMismatch(SegwatchError):
    """A source serves a different chain than the configuration says."""


class InvalidAddress(SegwatchError):
    """An address that is malformed, mis-checksummed or of another network."""
