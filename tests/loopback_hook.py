"""A real enrichment endpoint on 127.0.0.1 for the webhook's "Enrich profiles" tests.

It refuses (401) every request whose HMAC signature (X-Portal-Signature over
"<timestamp>.<body>", timestamps at most five minutes old) does not check out with
`secret`, answers a ping with 204, and answers {"profiles": [...]} with
{"profiles": [{"<identifier>": v, "attributes": enrich(v, fields)}]}. Tests make it
misbehave with:

- `fail_next` (from LoopbackServer): statuses to answer first, one per request (429 with
  Retry-After: `retry_after`);
- `fail_after`: answer `fail_status` to every enrichment request after this many good ones;
- `hang_next`: this many requests are held for `hang_seconds` before being answered (past
  the client's timeout), or until the server stops;
- `raw_answer`: a body (bytes) to answer 200 with instead of the real answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.loopback import LoopbackServer, Received, WebhookReceiver, json_response

SIGNATURE_AGE = 300  # seconds a signed timestamp stays acceptable


def default_enrich(value: str, fields: dict[str, Any]) -> dict[str, Any]:
    """What the endpoint knows about someone: a score from their identifier and a tier."""
    score = sum(value.encode()) % 100
    return {"score": score, "tier": "gold" if fields.get("plan") == "pro" else "basic"}


class EnrichServer(LoopbackServer):
    def __init__(self, secret: str, *, identifier: str = "email",
                 enrich: Callable[[str, dict[str, Any]], dict[str, Any]] = default_enrich
                 ) -> None:
        super().__init__()
        self.secret, self.identifier, self.enrich = secret, identifier, enrich
        self.received: list[Received] = []
        self.refused = 0
        self.answered = 0  # good enrichment answers given
        self.fail_after: int | None = None
        self.fail_status = 500
        self.hang_next = 0
        self.hang_seconds = 5.0
        self.raw_answer: bytes | None = None
        self.at: str | None = None  # an "at" to answer with, when set
        self._stopping = threading.Event()

    def __enter__(self) -> EnrichServer:
        self._stopping.clear()
        super().__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()  # release requests held by hang_next
        super().__exit__(*exc_info)

    @property
    def url(self) -> str:
        return self.base_url + "/enrich"

    @property
    def requests(self) -> list[dict]:
        """The enrichment requests received (pings aside), parsed."""
        return [r.json for r in self.received
                if isinstance(r.json, dict) and "profiles" in r.json]

    def record(self, request: Request) -> None:
        self.received.append(WebhookReceiver._received(request))

    def signed(self, request: Request) -> bool:
        timestamp = request.headers.get("X-Portal-Timestamp", "")
        signature = request.headers.get("X-Portal-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit()):
            return False
        if abs(time.time() - int(timestamp)) > SIGNATURE_AGE:
            return False
        body = request.get_data()
        expected = "sha256=" + hmac.new(self.secret.encode(), timestamp.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature, expected)

    def handle(self, request: Request) -> Response:
        if not self.signed(request):
            with self._lock:
                self.refused += 1
            return json_response({"error": "bad signature"}, 401)
        with self._lock:
            hang = self.hang_next > 0
            self.hang_next -= hang
        if hang:
            self._stopping.wait(self.hang_seconds)
        document = json.loads(request.get_data())
        if document.get("type") == "ping":
            return Response(status=204)
        with self._lock:
            if self.fail_after is not None and self.answered >= self.fail_after:
                return json_response({"error": "down"}, self.fail_status)
            self.answered += 1
        if self.raw_answer is not None:
            return Response(self.raw_answer, status=200, content_type="application/json")
        profiles = []
        for item in document["profiles"]:
            value = item[self.identifier]
            answer: dict[str, Any] = {self.identifier: value,
                                      "attributes": self.enrich(value, item["fields"])}
            if self.at:
                answer["at"] = self.at
            profiles.append(answer)
        return json_response({"profiles": profiles})
