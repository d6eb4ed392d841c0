"""Single sign-on with OpenID Connect, through Authlib's Flask client.

Settings: PORTAL_OIDC_ISSUER (its /.well-known/openid-configuration is read),
PORTAL_OIDC_CLIENT_ID, PORTAL_OIDC_CLIENT_SECRET, PORTAL_OIDC_DEFAULT_ROLE (empty: people
with no account are refused; a role: they get an account with it) and PORTAL_PASSWORD_LOGIN
("off" hides password sign-in; allowed only with SSO configured).

Authlib sends state, nonce and a PKCE challenge, keeps them server side (the Redis cache of
portal.oauth), and checks the ID token's signature, issuer, expiry and nonce. The audience
is checked here too: Authlib on its own accepts a token issued to another client when it
names this one as `azp`, so the expected `aud` is passed as a claim option.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.base_client.errors import OAuthError
from flask import Flask, current_app
from joserfc.errors import JoseError as JoserfcError
from requests import RequestException
from werkzeug.security import generate_password_hash

from portal import audit, users
from portal.config import ConfigError
from portal.extensions import db
from portal.models import ROLES, User
from providers import outbound

NAME = "portal_sso"
SCOPE = "openid email profile"


class SignInRefused(Exception):
    """SSO sign-in refused; the message is for the person on the sign-in page."""


def configured(app: Flask | None = None) -> bool:
    config = (app or current_app).config
    return bool(config.get("PORTAL_OIDC_ISSUER") and config.get("PORTAL_OIDC_CLIENT_ID")
                and config.get("PORTAL_OIDC_CLIENT_SECRET"))


def password_login(app: Flask | None = None) -> bool:
    return (app or current_app).config.get("PORTAL_PASSWORD_LOGIN", "on") != "off"


def check_settings(app: Flask) -> None:
    """Refuse settings that would lock everyone out or half-configure SSO."""
    config = app.config
    switch = str(config.get("PORTAL_PASSWORD_LOGIN", "on")).strip().lower() or "on"
    if switch not in ("on", "off"):
        raise ConfigError(f"PORTAL_PASSWORD_LOGIN must be on or off, not {switch!r}.")
    config["PORTAL_PASSWORD_LOGIN"] = switch
    parts = [config.get(name) for name in ("PORTAL_OIDC_ISSUER", "PORTAL_OIDC_CLIENT_ID",
                                           "PORTAL_OIDC_CLIENT_SECRET")]
    if any(parts) and not all(parts):
        raise ConfigError("Single sign-on needs PORTAL_OIDC_ISSUER, PORTAL_OIDC_CLIENT_ID and "
                          "PORTAL_OIDC_CLIENT_SECRET together; one is missing.")
    if switch == "off" and not all(parts):
        raise ConfigError("PORTAL_PASSWORD_LOGIN=off needs single sign-on: set "
                          "PORTAL_OIDC_ISSUER, PORTAL_OIDC_CLIENT_ID and "
                          "PORTAL_OIDC_CLIENT_SECRET, or nobody could sign in.")
    role = config.get("PORTAL_OIDC_DEFAULT_ROLE", "") or ""
    if role and role not in ROLES:
        raise ConfigError(f"PORTAL_OIDC_DEFAULT_ROLE must be empty or one of "
                          f"{', '.join(ROLES)}, not {role!r}.")


def sign_in_origins() -> list[str]:
    """Where "Sign in with SSO" sends the browser: the issuer's origin and, once the
    discovery document is read, its authorization endpoint's (for the page's CSP)."""
    if not configured():
        return []
    urls = [current_app.config["PORTAL_OIDC_ISSUER"]]
    found = current_app.extensions["portal_oauth"]._clients.get(NAME)
    if found is not None and found.server_metadata.get("authorization_endpoint"):
        urls.append(found.server_metadata["authorization_endpoint"])
    origins = []
    for url in urls:
        parts = urlsplit(str(url))
        if parts.scheme in ("http", "https") and parts.netloc:
            origins.append(f"{parts.scheme}://{parts.netloc}")
    return origins


def client():
    """The registered Authlib client (registered on first use)."""
    registry = current_app.extensions["portal_oauth"]
    found = registry.create_client(NAME)
    if found is not None:
        return found
    config = current_app.config
    issuer = config["PORTAL_OIDC_ISSUER"].rstrip("/")
    return registry.register(
        NAME, client_id=config["PORTAL_OIDC_CLIENT_ID"],
        client_secret=config["PORTAL_OIDC_CLIENT_SECRET"],
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": SCOPE, "code_challenge_method": "S256"},
        compliance_fix=outbound.guard_session,
    )


def begin(redirect_uri: str):
    """The redirect to the provider's sign-in page (state, nonce and PKCE included)."""
    try:
        return client().authorize_redirect(redirect_uri)
    except (RequestException, OAuthError, ValueError, KeyError,
            outbound.OutboundRefused) as exc:
        current_app.logger.warning("SSO discovery failed: %s", type(exc).__name__)
        raise SignInRefused("The single sign-on provider could not be reached. Try again "
                            "later or ask an administrator.") from None


