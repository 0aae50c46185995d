"""The OIDC test provider (tests/oidcprovider.py) works with Authlib: code flow, PKCE S256."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

from tests.oidcprovider import DEFAULT_ACCOUNTS, OidcProvider, sign_in

SCOPE = "openid email profile groups"
StartProvider = Callable[..., OidcProvider]


def _metadata(provider: OidcProvider) -> dict[str, Any]:
    response = httpx.get(provider.metadata_url, trust_env=False, timeout=10)
    response.raise_for_status()
    metadata: dict[str, Any] = response.json()
    assert metadata["issuer"] == provider.issuer
    return metadata


def _client(provider: OidcProvider) -> OAuth2Client:
    return OAuth2Client(
        provider.client_id,
        provider.client_secret,
        scope=SCOPE,
        redirect_uri=provider.redirect_uri,
        token_endpoint_auth_method=provider.auth_method,
        code_challenge_method="S256",
        trust_env=False,
        timeout=10,
    )


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_code_flow_with_pkce_yields_a_valid_id_token(
    oidc_provider: StartProvider, auth_method: str
) -> None:
    provider = oidc_provider(auth_method=auth_method)
    metadata = _metadata(provider)
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    verifier, nonce = generate_token(48), generate_token(20)
    with _client(provider) as client:
        url, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        assert parse_qs(urlsplit(url).query)["code_challenge_method"] == ["S256"]
        callback = sign_in(url, "alice")
        assert callback.startswith(provider.redirect_uri + "?")
        assert parse_qs(urlsplit(callback).query)["state"] == [state]
        token = client.fetch_token(
            metadata["token_endpoint"],
            authorization_response=callback,
            state=state,
            code_verifier=verifier,
        )

    jwks = httpx.get(metadata["jwks_uri"], trust_env=False, timeout=10).json()
    claims = jwt.decode(
        token["id_token"],
        JsonWebKey.import_key_set(jwks),
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": provider.issuer}},
        claims_params={
            "nonce": nonce,
            "client_id": provider.client_id,
            "access_token": token["access_token"],
        },
    )
    claims.validate()  # iss, aud, exp, iat, nonce, at_hash
    alice = DEFAULT_ACCOUNTS["alice"]
    assert claims["sub"] == "alice"
    assert claims["aud"] == provider.client_id
    assert claims["email"] == alice["email"]
    assert claims["name"] == alice["name"]
    assert claims["groups"] == alice["groups"]


def test_pkce_is_enforced(oidc_provider: StartProvider) -> None:
    provider = oidc_provider()
    metadata = _metadata(provider)
    with _client(provider) as client:
        # A code is redeemed only with its code_verifier.
        verifier = generate_token(48)
        url, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier
        )
        callback = sign_in(url, "bob")
        with pytest.raises(OAuthError) as refused:
            client.fetch_token(
                metadata["token_endpoint"], authorization_response=callback, state=state
            )
        assert refused.value.error == "invalid_grant"

        # An authorization request without a code_challenge goes back to the client refused.
        no_pkce = _client(provider)
        no_pkce.code_challenge_method = None
        with no_pkce:
            url, _ = no_pkce.create_authorization_url(metadata["authorization_endpoint"])
        assert "code_challenge" not in parse_qs(urlsplit(url).query)
        query = parse_qs(urlsplit(sign_in(url, "bob")).query)
        assert query["error"] == ["invalid_request"]
        assert "code" not in query


def test_an_unknown_account_cannot_sign_in(oidc_provider: StartProvider) -> None:
    provider = oidc_provider()
    metadata = _metadata(provider)
    with _client(provider) as client:
        url, _ = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=generate_token(48)
        )
    with pytest.raises(AssertionError, match="refused the account 'mallory'"):
        sign_in(url, "mallory")
