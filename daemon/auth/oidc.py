"""Sign-in through the firm's OpenID Provider: authorization code + PKCE (S256), a
confidential client, the ID token checked (signature against the provider's JWKS,
issuer, audience, expiry, nonce), and the configured claim mapped to roles.

Authlib supplies PKCE (`authlib.oauth2.rfc7636`) and its JOSE successor `joserfc`
checks the ID token; the HTTP calls go through httpx with a deadline. Nothing here is
stored but a pending sign-in's state, verifier and nonce (10 minutes at most).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete
from sqlmodel import col

from daemon.auth.secrets import new_secret
from daemon.errors import InputError, Unauthenticated
from daemon.inputs.auth_settings import OidcSettings
from daemon.store import models as m
from daemon.store.db import session_scope

CALLBACK = "/api/v1/auth/oidc/callback"
PENDING = timedelta(minutes=10)
HTTP_SECONDS = 10.0
DISCOVERY_SECONDS = 300.0
MAX_ANSWER = 1024 * 1024
CONSOLE_STATE = "c."
"""The prefix of a console sign-in's state (new_secret() never contains a dot)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in, and the roles their claims map to."""

    name: str
    roles: frozenset[str]
    claims: Mapping[str, Any]


def map_roles(claims: Mapping[str, Any], claim: str, mapping: Mapping[str, Iterable[str]]
              ) -> frozenset[str]:
    """PURE: the roles `claims[claim]` (a string or a list of strings) maps to."""
    value = claims.get(claim)
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(role for v in values if isinstance(v, str) for role in mapping.get(v, ()))


def user_name(claims: Mapping[str, Any]) -> str:
    """The segwatch user name of a signed-in person: their e-mail when the provider
    verified it, else `oidc:` and the subject."""
    email = claims.get("email")
    if isinstance(email, str) and claims.get("email_verified") is True and email:
        return email[:128]
    return f"oidc-{str(claims.get('sub', ''))[:100]}"


class OidcClient:
    """The relying party: builds the authorization URL, completes the callback."""

    def __init__(self, settings: OidcSettings, engine: Engine,
                 clock: Callable[[], datetime],
                 http: httpx.Client | None = None) -> None:
        self.settings, self._engine, self._clock = settings, engine, clock
        self._http = http or httpx.Client(timeout=HTTP_SECONDS, follow_redirects=False)
        self._lock = threading.Lock()
        self._discovered: tuple[float, dict[str, Any]] | None = None
        self._keys: KeySet | None = None

    @property
    def redirect_uri(self) -> str:
        return self.settings.public_url.rstrip("/") + CALLBACK

    def authorization_url(self, console: bool = False) -> str:
        """Start a sign-in: remember state, verifier and nonce; return the URL to send the
        browser to. A `console` sign-in's state says so (CONSOLE_STATE), so that the
        callback sends the browser to the console rather than answering JSON. Raises
        Unauthenticated when the provider cannot be reached."""
        state = (CONSOLE_STATE if console else "") + new_secret()
        nonce, verifier = new_secret(), new_secret() + new_secret()
        now = self._clock()
        with session_scope(self._engine) as session:
            session.execute(delete(m.OidcLogin).where(col(m.OidcLogin.created_at) < now - PENDING))
            session.add(m.OidcLogin(state=state, verifier=verifier, nonce=nonce,
                                    created_at=now))
        query = {"response_type": "code", "client_id": self.settings.client_id,
                 "redirect_uri": self.redirect_uri, "scope": self.settings.scope,
                 "state": state, "nonce": nonce,
                 "code_challenge": create_s256_code_challenge(verifier),
                 "code_challenge_method": "S256"}
        return f"{self._discovery()['authorization_endpoint']}?{urlencode(query)}"

    def complete(self, code: str, state: str) -> Identity:
        """Finish a sign-in: the state must be pending (used once), the code is exchanged
        with the verifier, the ID token checked. Raises Unauthenticated."""
        pending = self._take(state[:100])
        token = self._post_json(self._discovery()["token_endpoint"], {
            "grant_type": "authorization_code", "code": code[:2048],
            "redirect_uri": self.redirect_uri, "code_verifier": pending.verifier})
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated("the identity provider returned no ID token")
        claims = self._check(id_token, pending.nonce)
        roles = map_roles(claims, self.settings.claim, self.settings.roles)
        return Identity(user_name(claims), roles, claims)

    def close(self) -> None:
        self._http.close()

    # --- internals ----------------------------------------------------------------------
    def _take(self, state: str) -> m.OidcLogin:
        with session_scope(self._engine) as session:
            row = session.get(m.OidcLogin, state)
            if row is None or row.created_at < self._clock() - PENDING:
                raise Unauthenticated("unknown or expired sign-in (start again)")
            session.delete(row)
            return row

    def _discovery(self) -> dict[str, Any]:
        with self._lock:
            if self._discovered and time.monotonic() - self._discovered[0] < DISCOVERY_SECONDS:
                return self._discovered[1]
            doc = self._get_json(f"{self.settings.issuer}/.well-known/openid-configuration")
            if doc.get("issuer", "").rstrip("/") != self.settings.issuer:
                raise Unauthenticated("the identity provider's discovery document names "
                                      "another issuer")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(key), str):
                    raise Unauthenticated(f"the identity provider's discovery document has "
                                          f"no {key}")
            self._discovered = (time.monotonic(), doc)
            self._keys = None
            return doc

    def _check(self, id_token: str, nonce: str) -> dict[str, Any]:
        keys = self._key_set()
        try:
            token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256", "EdDSA"])
            jwt.JWTClaimsRegistry(
                now=int(time.time()), leeway=60,
                iss={"essential": True, "values": [self.settings.issuer,
                                                   self.settings.issuer + "/"]},
                aud={"essential": True, "value": self.settings.client_id},
                exp={"essential": True}, sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"the ID token was refused ({type(exc).__name__})") from None
        return dict(token.claims)

    def _key_set(self) -> KeySet:
        if self._keys is None:
            jwks: Any = self._get_json(self._discovery()["jwks_uri"])
            self._keys = KeySet.import_key_set(jwks)
        return self._keys

    def _get_json(self, url: str) -> dict[str, Any]:
        return self._answer(lambda: self._http.get(url))

    def _post_json(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        auth = (self.settings.client_id, self.settings.client_secret)
        return self._answer(lambda: self._http.post(url, data=form, auth=auth))

    @staticmethod
    def _answer(call: Callable[[], httpx.Response]) -> dict[str, Any]:
        try:
            response = call()
        except httpx.HTTPError as exc:
            raise Unauthenticated(f"the identity provider cannot be reached "
                                  f"({type(exc).__name__})") from None
        if len(response.content) > MAX_ANSWER:
            raise Unauthenticated("the identity provider's answer is too large")
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if response.status_code != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            raise Unauthenticated(f"the identity provider refused the sign-in "
                                  f"(HTTP {response.status_code}"
                                  f"{', ' + str(error)[:60] if error else ''})")
        return doc


def check_callback(code: str | None, state: str | None, error: str | None) -> tuple[str, str]:
    """The code and state of a callback. Raises Unauthenticated (the provider's error) or
    InputError (a malformed callback)."""
    if error:
        raise Unauthenticated(f"the identity provider refused the sign-in: {error[:80]}")
    if not code or not state:
        raise InputError("the sign-in callback needs code and state")
    return code, state
