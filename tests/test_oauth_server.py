"""Self-test of tests/oauth_server.py, driven with httpx (no browser)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from tests.oauth_server import OAuthServer

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: redirects are not followed


def pkce_pair() -> tuple[str, str]:
    verifier = generate_token(64)
    return verifier, create_s256_code_challenge(verifier)


def authorize(server: OAuthServer, challenge: str | None, state: str = "st-1", **extra) -> dict:
    """GET /authorize without following the redirect; returns the redirect's query params."""
    params = {
        "response_type": "code",
        "client_id": "portal-client",
        "redirect_uri": REDIRECT_URI,
        "scope": "read write",
        "state": state,
        **extra,
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    resp = httpx.get(server.authorize_url, params=params)
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(server: OAuthServer, code: str, verifier: str, *, basic: bool = False):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    if basic:
        return httpx.post(server.token_url, data=data, auth=("portal-client", "portal-secret"))
    data |= {"client_id": "portal-client", "client_secret": "portal-secret"}
    return httpx.post(server.token_url, data=data)


def refresh(server: OAuthServer, refresh_token: str):
    return httpx.post(
        server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=("portal-client", "portal-secret"),
    )


def me(server: OAuthServer, access_token: str):
    return httpx.get(server.api_url + "/me", headers={"Authorization": f"Bearer {access_token}"})


def login(server: OAuthServer) -> dict:
    verifier, challenge = pkce_pair()
    code = authorize(server, challenge)["code"]
    resp = exchange(server, code, verifier)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_authorization_code_round_trip_with_pkce():
    with OAuthServer(redirect_uris=[REDIRECT_URI]) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        verifier, challenge = pkce_pair()
        params = authorize(server, challenge, state="xyz")
        assert params["state"] == "xyz" and params["code"]
        assert server.code_challenges == [challenge]

        resp = exchange(server, params["code"], verifier, basic=True)
        assert resp.status_code == 200, resp.text
        token = resp.json()
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 3600
        assert token["scope"] == "read write"
        assert token["refresh_token"]
        assert server.issued == [
            {k: token[k] for k in ("access_token", "refresh_token", "expires_in")}
        ]
        assert server.token_requests == [
            {
                "grant_type": "authorization_code",
                "code_verifier": verifier,
                "refresh_token": None,
                "ok": True,
            }
        ]

        resp = me(server, token["access_token"])
        assert resp.status_code == 200
        assert resp.json() == {"account": "acme", "scope": "read write"}

        # The code is single use, and the API wants a token.
        assert exchange(server, params["code"], verifier).json()["error"] == "invalid_grant"
        assert httpx.get(server.api_url + "/me").status_code == 401
        assert me(server, "not-a-token").status_code == 401


def test_consent_denied_redirects_with_access_denied_and_state():
    with OAuthServer(redirect_uris=[REDIRECT_URI]) as server:
        server.consent = "deny"
        params = authorize(server, pkce_pair()[1], state="keep-me")
        assert params["error"] == "access_denied" and params["state"] == "keep-me"
        assert "code" not in params


def test_wrong_code_verifier_is_invalid_grant():
    with OAuthServer(redirect_uris=[REDIRECT_URI]) as server:
        _, challenge = pkce_pair()
        code = authorize(server, challenge)["code"]
        resp = exchange(server, code, pkce_pair()[0])
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_grant"
        assert server.token_requests[-1]["ok"] is False
        assert server.issued == []


def test_authorize_without_pkce_is_refused():
    with OAuthServer(redirect_uris=[REDIRECT_URI]) as server:
        params = authorize(server, None, state="s")
        assert params["error"] == "invalid_request" and "code" not in params
        assert params["state"] == "s"

        # plain is not accepted either
        verifier = generate_token(64)
        params = authorize(server, None, code_challenge=verifier, code_challenge_method="plain")
        assert params["error"] == "invalid_request" and "code" not in params

        # an unregistered redirect URI is an error page, never a redirect
        resp = httpx.get(
            server.authorize_url,
            params={
                "response_type": "code",
                "client_id": "portal-client",
                "redirect_uri": "http://127.0.0.1:9/elsewhere",
                "code_challenge": pkce_pair()[1],
                "code_challenge_method": "S256",
            },
        )
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_request"


def test_refresh_rotates_and_revokes():
    with OAuthServer(redirect_uris=[REDIRECT_URI]) as server:
        first = login(server)
        r1 = first["refresh_token"]

        resp = refresh(server, r1)
        assert resp.status_code == 200, resp.text
        second = resp.json()
        r2 = second["refresh_token"]
        assert r2 and r2 != r1
        assert second["access_token"] != first["access_token"]

        # R1 is spent; its access token went with it.
        resp = refresh(server, r1)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
        assert me(server, first["access_token"]).status_code == 401
        assert me(server, second["access_token"]).status_code == 200

        # R2 works (client_secret_post this time).
        resp = httpx.post(
            server.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": r2,
                "client_id": "portal-client",
                "client_secret": "portal-secret",
            },
        )
        assert resp.status_code == 200, resp.text
        assert server.refresh_count() == 2
        assert [r["ok"] for r in server.token_requests] == [True, True, False, True]
        assert server.token_requests[2]["refresh_token"] == r1


def test_access_token_expires_after_its_lifetime():
    with OAuthServer(redirect_uris=[REDIRECT_URI], access_token_lifetime=1) as server:
        token = login(server)
        assert token["expires_in"] == 1
        assert me(server, token["access_token"]).status_code == 200
        time.sleep(1.2)
        assert me(server, token["access_token"]).status_code == 401

        # The lifetime can be changed between grants; the refresh token outlives the access token.
        server.access_token_lifetime = 120
        resp = refresh(server, token["refresh_token"])
        assert resp.status_code == 200 and resp.json()["expires_in"] == 120
        assert me(server, resp.json()["access_token"]).status_code == 200


def test_redirect_uris_can_be_added_after_construction():
    with OAuthServer() as server:
        resp = httpx.get(
            server.authorize_url,
            params={
                "response_type": "code",
                "client_id": "portal-client",
                "redirect_uri": REDIRECT_URI,
            },
        )
        assert resp.status_code == 400
        server.redirect_uris.append(REDIRECT_URI)
        assert "code" in authorize(server, pkce_pair()[1])
