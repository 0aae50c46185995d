"""Credentials at rest: argon2id password hashes, API tokens and session secrets kept
only as SHA-256 digests (each is 256 random bits, so a fast hash is enough: there is
nothing to guess)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_PREFIX = "swt_"  # noqa: S105 (a prefix, not a secret)
_TOKEN = re.compile(r"^swt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_HASHER = PasswordHasher()  # argon2id, the library's RFC 9106 low-memory profile
MIN_PASSWORD = 12
MAX_PASSWORD = 1024


def new_token() -> tuple[str, str, str]:
    """Return (id, the token to show once, its digest). The secret is 32 random bytes."""
    token_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    return token_id, token, digest(token)


def parse_token(token: str) -> str | None:
    """The id of a well-formed token, or None."""
    found = _TOKEN.fullmatch(token.strip())
    return found.group(1) if found else None


def digest(secret: str) -> str:
    """SHA-256 hex of a token or session secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


def new_secret() -> str:
    """A 256-bit URL-safe secret (session cookies, CSRF tokens, OIDC state)."""
    return secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    """The argon2id hash of `password` (its length checked by the caller)."""
    return _HASHER.hash(password)


def check_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`; a missing hash never matches (the same work
    is done, so timing does not tell which users have passwords)."""
    if stored is None:
        _HASHER.hash(password)
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why `password` cannot be set, or None."""
    if len(password) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password must have at most {MAX_PASSWORD} characters"
    return None
