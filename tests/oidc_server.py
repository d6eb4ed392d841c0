"""A real OpenID Connect provider for tests, built from Authlib's server components and
served by Werkzeug on a loopback port: discovery document, JWKS, authorization-code flow
with PKCE (S256, required) and signed (RS256) ID tokens with the nonce.

There is no login page: every authorization request is answered for ``server.person``
(a dict of claims: sub, email, email_verified, name). ``server.audience`` replaces the ID
token's ``aud`` (and ``server.azp`` adds an ``azp`` claim), to test a token issued to
someone else.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

from tests.oauth_server import QuietRequestHandler

AUTH_METHODS = ("client_secret_basic", "client_secret_post")


class Client(ClientMixin):
    def __init__(self, client_id: str, client_secret: str):
        self.client_id, self.client_secret = client_id, client_secret

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split() if s in ("openid", "email", "profile"))

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri.startswith(("http://localhost/", "http://127.0.0.1"))

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in AUTH_METHODS

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    person: dict[str, Any]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    created_at: float = field(default_factory=time.time)

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return int(self.created_at)

    def get_acr(self):
        return None

    def get_amr(self):
        return None


@dataclass(frozen=True)
class Person:
    claims: tuple

    def get_user_id(self):
        return dict(self.claims)["sub"]


class OIDCServer:
    def __init__(self, client_id: str = "portal", client_secret: str = "sso-secret"):
        self.client = Client(client_id, client_secret)
        self.person: dict[str, Any] = {"sub": "u-1", "email": "ana@example.com",
                                       "email_verified": True, "name": "Ana"}
        self.audience: list[str] | str | None = None
        self.azp: str | None = None
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self.nonces: list[str | None] = []
        self.code_challenges: list[str | None] = []
        self._codes: dict[str, Code] = {}
        self._lock = threading.Lock()
        self.issuer = ""
        self._httpd = None
        self._thread: threading.Thread | None = None
        self.app = self._create_app()

    def __enter__(self) -> OIDCServer:
        self._httpd = make_server("127.0.0.1", 0, self.app, threaded=True,
                                  request_handler=QuietRequestHandler)
        self.issuer = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _create_app(self) -> Flask:
        app = Flask(__name__)
        outer = self
        server = AuthorizationServer(
            app, query_client=lambda cid: self.client if cid == self.client.client_id else None,
            save_token=lambda token, req: None)

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

            def save_authorization_code(self, code, req):
                data = req.payload.data
                with outer._lock:
                    outer._codes[code] = Code(
                        code=code, client_id=req.client.get_client_id(),
                        redirect_uri=req.payload.redirect_uri, scope=req.scope,
                        person=dict(req.user.claims), nonce=data.get("nonce"),
                        code_challenge=data.get("code_challenge"),
                        code_challenge_method=data.get("code_challenge_method"))

            def query_authorization_code(self, code, client):
                with outer._lock:
                    item = outer._codes.get(code)
                if item and item.client_id == client.get_client_id():
                    return item
                return None

            def delete_authorization_code(self, authorization_code):
                with outer._lock:
                    outer._codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return Person(tuple(authorization_code.person.items()))

        class IDTokens(OpenIDCode):
            def exists_nonce(self, nonce, request):
                return False

            def resolve_client_private_key(self, client):
                return outer.key

            def get_client_algorithm(self, client):
                return "RS256"

            def get_encode_header(self, client):
                return {"alg": "RS256", "kid": "test-key"}

            def get_client_claims(self, client):
                now = int(time.time())
                claims = {"iss": outer.issuer, "iat": now, "exp": now + 300,
                          "aud": outer.audience or [client.get_client_id()]}
                if outer.azp:
                    claims["azp"] = outer.azp
                return claims

            def generate_user_info(self, user, scope):
                return dict(user.claims)

        server.register_grant(CodeGrant, [CodeChallenge(required=True), IDTokens()])

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return jsonify(
                issuer=outer.issuer, authorization_endpoint=outer.issuer + "/authorize",
                token_endpoint=outer.issuer + "/token", jwks_uri=outer.issuer + "/jwks",
                response_types_supported=["code"], subject_types_supported=["public"],
                id_token_signing_alg_values_supported=["RS256"],
                code_challenge_methods_supported=["S256"],
                scopes_supported=["openid", "email", "profile"])

        @app.get("/jwks")
        def jwks():
            return jsonify(keys=[outer.key.as_dict(private=False)])

        @app.get("/authorize")
        def authorize():
            from flask import request

            with outer._lock:
                outer.nonces.append(request.args.get("nonce"))
                outer.code_challenges.append(request.args.get("code_challenge"))
            person = Person(tuple(outer.person.items()))
            try:
                grant = server.get_consent_grant(end_user=person)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            return server.create_authorization_response(grant_user=person, grant=grant)

        @app.post("/token")
        def token():
            return server.create_token_response()

        return app
