"""The configuration of who may act: declared users, sign-in (sessions, lockout, the
OpenID Provider). Read only from the file: never from the environment, except the
provider's issuer, client id and secret, each from its own variable."""

from __future__ import annotations

import os
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["viewer", "auditor", "maker", "checker", "feeder", "admin"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UserSettings(_Frozen):
    """A declared user: created in the store with these roles when the daemon or the API
    starts (audited as `config`); it acts only with credentials, never by name alone."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    roles: list[Role] = Field(default_factory=list)


class OidcSettings(_Frozen):
    """Sign-in through the firm's OpenID Provider (authorization code + PKCE)."""

    issuer_env: str = "SEGWATCH_OIDC_ISSUER"
    client_id_env: str = "SEGWATCH_OIDC_CLIENT_ID"
    client_secret_env: str = "SEGWATCH_OIDC_CLIENT_SECRET"  # noqa: S105 (a name)
    public_url: str
    """segwatch's own base URL as browsers reach it (the redirect URI is
    PUBLIC_URL/api/v1/auth/oidc/callback)."""
    claim: str = "groups"
    """The ID token claim (a string or a list of strings) mapped to roles."""
    roles: dict[str, list[Role]] = Field(default_factory=dict)
    """Claim value → roles, e.g. { "custody-checkers" = ["checker"] }."""
    scope: str = "openid email profile"

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme not in ("https", "http") or not parts.hostname or \
                (parts.scheme == "http" and not loopback) or parts.query or parts.fragment:
            raise ValueError("public_url must be an https:// base URL (http:// only on "
                             "loopback), without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _env(self) -> Self:
        for name in (self.issuer_env, self.client_id_env, self.client_secret_env):
            if not os.environ.get(name):
                raise ValueError(f"environment variable {name} (auth.oidc) is not set")
        return self

    @property
    def issuer(self) -> str:
        return os.environ[self.issuer_env].rstrip("/")

    @property
    def client_id(self) -> str:
        return os.environ[self.client_id_env]

    @property
    def client_secret(self) -> str:
        """A secret: never logged."""
        return os.environ[self.client_secret_env]


class AuthSettings(_Frozen):
    session_hours: float = Field(default=8.0, gt=0, le=168)
    login_attempts: int = Field(default=5, ge=1, le=100)
    """Failed local sign-ins before the account locks."""
    lockout_minutes: float = Field(default=15.0, gt=0, le=1440)
    secure_cookies: bool = True
    """Send the session cookie only over HTTPS (turn off only for loopback testing)."""
    oidc: OidcSettings | None = None


__all__ = ["AuthSettings", "OidcSettings", "Role", "UserSettings"]