def finish() -> User:
    """Finish the sign-in on the callback: the matching, active user (created with the
    default role when allowed). Raises SignInRefused with a message for the person."""
    sso = client()
    try:
        metadata = sso.load_server_metadata()
        token = sso.authorize_access_token(claims_options={
            "iss": {"essential": True, "values": [metadata["issuer"]]},
            "aud": {"essential": True, "values": [sso.client_id]},
        })
    except OAuthError as exc:
        raise SignInRefused(_said(exc)) from None
    except (JoserfcError, ValueError, KeyError) as exc:
        _refusal(f"ID token refused ({type(exc).__name__}: {str(exc)[:200]})")
        raise SignInRefused("The single sign-on answer could not be verified, so you are "
                            "not signed in. Ask an administrator.") from None
    except (RequestException, outbound.OutboundRefused):
        raise SignInRefused("The single sign-on provider could not be reached. Try "
                            "again later.") from None
    claims: dict[str, Any] = dict(token.get("userinfo") or {})
    if not claims:
        _refusal("no ID token in the answer")
        raise SignInRefused("The single sign-on provider sent no ID token.")
    return match_user(claims)


def _said(exc: OAuthError) -> str:
    if exc.error == "mismatching_state":
        return ("The sign-in took too long or was started in another tab. Start it again.")
    if exc.error == "access_denied":
        return "The single sign-on provider did not sign you in."
    _refusal(f"provider error {str(exc.error)[:100]}")
    return "The single sign-on provider refused the sign-in. Try again or ask an administrator."


def _refusal(why: str, email: str = "", user: User | None = None) -> None:
    audit.record("sign_in_failed", "user", user.id if user else None, email[:200],
                 actor=email or "single sign-on", method="sso",
                 summary=f"Single sign-on refused: {why}.")
    db.session.commit()


def match_user(claims: dict[str, Any]) -> User:
    """The user the verified claims name, by email (case-insensitive)."""
    email = claims.get("email")
    if not isinstance(email, str) or not users.EMAIL_SHAPE.fullmatch(email.strip()):
        _refusal("the provider sent no email address")
        raise SignInRefused("The single sign-on provider did not share your email "
                            "address, so the portal cannot tell who you are.")
    email = email.strip().lower()
    if "email_verified" in claims and claims["email_verified"] is not True:
        _refusal("the email address is not verified", email)
        raise SignInRefused("Your email address is not verified at the single sign-on "
                            "provider. Verify it there and try again.")
    user = users.find_by_email(email)
    if user is None:
        role = current_app.config.get("PORTAL_OIDC_DEFAULT_ROLE") or ""
        if not role:
            _refusal("no account has this email", email)
            raise SignInRefused(f"There is no account for {email} in this portal. Ask an "
                                f"administrator to add you.")
        name = claims.get("name") if isinstance(claims.get("name"), str) else ""
        user = User(email=email, name=(name or "").strip()[:users.NAME_LIMIT], role=role,
                    password_hash=_unusable_hash())
        db.session.add(user)
        db.session.flush()
        audit.record("created", "user", user.id, user.email, actor="single sign-on",
                     role=role, summary=f"User created at first single sign-on with the "
                                        f"{role} role")
        db.session.commit()
    if not user.active:
        _refusal("the account is disabled", email, user)
        raise SignInRefused("Your account is disabled. Ask an administrator.")
    return user


def _unusable_hash() -> str:
    """A password hash nobody knows the password of: SSO accounts sign in only by SSO
    until an admin sets a password."""
    return generate_password_hash(secrets.token_urlsafe(32))
