"""A real OAuth 2.0 authorization server for tests, built from Authlib's server components.

Authorization-code grant with PKCE (S256 only, required on every authorization request),
a refresh-token grant that rotates refresh tokens, and one protected resource (``/api/me``).
Storage is in memory; the Flask app is served by Werkzeug on a loopback port in a background
thread::

    with OAuthServer(redirect_uris=["http://127.0.0.1:5000/callback"]) as server:
        ...  # point the client at server.authorize_url / server.token_url / server.api_url

There is no login page: the resource owner is a fixed account (user id 1, "acme") whose
answer to every consent request is ``server.consent`` ("grant" or "deny").
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass, field

# OAuth 2.0 requires TLS. This server, its redirect URIs and its token endpoint are plain
# http on loopback inside the test process, so Authlib's transport check is switched off.
# (The installed Authlib 1.9 already exempts 127.0.0.1/localhost, but older releases that
# pyproject allows do not.) It is process-wide: never import this module outside tests.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.flask_oauth2 import (  # noqa: E402
    AuthorizationServer,
    ResourceProtector,
    current_token,
)
from authlib.oauth2 import OAuth2Error  # noqa: E402
from authlib.oauth2.rfc6749 import (  # noqa: E402
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidRequestError,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list  # noqa: E402
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator  # noqa: E402
from authlib.oauth2.rfc7636 import CodeChallenge  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

AUTH_METHODS = ("client_secret_basic", "client_secret_post")
CODE_LIFETIME = 600  # seconds; RFC 6749 recommends at most ten minutes


class QuietRequestHandler(WSGIRequestHandler):
    """Keeps Werkzeug's per-request access log out of the test output (errors still log)."""

    def log_request(self, code="-", size="-"):
        pass


@dataclass(frozen=True)
class User:
    id: int
    name: str

    def get_user_id(self) -> int:
        return self.id


ACME = User(id=1, name="acme")


class Client(ClientMixin):
    """The one confidential client. Reads redirect URIs and scopes live from the server."""

    def __init__(self, server: OAuthServer, client_id: str, client_secret: str):
        self.server = server
        self.client_id = client_id
        self.client_secret = client_secret

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        uris = self.server.redirect_uris
        return uris[0] if uris else None

    def get_allowed_scope(self, scope):
        allowed = list(self.server.scopes)
        if not scope:  # RFC 6749 section 3.3: omitted scope means the default, here all
            return list_to_scope(allowed)
        return list_to_scope([s for s in scope_to_list(scope) if s in allowed])

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.server.redirect_uris

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in AUTH_METHODS

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str | None
    scope: str
    user_id: int
    code_challenge: str | None
    code_challenge_method: str | None
    created_at: float = field(default_factory=time.time)

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def is_expired(self) -> bool:
        return time.time() > self.created_at + CODE_LIFETIME


@dataclass
class Token(TokenMixin):
    client: Client
    user_id: int
    access_token: str
    refresh_token: str | None
    scope: str
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False

    def check_client(self, client):
        return client.get_client_id() == self.client.get_client_id()

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return ACME if self.user_id == ACME.id else None

    def get_client(self):
        return self.client


