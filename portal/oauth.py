"""OAuth 2.0 sign-in for Vault authorizations, through Authlib's Flask client.

Authlib keeps the state and the PKCE verifier of a sign-in in progress; by default that
is Flask's session, a signed but readable cookie. Here it is Redis (server side), with
only an expiry marker in the session. What the portal itself needs to finish the sign-in
(label, description, where to return) is kept beside it under the same state.
"""

from __future__ import annotations

import json
from typing import Any

from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app
from requests import RequestException

from portal import vault
from portal.queues import redis_connection
from providers import outbound
from providers.base import AuthMethod, Provider

PREFIX = "portal:oauth:"
PENDING_SECONDS = 3600


class RedisStateCache:
    """The get/set/delete cache Authlib asks for, in Redis."""

    def get(self, key: str) -> Any:
        return redis_connection().get(PREFIX + key)

    def set(self, key: str, value: str, timeout: int | None = None) -> None:
        redis_connection().set(PREFIX + key, value, ex=timeout or PENDING_SECONDS)

    def delete(self, key: str) -> None:
        redis_connection().delete(PREFIX + key)


def init_app(app: Flask) -> None:
    app.extensions["portal_oauth"] = OAuth(app, cache=RedisStateCache())


def client(provider: Provider, method: AuthMethod):
    """The Authlib client of this provider's OAuth method (MissingOAuthSettings when its
    client id/secret are not configured)."""
    registry: OAuth = current_app.extensions["portal_oauth"]
    found = registry.create_client(provider.key)
    if found is not None:
        return found
    settings = vault.oauth_settings(provider, method)
    kwargs: dict[str, Any] = {"scope": settings["scope"]} if settings["scope"] else {}
    if method.oauth.pkce:
        kwargs["code_challenge_method"] = "S256"
    # Authlib hands each session it makes to `compliance_fix`: there it gets the outbound
    # policy, so the token exchange reaches only addresses PORTAL_OUTBOUND_ALLOW permits.
    return registry.register(
        provider.key, client_id=settings["client_id"], client_secret=settings["client_secret"],
        authorize_url=settings["authorize_url"], access_token_url=settings["token_url"],
        client_kwargs=kwargs, compliance_fix=outbound.guard_session,
    )


def begin(provider: Provider, method: AuthMethod, redirect_uri: str,
          pending: dict[str, Any]) -> str:
    """Start a sign-in; returns the provider's authorization URL to send the browser to."""
    oauth_client = client(provider, method)
    found = oauth_client.create_authorization_url(redirect_uri)
    oauth_client.save_authorize_data(redirect_uri=redirect_uri, **found)
    RedisStateCache().set(f"pending:{found['state']}", json.dumps(pending), PENDING_SECONDS)
    return found["url"]


def pending(state: str | None) -> dict[str, Any] | None:
    """What the portal kept for the sign-in with this state, or None (unknown/expired)."""
    if not state:
        return None
    raw = RedisStateCache().get(f"pending:{state}")
    return json.loads(raw) if raw else None


def finish(provider: Provider, method: AuthMethod, state: str) -> dict[str, Any]:
    """Exchange the code for a token (Authlib checks the state and sends the PKCE
    verifier); raises authlib's OAuthError (also when the token endpoint cannot be
    reached or the outbound policy refuses it) / MismatchingStateError."""
    try:
        token = dict(client(provider, method).authorize_access_token())
        # Where the token came from: its refresh token is only ever sent back there.
        token[vault.TOKEN_ENDPOINT] = vault.oauth_settings(provider, method)["token_url"]
        return token
    except MismatchingStateError:
        raise
    except OAuthError as exc:
        # The provider's error code is shown; anything else it wrote is not repeated.
        settings = vault.oauth_settings(provider, method)
        code = vault.oauth_error(exc.error, [settings["client_secret"]])
        raise OAuthError(error=code) from None
    except outbound.OutboundRefused:
        # Said as the error Authlib would raise, so the page says it like a refusal.
        raise OAuthError(error="its token endpoint is at an address the portal does not "
                               f"connect to; an administrator can allow it with "
                               f"{outbound.SETTING}") from None
    except RequestException:
        raise OAuthError(error="its token endpoint could not be reached") from None
    finally:
        discard(state)


def discard(state: str) -> None:
    """Forget a sign-in the provider refused, so its state cannot be used again."""
    RedisStateCache().delete(f"pending:{state}")
