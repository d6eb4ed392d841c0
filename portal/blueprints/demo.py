"""The demo's webhook receiver (portal/demo.py): POST /demo/hook takes the demo export's
deliveries, GET /demo shows them. Both answer 404 unless the demo is on (PORTAL_DEMO=1 or
a seeded demo); the POST answers loopback clients only and is the one CSRF-exempt view."""

from __future__ import annotations

import os

from flask import Blueprint, abort, current_app, request

from portal import demo, htmx
from portal.access import role_required
from portal.extensions import csrf

bp = Blueprint("demo", __name__, url_prefix="/demo")
MAX_BODY = 5 * 1024 * 1024


def _setting() -> bool:
    value = current_app.config.get("PORTAL_DEMO", os.environ.get("PORTAL_DEMO", ""))
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@bp.before_request
def only_when_on():
    if not demo.active(_setting()):
        abort(404)


def _peer() -> str:
    """The socket's own peer address, before any proxy fix rewrote REMOTE_ADDR."""
    original = request.environ.get("werkzeug.proxy_fix.orig") or {}
    return original.get("REMOTE_ADDR") or request.environ.get("REMOTE_ADDR", "")


@bp.post("/hook")
@csrf.exempt
def hook():
    """Record one delivery of the demo export."""
    if not demo.is_loopback_client(_peer(), request.headers):
        abort(403, description="The demo receiver takes deliveries from this machine only.")
    if (request.content_length or 0) > MAX_BODY:
        abort(413)
    document = request.get_json(silent=True)
    if not isinstance(document, dict):
        abort(400, description="The demo receiver takes a JSON object.")
    demo.record_delivery(document, request.headers.get("Idempotency-Key", ""))
    return "", 204


@bp.get("")
@role_required("viewer")
def index():
    """What the receiver took, newest first."""
    return htmx.render("demo/index.html", deliveries=demo.deliveries(),
                       hook_url=request.host_url.rstrip("/") + "/demo/hook")