class S256CodeChallenge(CodeChallenge):
    """PKCE that is mandatory at the authorization endpoint and allows S256 only.

    Authlib's ``CodeChallenge(required=True)`` only forces a ``code_verifier`` on *public*
    clients at the token endpoint; an authorization request without a challenge passes.
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class OAuthServer:
    def __init__(
        self,
        *,
        client_id: str = "portal-client",
        client_secret: str = "portal-secret",
        redirect_uris=(),
        scopes=("read", "write"),
        access_token_lifetime: int = 3600,
    ):
        self.client = Client(self, client_id, client_secret)
        self.redirect_uris: list[str] = list(redirect_uris)
        self.scopes: tuple[str, ...] = tuple(scopes)
        self.access_token_lifetime = access_token_lifetime
        self.consent = "grant"
        # Fields added to every token response (some providers send more than RFC 6749's).
        self.token_extras: dict[str, str] = {}

        self.code_challenges: list[str] = []
        self.token_requests: list[dict] = []
        self.issued: list[dict] = []

        self._lock = threading.RLock()
        self._codes: dict[str, AuthorizationCode] = {}
        self._tokens: list[Token] = []

        self.base_url = ""
        self._httpd = None
        self._thread: threading.Thread | None = None
        self.app = self._create_app()

    # -- URLs -------------------------------------------------------------------------------

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/oauth2/authorize"

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth2/token"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api"

    def refresh_count(self) -> int:
        with self._lock:
            return sum(
                1 for r in self.token_requests if r["grant_type"] == "refresh_token" and r["ok"]
            )

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> OAuthServer:
        self._httpd = make_server(
            "127.0.0.1", 0, self.app, threaded=True, request_handler=QuietRequestHandler
        )
        self.base_url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name="oauth-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    # -- storage (called by Authlib) --------------------------------------------------------

    def _query_client(self, client_id):
        return self.client if client_id == self.client.client_id else None

    def _save_token(self, token: dict, req) -> None:
        with self._lock:
            self._tokens.append(
                Token(
                    client=req.client,
                    user_id=req.user.get_user_id(),
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    scope=token.get("scope", ""),
                    expires_in=token["expires_in"],
                )
            )
            self.issued.append(
                {
                    "access_token": token["access_token"],
                    "refresh_token": token.get("refresh_token"),
                    "expires_in": token["expires_in"],
                }
            )

    def _find_token(self, **match) -> Token | None:
        ((attr, value),) = match.items()
        with self._lock:
            for tok in self._tokens:
                if getattr(tok, attr) == value:
                    return tok
        return None

    # -- the Flask app ----------------------------------------------------------------------

    def _create_app(self) -> Flask:
        app = Flask(__name__)
        app.config["OAUTH2_SCOPES_SUPPORTED"] = list(self.scopes)
        server = AuthorizationServer(
            app, query_client=self._query_client, save_token=self._save_token
        )
        # expires_in follows access_token_lifetime at issue time, so tests may change it.
        bearer = BearerTokenGenerator(
            access_token_generator=lambda **kw: generate_token(42),
            refresh_token_generator=lambda **kw: generate_token(48),
            expires_generator=lambda client, grant_type: self.access_token_lifetime,
        )
        server.register_token_generator(
            "default", lambda *args, **kw: {**bearer(*args, **kw), **self.token_extras})
        server.register_grant(self._code_grant_class(), [S256CodeChallenge(required=True)])
        server.register_grant(self._refresh_grant_class())

        outer = self

        class Validator(BearerTokenValidator):
            def authenticate_token(self, token_string):
                return outer._find_token(access_token=token_string)

        require_oauth = ResourceProtector()
        require_oauth.register_token_validator(Validator())

        @app.get("/oauth2/authorize")
        def authorize():
            challenge = request.args.get("code_challenge")
            if challenge is not None:
                with self._lock:
                    self.code_challenges.append(challenge)
            try:
                grant = server.get_consent_grant(end_user=ACME)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            user = ACME if self.consent == "grant" else None
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/oauth2/token")
        def issue_token():
            # Token requests are serialized so that a refresh token cannot be redeemed twice
            # by two concurrent requests (validate-then-revoke is not atomic in Authlib).
            with self._lock:
                response = server.create_token_response()
                self.token_requests.append(
                    {
                        "grant_type": request.form.get("grant_type"),
                        "code_verifier": request.form.get("code_verifier"),
                        "refresh_token": request.form.get("refresh_token"),
                        "ok": response.status_code == 200,
                    }
                )
            return response

        @app.get("/api/me")
        @require_oauth()
        def me():
            return jsonify(account=ACME.name, scope=current_token.get_scope())

        return app

    def _code_grant_class(self):
        outer = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

            def save_authorization_code(self, code, req):
                data = req.payload.data
                with outer._lock:
                    outer._codes[code] = AuthorizationCode(
                        code=code,
                        client_id=req.client.get_client_id(),
                        redirect_uri=req.payload.redirect_uri,
                        scope=req.scope,
                        user_id=req.user.get_user_id(),
                        code_challenge=data.get("code_challenge"),
                        code_challenge_method=data.get("code_challenge_method"),
                    )

            def query_authorization_code(self, code, client):
                with outer._lock:
                    item = outer._codes.get(code)
                if item and item.client_id == client.get_client_id() and not item.is_expired():
                    return item
                return None

            def delete_authorization_code(self, authorization_code):
                with outer._lock:
                    outer._codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return ACME if authorization_code.user_id == ACME.id else None

        return CodeGrant

    def _refresh_grant_class(self):
        outer = self

        class RotatingRefreshGrant(grants.RefreshTokenGrant):
            # BaseGrant allows client_secret_basic only; accept the POST form too.
            TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: a new refresh token every time

            def authenticate_refresh_token(self, refresh_token):
                tok = outer._find_token(refresh_token=refresh_token)
                if tok and not tok.is_revoked():
                    return tok
                return None

            def authenticate_user(self, refresh_token):
                return refresh_token.get_user()

            def revoke_old_credential(self, refresh_token):
                # Revokes the old refresh token and the access token issued with it.
                with outer._lock:
                    refresh_token.revoked = True

        return RotatingRefreshGrant
