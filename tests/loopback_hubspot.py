"""A small HubSpot on 127.0.0.1: the parts of the CRM v3 API the provider uses.

    with HubSpotServer(access_tokens={TOKEN}) as hubspot:
        monkeypatch.setenv("PORTAL_HUBSPOT_API_URL", hubspot.base_url)

Contacts live in `contacts` (id -> record shaped like HubSpot's). The search endpoint
honours one sort, EQ/GT/GTE filters, `after` paging and refuses to page past `search_cap`
results (HubSpot's 10,000); `fail_next` (statuses) and `hubspot_429` (rate limits with
HubSpot's own headers, no Retry-After) inject failures; `fail_after_searches` answers 500
to every search after that many.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.loopback import LoopbackServer, json_response

START = datetime(2026, 1, 1, tzinfo=UTC)
LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "customer")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def error(status: int, message: str, category: str, **extra: Any) -> Response:
    return json_response({"status": "error", "message": message, "category": category,
                          "correlationId": "aaaa-bbbb", **extra}, status)


class HubSpotServer(LoopbackServer):
    def __init__(self, access_tokens: Any = None, hub_domain: str = "acme.hubspot.com"):
        super().__init__()
        self.access_tokens = access_tokens if access_tokens is not None else set()
        self.hub_domain = hub_domain
        self.contacts: dict[int, dict[str, Any]] = {}
        self.lists: dict[str, dict[str, Any]] = {}  # listId -> {"name", "members": set}
        self.search_cap = 10_000
        self.hubspot_429 = 0
        self.fail_after_searches: int | None = None
        self.multi_status = False  # refused contacts: a 207 for the batch, not a 400
        self.searches: list[dict[str, Any]] = []  # the body of every search
        self.requests: list[tuple[str, str]] = []
        self._next_id = 100
        self._data_lock = threading.Lock()

    def __enter__(self) -> HubSpotServer:
        super().__enter__()
        return self

    # -- Data ------------------------------------------------------------------------------

    def add_contact(self, email: str, *, at: datetime | None = None, **properties: str
                    ) -> dict[str, Any]:
        with self._data_lock:
            self._next_id += 1
            contact_id = self._next_id
        moment = at or START + timedelta(seconds=contact_id)
        record = {"id": str(contact_id), "createdAt": iso(moment), "archived": False,
                  "properties": {"email": email, "hs_object_id": str(contact_id),
                                 "createdate": iso(moment), **properties}}
        self.contacts[contact_id] = record
        self.touch(contact_id, moment)
        return record

    def touch(self, contact_id: int, moment: datetime, **properties: str) -> None:
        record = self.contacts[contact_id]
        record["properties"].update(properties, lastmodifieddate=iso(moment))
        record["updatedAt"] = iso(moment)

    def by_email(self, email: str) -> dict[str, Any] | None:
        return next((c for c in self.contacts.values()
                     if c["properties"].get("email", "").lower() == email.lower()), None)

    def add_list(self, name: str) -> str:
        with self._data_lock:
            self._next_id += 1
            list_id = str(self._next_id)
        self.lists[list_id] = {"name": name, "members": set()}
        return list_id

    def list_emails(self, list_id: str) -> list[str]:
        return sorted(self.contacts[int(cid)]["properties"]["email"]
                      for cid in self.lists[list_id]["members"])

    # -- HTTP ------------------------------------------------------------------------------

    def record(self, request: Request) -> None:
        self.requests.append((request.method, request.path))

    def handle(self, request: Request) -> Response:
        path, method = request.path.rstrip("/"), request.method
        if self.hubspot_429:
            self.hubspot_429 -= 1
            # HubSpot's own limit headers, and no Retry-After.
            return Response(json.dumps({"status": "error", "category": "RATE_LIMITS",
                                        "policyName": "TEN_SECONDLY_ROLLING"}), status=429,
                            content_type="application/json",
                            headers={"X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                                     "X-HubSpot-RateLimit-Max": "100",
                                     "X-HubSpot-RateLimit-Remaining": "0"})
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if path.startswith("/oauth/v1/access-tokens/"):
            asked = path.rsplit("/", 1)[1]
            if asked not in self.access_tokens:
                return error(404, "Token not found", "OBJECT_NOT_FOUND")
            return json_response({"token": asked, "hub_id": 4242, "hub_domain": self.hub_domain,
                                  "user": "ops@acme.test", "token_type": "access"})
        if scheme != "Bearer" or token not in self.access_tokens:
            return error(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
        body = request.get_json(silent=True)
        if method == "GET" and path == "/crm/v3/objects/contacts":
            limit = int(request.args.get("limit", 10))
            return json_response({"results": list(self.contacts.values())[:limit]})
        if method == "POST" and path == "/crm/v3/objects/contacts/search":
            return self._search(body or {})
        if method == "POST" and path == "/crm/v3/objects/contacts/batch/upsert":
            return self._upsert(body or {})
        if method == "POST" and path == "/crm/v3/objects/contacts/batch/read":
            wanted = {str(item.get("id", "")).lower() for item in body.get("inputs", [])}
            found = [c for c in self.contacts.values()
                     if c["properties"].get("email", "").lower() in wanted]
            return json_response({"status": "COMPLETE", "results": found})
        if method == "POST" and path == "/crm/v3/lists/search":
            query = str(body.get("query") or "")
            found = [{"listId": list_id, "name": item["name"], "processingType": "MANUAL",
                      "objectTypeId": "0-1"} for list_id, item in self.lists.items()
                     if query.lower() in item["name"].lower()]
            return json_response({"lists": found, "hasMore": False, "offset": len(found),
                                  "total": len(found)})
        if method == "POST" and path == "/crm/v3/lists":
            list_id = self.add_list(str(body["name"]))
            return json_response({"list": {"listId": list_id, "name": body["name"],
                                           "processingType": "MANUAL"}})
        parts = path.split("/")
        if method == "PUT" and len(parts) == 7 and parts[3] == "lists" and \
                parts[5] == "memberships":
            target = self.lists.get(parts[4])
            if target is None:
                return error(404, "List does not exist", "OBJECT_NOT_FOUND")
            ids = {str(record_id) for record_id in body}
            if parts[6] == "add":
                target["members"] |= ids
                return json_response({"recordIdsAdded": sorted(ids), "recordIdsMissing": []})
            target["members"] -= ids
            return json_response({"recordIdsRemoved": sorted(ids), "recordIdsMissing": []})
        return error(404, "Not found", "OBJECT_NOT_FOUND")

    def _search(self, body: dict[str, Any]) -> Response:
        self.searches.append(body)
        if self.fail_after_searches is not None and \
                len(self.searches) > self.fail_after_searches:
            return error(500, "Internal error", "INTERNAL_ERROR")
        sorts = body.get("sorts") or []
        limit = int(body.get("limit", 10))
        offset = int(body.get("after") or 0)
        if len(sorts) > 1 or limit > 100:
            return error(400, "One sort and at most 100 results per page.", "VALIDATION_ERROR")
        if offset + limit > self.search_cap:
            return error(400, f"Paging past {self.search_cap} results is not allowed.",
                         "VALIDATION_ERROR")

        def value(contact: dict[str, Any], name: str) -> int:
            raw = contact["properties"][name]
            return ms(raw) if name == "lastmodifieddate" else int(raw)

        rows = list(self.contacts.values())
        for group in body.get("filterGroups") or []:
            for rule in group.get("filters", []):
                name, op, want = rule["propertyName"], rule["operator"], int(rule["value"])
                test = {"EQ": int.__eq__, "GT": int.__gt__, "GTE": int.__ge__}[op]
                rows = [c for c in rows if test(value(c, name), want)]
        if sorts:
            rows.sort(key=lambda c: value(c, sorts[0]["propertyName"]),
                      reverse=sorts[0].get("direction") == "DESCENDING")
        page = rows[offset:offset + limit]
        wanted = set(body.get("properties") or ["email", "lastmodifieddate", "hs_object_id"])
        answer: dict[str, Any] = {"total": len(rows), "results": [
            {**c, "properties": {k: v for k, v in c["properties"].items() if k in wanted}}
            for c in page]}
        if offset + limit < len(rows):
            answer["paging"] = {"next": {"after": str(offset + limit)}}
        return json_response(answer)

    def _upsert(self, body: dict[str, Any]) -> Response:
        inputs = body.get("inputs") or []
        for item in inputs:
            props = item.get("properties") or {}
            email = str(item.get("id") or "")
            if "@" not in email:
                return error(400, f"Property values were not valid: email {email!r} is not a "
                             "valid email address", "VALIDATION_ERROR",
                             errors=[{"code": "INVALID_EMAIL",
                                      "context": {"propertyName": ["email"]}}])
            stage = props.get("lifecyclestage")
            if stage is not None and stage not in LIFECYCLE_STAGES and not self.multi_status:
                return error(400, f"Property values were not valid: {stage!r} was not one of "
                             f"the allowed options for {email}", "VALIDATION_ERROR",
                             errors=[{"code": "INVALID_OPTION",
                                      "message": f"{stage!r} is not valid for {email}",
                                      "context": {"propertyName": ["lifecyclestage"]}}])
        results, refused = [], []
        for item in inputs:
            props = dict(item.get("properties") or {})
            email = str(item["id"])
            if props.get("lifecyclestage", "lead") not in LIFECYCLE_STAGES:
                refused.append({"status": "error", "category": "VALIDATION_ERROR",
                                "message": f"Invalid option for {email}",
                                "context": {"propertyName": ["lifecyclestage"]}})
                continue
            found = self.by_email(email)
            if found is None:
                found = self.add_contact(email, at=datetime.now(UTC))
            self.touch(int(found["id"]), datetime.now(UTC), **props)
            results.append(found)
        if refused:
            return json_response({"status": "COMPLETE", "results": results, "errors": refused,
                                  "numErrors": len(refused)}, 207)
        return json_response({"status": "COMPLETE", "results": results})
