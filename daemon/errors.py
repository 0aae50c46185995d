"""The daemon's permanent errors, under the same root as the adapters' errors.

Exit codes (SPEC §5) hang off this tree in one place, `exit_code_for`.
"""

from __future__ import annotations

from chains.errors import (
    ChainMismatch,
    DecodeError,
    InvalidAddress,
    SegwatchError,
    SourceUnavailable,
)

EXIT_OK = 0
EXIT_DISCREPANCY = 1
EXIT_USAGE = 2
EXIT_SOURCE = 3


class InputError(SegwatchError):
    """A user-supplied input (ledger file, address, chain name, id) is invalid.

    `lines` carries one message per bad input line, for all-or-nothing imports.
    """

    def __init__(self, user_message: str, lines: list[str] | None = None) -> None:
        super().__init__(user_message)
        self.lines = lines or [user_message]


class ConfigError(InputError):
    """The configuration file or environment holds a bad value."""


class Unauthenticated(InputError):
    """No credentials, or credentials that are unknown, wrong, expired or revoked
    (HTTP 401; exit 2)."""


class Forbidden(InputError):
    """Authenticated, but the principal's roles do not allow the action (HTTP 403;
    exit 2)."""


def exit_code_for(error: SegwatchError) -> int:
    """Return the documented exit code for `error`."""
    if isinstance(error, SourceUnavailable | DecodeError):
        return EXIT_SOURCE
    if isinstance(error, ConfigError | InputError | ChainMismatch | InvalidAddress):
        return EXIT_USAGE
    return EXIT_USAGE
