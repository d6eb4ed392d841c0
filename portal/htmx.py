"""The one place that reads HX-* headers and picks a full page or a fragment."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, make_response, render_template
from flask import redirect as flask_redirect
from htmx_flask import request
from werkzeug.urls import iri_to_uri

STOP_POLLING = 286  # htmx stops an `every Ns` trigger on this status


def is_htmx() -> bool:
    """An htmx request that wants a fragment (a history restore wants the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def target() -> str | None:
    """The id of the element an htmx request will swap (HX-Target), if any."""
    return request.htmx.target if is_htmx() else None


def local_url(target: str | None, *, under: str = "/") -> str | None:
    """`target` when it is a path on this site that starts with `under`, fit to go in a
    Location or HX-Redirect header as it is; None for anything else.

    Checked as sent, never after tidying: URL parsers drop tabs and line breaks (so
    "/<tab>/evil.example" would become "//evil.example", another site) and browsers read a
    backslash as a slash. So control characters, line and paragraph separators, spaces
    and backslashes are refused, not dropped; other non-ASCII letters (a stream named in
    the path) are quoted, as a header carries ASCII only."""
    if not target or not target.isprintable() or " " in target or "\\" in target:
        return None
    if not target.startswith(under) or target.startswith("//"):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else iri_to_uri(target)


def current_page() -> str | None:
    """The path and query of the page an htmx request was made from (HX-Current-URL),
    when that page is on this site; None for anything else."""
    url = request.htmx.current_url if request.htmx else None
    if not url or not url.isprintable():
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        return None
    if parts.scheme not in ("http", "https") or parts.netloc != request.host:
        return None
    return local_url(parts.path + (f"?{parts.query}" if parts.query else ""))


def push_url(response: Response, url: str) -> Response:
    """Have htmx put `url` in the address bar (a step whose state now has its own URL)."""
    if is_htmx():
        response.headers["HX-Push-Url"] = url
    return response


def replace_url(response: Response, url: str) -> Response:
    """Have htmx show `url` in the address bar without a new history entry (a reload then
    finds what was saved)."""
    if is_htmx():
        response.headers["HX-Replace-Url"] = url
    return response


def render(page: str, fragment: str | None = None, *, status: int = 200, **context) -> Response:
    """The full page, or only `fragment` for htmx; the answer varies on HX-Request.

    htmx swaps nothing on a 4xx, so a form re-rendered with its errors goes to htmx as 200;
    a plain browser post gets the real status.
    """
    template = fragment if fragment and is_htmx() else page
    if is_htmx() and 400 <= status < 500:
        status = 200
    # A full page includes its fragment by this name, so one file serves both answers.
    response = make_response(
        render_template(template, fragment_template=fragment, **context), status
    )
    response.vary.add("HX-Request")
    return response


def fragment(template: str, *, stop_polling: bool = False, **context) -> Response:
    """A fragment for polling and row actions; 286 tells htmx to stop polling."""
    status = STOP_POLLING if stop_polling else 200
    return make_response(render_template(template, **context), status)


def redirect(url: str) -> Response:
    """Navigate: HX-Redirect for htmx (it never sees a 3xx's headers), 303 otherwise."""
    if request.htmx:
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url
        return response
    return flask_redirect(url, code=303)
