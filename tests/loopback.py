"""Real HTTP servers on 127.0.0.1 for tests: a small Mailchimp and a webhook receiver.

Each is a context manager that serves a WSGI app from a thread on a free port:

    with MailchimpServer(api_key=KEY) as mailchimp:
        monkeypatch.setenv("PORTAL_MAILCHIMP_API_URL", mailchimp.api_url)
        ...

`fail_next` holds HTTP statuses to answer, one per request, before any real handling
(429 comes with `Retry-After: <retry_after>`); every request is recorded first.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import socket
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

TEST_API_KEY = "0123456789abcdef0123456789abcdef-us6"


def unused_url() -> str:
    """An http URL on a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    content_type = "application/problem+json" if status >= 400 else "application/json"
    return Response(json.dumps(body), status=status, content_type=content_type,
                    headers=headers or {})


def problem(status: int, detail: str, title: str | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """An RFC 7807 problem document, the way Mailchimp words its errors."""
    return json_response({
        "type": "https://example.invalid/problems",
        "title": title or HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }, status, headers)


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class LoopbackServer:
    """Serves `handle(request)` on 127.0.0.1 from a thread while the `with` block runs."""

    retry_after: str | None = "7"  # the Retry-After of an injected 429; None: no header

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fail_next: list[int] = []
        self.host, self.port = host, port  # another loopback address, a fixed port
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; use it in a with block")
        return f"http://{self.host}:{self._server.server_port}"

    @property
    def server_port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; use it in a with block")
        return self._server.server_port

    def __enter__(self) -> LoopbackServer:
        self._server = make_server(self.host, self.port, self._wsgi, threaded=True,
                                   request_handler=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=type(self).__name__, daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse):
        request = Request(environ)
        self.record(request)
        with self._lock:
            status = self.fail_next.pop(0) if self.fail_next else None
        if status is not None:
            wait = self.retry_after if status == 429 else None
            response = problem(status, "Injected failure",
                               headers={"Retry-After": wait} if wait else None)
        else:
            response = self.handle(request)
        return response(environ, start_response)

    def record(self, request: Request) -> None:
        """Note a request before it is answered."""

    def handle(self, request: Request) -> Response:
        raise NotImplementedError


def _auth_kind(header: str) -> str:
    scheme = header.partition(" ")[0].lower()
    return scheme if scheme in ("basic", "bearer", "oauth") else ("none" if not header else "other")


def _time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class MailchimpServer(LoopbackServer):
    """The parts of the Mailchimp Marketing API and OAuth metadata endpoint the provider uses.

    Accepts HTTP basic auth whose password is `api_key` and Bearer tokens in
    `access_tokens`; the metadata endpoint accepts `OAuth <token>` for the same tokens.
    Fill `members[list_id]` (or call `add_member`) for GET /3.0/lists/<id>/members.

    Batches: POST /3.0/batches records a batch (`batches`, by id) that GET
    /3.0/batches/<id> reports "started" `batch_polls` times, then "finished": its
    operations (member PUT = add or update, keeping the status of a member it has;
    DELETE = archive, 404 when there is no such member) run then, and their results are
    served, without credentials, as a tar.gz of JSON at the batch's response_body_url.
    Emails in `reject_emails` are refused with a 400, the way Mailchimp refuses a fake
    address; `fail_polls` holds statuses to answer batch GETs with first.
    """

    def __init__(self, api_key: str = TEST_API_KEY, access_tokens: set[str] | None = None,
                 account_name: str = "acme") -> None:
        super().__init__()
        self.api_key = api_key
        self.access_tokens: set[str] = set(access_tokens or ())
        self.account_name = account_name
        self.members: dict[str, list[dict[str, Any]]] = {}
        self.list_names: dict[str, str] = {}  # GET /3.0/lists names each audience
        self.requests: list[tuple[str, str, str]] = []  # (method, path, auth kind)
        self.queries: list[dict[str, str]] = []  # the query arguments of each request
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_polls = 1  # GETs of a batch that answer "started" before "finished"
        self.reject_emails: set[str] = set()
        self.fail_polls: list[int] = []  # statuses to answer GETs of batches with first

    def members_of(self, list_id: str, status: str | None = None) -> list[str]:
        """The emails of a list's members (with that status), in the order they came."""
        return [m["email_address"] for m in self.members.get(list_id, [])
                if status is None or m["status"] == status]

    def posted_batches(self) -> list[dict[str, Any]]:
        """The batches created, oldest first."""
        return list(self.batches.values())

    def __enter__(self) -> MailchimpServer:
        super().__enter__()
        return self

    @property
    def api_url(self) -> str:
        return self.base_url + "/3.0"

    @property
    def metadata_url(self) -> str:
        return self.base_url + "/oauth2/metadata"

    def add_member(self, list_id: str, email: str, *, status: str = "subscribed",
                   last_changed: str = "2024-01-01T00:00:00+00:00",
                   merge_fields: dict[str, Any] | None = None,
                   tags: tuple[str, ...] = ()) -> dict[str, Any]:
        """Add a member shaped like Mailchimp's (id = MD5 of the lower-cased email)."""
        member = {
            "id": hashlib.md5(email.lower().encode()).hexdigest(),
            "email_address": email,
            "status": status,
            "merge_fields": merge_fields or {},
            "tags": [{"id": n, "name": name} for n, name in enumerate(tags, start=1)],
            "last_changed": last_changed,
            "timestamp_opt": last_changed,
            "list_id": list_id,
        }
        self.members.setdefault(list_id, []).append(member)
        return member

    def record(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        self.requests.append((request.method, request.path, _auth_kind(header)))
        self.queries.append(dict(request.args))

    def _api_authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value in self.access_tokens
        if scheme.lower() == "basic":
            auth = Request({"HTTP_AUTHORIZATION": header}).authorization
            return auth is not None and auth.password == self.api_key
        return False

    def handle(self, request: Request) -> Response:
        header = request.headers.get("Authorization", "")
        if request.path.startswith("/batch-results/"):  # storage elsewhere: no auth
            return self._results(request.path.removeprefix("/batch-results/"))
        if request.path == "/oauth2/metadata":
            scheme, _, token = header.partition(" ")
            if scheme != "OAuth" or token not in self.access_tokens:
                return json_response({"error": "invalid_token"}, 401)
            return json_response({
                "dc": "us6", "role": "owner", "accountname": self.account_name,
                "user_id": 42, "login_url": "https://login.mailchimp.com",
                "api_endpoint": self.base_url,
            })
        if not request.path.startswith("/3.0"):
            return problem(404, "The requested resource could not be found.")
        if not self._api_authorized(header):
            return problem(401, "Your API key may be invalid, or you've attempted to access "
                           "the wrong datacenter.", title="API Key Invalid")
        path = request.path.removeprefix("/3.0").rstrip("/")
        if path == "":
            return json_response({"account_id": "8d3a3db4d97663a9074efcc16",
                                  "account_name": self.account_name, "email": "ops@acme.test"})
        if path == "/ping":
            return json_response({"health_status": "Everything's Chimpy!"})
        if path == "/lists":
            return json_response({"lists": [
                {"id": list_id, "name": self.list_names.get(list_id, list_id)}
                for list_id in self.members], "total_items": len(self.members)})
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "lists":
            if parts[2] not in self.members:
                return problem(404, "The requested resource could not be found.",
                               title="Resource Not Found")
            return json_response({"id": parts[2],
                                  "name": self.list_names.get(parts[2], parts[2])})
        if len(parts) == 4 and parts[1] == "lists" and parts[3] == "members":
            return self._members(request, parts[2])
        if path == "/batches" and request.method == "POST":
            return self._create_batch(request)
        if len(parts) == 3 and parts[1] == "batches" and request.method == "GET":
            return self._batch(parts[2])
        return problem(404, "The requested resource could not be found.")

    def _create_batch(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data())
            operations = body["operations"]
            assert isinstance(operations, list) and all(
                {"method", "path"} <= set(op) for op in operations)
        except (ValueError, KeyError, TypeError, AssertionError):
            return problem(400, "The batch is not valid.", title="Invalid Resource")
        with self._lock:
            batch_id = f"b{len(self.batches) + 1:04d}"
            self.batches[batch_id] = {"id": batch_id, "operations": operations,
                                      "polls": 0, "results": None}
        return json_response(self._batch_state(self.batches[batch_id], "pending"))

    def _batch_state(self, batch: dict[str, Any], status: str) -> dict[str, Any]:
        results = batch["results"] or []
        return {
            "id": batch["id"], "status": status,
            "total_operations": len(batch["operations"]),
            "finished_operations": len(results),
            "errored_operations": sum(r["status_code"] >= 400 for r in results),
            "submitted_at": "2026-03-01T00:00:00+00:00",
            "response_body_url": (f"{self.base_url}/batch-results/{batch['id']}.tar.gz"
                                  if batch["results"] is not None else ""),
        }

    def _batch(self, batch_id: str) -> Response:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return problem(404, "The requested resource could not be found.",
                               title="Resource Not Found")
            if self.fail_polls:
                return problem(self.fail_polls.pop(0), "Injected failure")
            batch["polls"] += 1
            if batch["polls"] <= self.batch_polls:
                return json_response(self._batch_state(batch, "started"))
            if batch["results"] is None:
                batch["results"] = [self._operate(op) for op in batch["operations"]]
        return json_response(self._batch_state(batch, "finished"))

    def _operate(self, operation: dict[str, Any]) -> dict[str, Any]:
        """Run one batch operation; its result as Mailchimp's archive holds it."""
        def result(status: int, body: dict[str, Any]) -> dict[str, Any]:
            return {"status_code": status, "operation_id": operation.get("operation_id"),
                    "response": json.dumps(body)}

        def failed(status: int, title: str, detail: str) -> dict[str, Any]:
            return result(status, {"title": title, "status": status, "detail": detail})

        parts = str(operation["path"]).strip("/").split("/")
        if len(parts) != 4 or parts[0] != "lists" or parts[2] != "members":
            return failed(404, "Resource Not Found", "No such resource.")
        list_id, member_id = parts[1], parts[3]
        if list_id not in self.members:
            return failed(404, "Resource Not Found", "The requested resource could not be "
                          "found.")
        found = next((m for m in self.members[list_id] if m["id"] == member_id), None)
        if operation["method"] == "DELETE":
            if found is None or found["status"] == "archived":
                return failed(404, "Resource Not Found", "The requested resource could not "
                              "be found.")
            found["status"] = "archived"
            return result(204, {})
        if operation["method"] != "PUT":
            return failed(405, "Method Not Allowed", "Not here.")
        body = json.loads(operation.get("body") or "{}")
        email = str(body.get("email_address") or "")
        if hashlib.md5(email.lower().encode()).hexdigest() != member_id:
            return failed(400, "Invalid Resource", "The subscriber hash does not match.")
        if email in self.reject_emails:
            return failed(400, "Invalid Resource", f"{email} looks fake or invalid, please "
                          "enter a real email address.")
        if found is None:
            found = self.add_member(list_id, email, status=body.get("status_if_new") or
                                    "subscribed")
        elif found["status"] == "archived":
            found["status"] = body.get("status_if_new") or "subscribed"
        found["merge_fields"].update(body.get("merge_fields") or {})
        return result(200, found)

    def _results(self, name: str) -> Response:
        batch = self.batches.get(name.removesuffix(".tar.gz"))
        if batch is None or batch["results"] is None:
            return Response("<Error>NoSuchKey</Error>", status=404,
                            content_type="application/xml")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            folder = tarfile.TarInfo(name="results")
            folder.type = tarfile.DIRTYPE
            archive.addfile(folder)
            data = json.dumps(batch["results"]).encode()
            info = tarfile.TarInfo(name=f"{batch['id']}.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        return Response(buffer.getvalue(), content_type="application/x-tar")

    def _members(self, request: Request, list_id: str) -> Response:
        if list_id not in self.members:
            return problem(404, "The requested resource could not be found.",
                           title="Resource Not Found")
        args = request.args
        try:
            count = min(int(args.get("count", 10)), 1000)
            offset = int(args.get("offset", 0))
            since = _time(args["since_last_changed"]) if "since_last_changed" in args else None
        except ValueError as exc:
            return problem(400, f"Invalid query: {exc}", title="Invalid Resource")
        rows = list(self.members[list_id])
        if args.get("status"):
            rows = [row for row in rows if row.get("status") == args["status"]]
        if since is not None:
            rows = [row for row in rows if _time(row["last_changed"]) > since]
        if args.get("sort_field"):
            field = args["sort_field"]
            rows.sort(key=lambda row: _time(row[field]),
                      reverse=args.get("sort_dir", "ASC").upper() == "DESC")
        return json_response({"members": rows[offset:offset + count], "list_id": list_id,
                              "total_items": len(rows)})


@dataclass
class Received:
    """One request the webhook receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any


class WebhookReceiver(LoopbackServer):
    """Records every request and answers `status` (204), or 401 when credentials it was
    given (`token`, `username`/`password`, `secret` for HMAC signatures) do not match."""

    def __init__(self, *, token: str | None = None, username: str | None = None,
                 password: str | None = None, secret: str | None = None,
                 status: int = 204) -> None:
        super().__init__()
        self.token, self.username, self.password, self.secret = token, username, password, secret
        self.status = status
        self.received: list[Received] = []
        self.error_body: str | None = None  # when set, failures answer this text instead

    def __enter__(self) -> WebhookReceiver:
        super().__enter__()
        return self

    @property
    def url(self) -> str:
        return self.base_url + "/hook"

    @staticmethod
    def _received(request: Request) -> Received:
        body = request.get_data()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return Received(request.method, request.path, dict(request.headers), body, parsed)

    def record(self, request: Request) -> None:
        self.received.append(self._received(request))

    def verify(self, secret: str, received: Received | None = None) -> bool:
        """Whether a request (the last one by default) carries a valid HMAC signature."""
        received = received or self.received[-1]
        timestamp = received.headers.get("X-Portal-Timestamp", "")
        signature = received.headers.get("X-Portal-Signature", "")
        signed = timestamp.encode() + b"." + received.body
        expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return bool(timestamp) and hmac.compare_digest(signature, expected)

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.token is not None and header != f"Bearer {self.token}":
            return False
        if self.username is not None or self.password is not None:
            auth = request.authorization
            if auth is None or (auth.username, auth.password) != (self.username, self.password):
                return False
        return self.secret is None or self.verify(self.secret, self._received(request))

    def handle(self, request: Request) -> Response:
        if not self._authorized(request):
            return json_response({"error": "unauthorized"}, 401)
        if self.status == 204:
            return Response(status=204)
        if self.status >= 400 and self.error_body is not None:
            return Response(self.error_body, status=self.status, content_type="text/plain")
        return json_response({"ok": self.status < 300}, self.status)


class AnsweringServer(LoopbackServer):
    """Records every request (`received`) and answers it with `answer(request)`: a
    redirect, an echo, whatever a test needs."""

    def __init__(self, answer: Callable[[Request], Response], **where: Any) -> None:
        super().__init__(**where)
        self.answer = answer
        self.received: list[Received] = []

    def __enter__(self) -> AnsweringServer:
        super().__enter__()
        return self

    def record(self, request: Request) -> None:
        self.received.append(WebhookReceiver._received(request))

    def handle(self, request: Request) -> Response:
        return self.answer(request)
