"""A small Slack on 127.0.0.1 for tests: the Web API methods the Slack provider calls
(auth.test, conversations.list with cursor paging, chat.postMessage), the OAuth v2
authorize page and oauth.v2.access (authorization code with PKCE, and refresh tokens that
rotate on every use, as Slack does with token rotation on).

    with SlackServer() as slack:
        monkeypatch.setenv("PORTAL_SLACK_API_URL", slack.api_url)

Answers are shaped like Slack's: HTTP 200 with {"ok": false, "error": "<code>"} for a
refusal (invalid_auth, channel_not_found, not_in_channel...), HTTP 429 with Retry-After
(from `fail_next`, see tests/loopback.py) when rate limited.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from tests.loopback import LoopbackServer, json_response

CLIENT_ID = "1234.5678"
CLIENT_SECRET = "slack-client-secret-0123456789"


@dataclass
class Channel:
    id: str
    name: str
    member: bool = True  # the app is in it
    archived: bool = False
    private: bool = False


@dataclass
class Posted:
    channel: str
    text: str
    token: str
    arguments: dict[str, Any] = field(default_factory=dict)


class SlackServer(LoopbackServer):
    def __init__(self, *, bot_token: str = "xoxb-1111-2222-abcdefabcdef", rotate: bool = True,
                 **where: Any) -> None:
        super().__init__(**where)
        self.tokens: set[str] = {bot_token}  # access tokens auth.test and the rest accept
        self.rotate = rotate  # token rotation: expiring tokens with refresh tokens
        self.access_token_lifetime = 43200
        self.channels: list[Channel] = []
        self.posted: list[Posted] = []
        self.calls: list[str] = []  # API method names, in order
        self.errors: dict[str, list[str]] = {}  # method -> error codes to answer, once each
        self.page_size = 2  # conversations.list answers at most this many a page
        self.consent = "grant"
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: set[str] = set()  # unspent ones
        self.issued: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, Any]] = []
        self.redirect_uris: list[str] = []

    def __enter__(self) -> SlackServer:
        super().__enter__()
        return self

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/oauth/v2/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/api/oauth.v2.access"

    def add_channel(self, name: str, **flags: Any) -> Channel:
        channel = Channel(id=f"C{len(self.channels) + 1:08d}", name=name, **flags)
        self.channels.append(channel)
        return channel

    def refresh_count(self) -> int:
        return sum(1 for r in self.token_requests if r["grant_type"] == "refresh_token")

    def record(self, request: Request) -> None:
        self.calls.append(request.path.rsplit("/", 1)[-1])

    # --- dispatch ------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/oauth/v2/authorize":
            return self._authorize(request)
        if not path.startswith("/api/"):
            return Response("not found", status=404)
        method = path.removeprefix("/api/")
        arguments = self._arguments(request)
        if method == "oauth.v2.access":
            return self._token(request, arguments)
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        if not token:
            return self._error("not_authed")
        if token not in self.tokens:
            return self._error("invalid_auth")
        queued = self.errors.get(method)
        if queued:
            return self._error(queued.pop(0))
        if method == "auth.test":
            return json_response({"ok": True, "url": "https://acme.slack.example/",
                                  "team": "Acme", "team_id": "T0001", "user": "portalbot",
                                  "user_id": "U0001", "bot_id": "B0001"})
        if method == "conversations.list":
            return self._conversations(arguments)
        if method == "chat.postMessage":
            return self._post(arguments, token)
        return self._error("unknown_method")

    @staticmethod
    def _arguments(request: Request) -> dict[str, Any]:
        arguments: dict[str, Any] = dict(request.args.items())
        arguments.update(request.form.items())
        if request.mimetype == "application/json":
            arguments.update(request.get_json(silent=True) or {})
        return arguments

    @staticmethod
    def _error(code: str) -> Response:
        return json_response({"ok": False, "error": code})

    # --- Web API ---------------------------------------------------------------------------

    def _conversations(self, arguments: dict[str, Any]) -> Response:
        exclude = str(arguments.get("exclude_archived", "")).lower() in ("1", "true")
        types = str(arguments.get("types") or "public_channel").split(",")
        visible = [c for c in self.channels
                   if not (exclude and c.archived)
                   and ("private_channel" if c.private else "public_channel") in types
                   and (c.member or not c.private)]
        start = int(arguments.get("cursor") or 0)
        size = min(int(arguments.get("limit") or 100), self.page_size)
        page = visible[start:start + size]
        following = start + size if start + size < len(visible) else None
        return json_response({
            "ok": True,
            "channels": [{"id": c.id, "name": c.name, "is_archived": c.archived,
                          "is_private": c.private, "is_member": c.member} for c in page],
            "response_metadata": {"next_cursor": str(following) if following else ""},
        })

    def _post(self, arguments: dict[str, Any], token: str) -> Response:
        wanted = str(arguments.get("channel") or "")
        channel = next((c for c in self.channels
                        if wanted in (c.id, c.name, f"#{c.name}")), None)
        if channel is None:
            return self._error("channel_not_found")
        if channel.archived:
            return self._error("is_archived")
        if not channel.member:
            return self._error("not_in_channel")
        self.posted.append(Posted(channel.id, str(arguments.get("text") or ""), token,
                                  arguments))
        return json_response({"ok": True, "channel": channel.id,
                              "ts": f"{time.time():.6f}", "message": {"text": arguments.get(
                                  "text")}})

    # --- OAuth v2 ------------------------------------------------------------------------

    def _authorize(self, request: Request) -> Response:
        args = request.args
        redirect_uri = args.get("redirect_uri", "")
        if args.get("client_id") != CLIENT_ID or (
                self.redirect_uris and redirect_uri not in self.redirect_uris):
            return Response("bad client or redirect_uri", status=400)
        state = args.get("state", "")
        if self.consent != "grant":
            query = {"error": "access_denied", "state": state}
        else:
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"redirect_uri": redirect_uri, "scope": args.get("scope", ""),
                                "challenge": args.get("code_challenge"),
                                "method": args.get("code_challenge_method")}
            query = {"code": code, "state": state}
        return Response(status=302, headers={"Location": f"{redirect_uri}?{urlencode(query)}"})

    def _client_ok(self, request: Request, arguments: dict[str, Any]) -> bool:
        client_id, client_secret = arguments.get("client_id"), arguments.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(
                header.removeprefix("Basic ")).decode().partition(":")
        return client_id == CLIENT_ID and client_secret == CLIENT_SECRET

    def _token(self, request: Request, arguments: dict[str, Any]) -> Response:
        grant = str(arguments.get("grant_type") or "authorization_code")
        entry: dict[str, Any] = {"grant_type": grant, "ok": False, **{
            key: arguments.get(key) for key in ("code_verifier", "redirect_uri")}}
        self.token_requests.append(entry)
        if not self._client_ok(request, arguments):
            return self._error("invalid_client_id")
        if grant == "refresh_token":
            spent = str(arguments.get("refresh_token") or "")
            if spent not in self.refresh_tokens:
                return self._error("invalid_refresh_token")
            self.refresh_tokens.discard(spent)
        else:
            code = self.codes.pop(str(arguments.get("code") or ""), None)
            if code is None:
                return self._error("invalid_code")
            if code["redirect_uri"] != arguments.get("redirect_uri"):
                return self._error("bad_redirect_uri")
            verifier = str(arguments.get("code_verifier") or "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if code["challenge"] and digest.rstrip(b"=").decode() != code["challenge"]:
                return self._error("invalid_code_verifier")
        entry["ok"] = True
        return json_response(self._issue())

    def _issue(self) -> dict[str, Any]:
        access = f"xoxb-{secrets.token_hex(4)}-{secrets.token_hex(12)}"
        self.tokens = {access}  # only the newest access token works
        answer: dict[str, Any] = {
            "ok": True, "access_token": access, "token_type": "bot",
            "scope": "chat:write,channels:read,groups:read", "bot_user_id": "U0001",
            "app_id": "A0001", "team": {"id": "T0001", "name": "Acme"}, "enterprise": None,
            "authed_user": {"id": "U0999"},
        }
        if self.rotate:
            refresh = f"xoxe-1-{secrets.token_hex(16)}"
            self.refresh_tokens.add(refresh)
            answer.update(refresh_token=refresh, expires_in=self.access_token_lifetime)
        self.issued.append(answer)
        return answer

    def issue_token(self) -> dict[str, Any]:
        """A token as if a sign-in had just happened (for tests that skip the browser)."""
        return json.loads(json.dumps(self._issue()))
