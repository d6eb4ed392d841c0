"""Security headers on every kind of answer: the Content-Security-Policy, framing,
sniffing, referrer, caching and HSTS rules of portal/security.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Auth, _make_app

HX = {"HX-Request": "true"}
TEMPLATES = Path(__file__).parent.parent / "portal" / "templates"
STATIC = Path(__file__).parent.parent / "portal" / "static"

ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def policy(response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: [sources]}."""
    header = response.headers.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request.path}"
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        assert name not in directives, f"{name} twice"
        directives[name] = sources
    return directives


def assert_protected(response) -> None:
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, (name, response.request.path)
    assert "camera=()" in response.headers["Permissions-Policy"]
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["form-action"][0] == "'self'"
    header = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header
    assert "Strict-Transport-Security" not in response.headers  # plain http here


@pytest.fixture
def job(app, make_user):
    from portal.jobs import create_job
    from providers import get_provider

    provider = get_provider("faults")
    return create_job(provider=provider, job_type=provider.job_type("script"),
                      authorization=None, name="headers", description="", config={},
                      created_by=make_user("admin", "owner@example.com"))


def test_signed_in_pages_fragments_redirects_and_errors(client, auth, job):
    auth.login("admin")
    answers = {
        "page": client.get("/jobs"),
        "summary": client.get(f"/jobs/{job.id}"),
        "fragment": client.get("/jobs?status=running", headers=HX),
        "poll": client.get(f"/jobs/{job.id}/live", headers=HX),
        "vault": client.get("/vault"),
        "redirect": client.get("/"),
        "not found": client.get("/no/such/page"),
        "csrf": client.post("/logout"),
        "download": client.get(f"/jobs/{job.id}/logs.csv"),
    }
    assert answers["redirect"].status_code in (302, 303)
    assert answers["not found"].status_code == 404
    assert answers["csrf"].status_code == 400
    # Read the streamed download here: a generator left to the garbage collector would
    # close its request context inside whichever test runs then.
    assert answers["download"].get_data(as_text=True).startswith("id,job_id")
    for what, response in answers.items():
        assert_protected(response)
        # Nothing a signed-in person is shown may be kept by the browser or a proxy.
        assert response.headers["Cache-Control"] == "no-store", what


def test_signed_out_answers_are_protected_and_not_stored(client):
    for response in (client.get("/login"), client.get("/jobs"), client.get("/nope"),
                     client.post("/login", data={"email": "x@example.com"})):
        assert_protected(response)
        # The sign-in page holds a CSRF token bound to this browser's session.
        assert response.headers["Cache-Control"] == "no-store"


def test_static_files_and_logos_may_be_cached(client, auth):
    auth.login("viewer")
    for path in ("/static/portal.css", "/static/vendor/htmx.min.js",
                 "/jobs/providers/mailchimp/logo.svg"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_protected(response)
        assert "no-store" not in response.headers.get("Cache-Control", ""), path


def test_hsts_only_over_https(app, client):
    assert "Strict-Transport-Security" not in client.get("/login").headers
    secure = app.test_client().get("/login", base_url="https://portal.example.com")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    # X-Forwarded-Proto counts only from a proxy the settings say to trust.
    forwarded = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in forwarded.headers


def test_hsts_behind_a_trusted_proxy(database_url, redis_url, tmp_path):
    proxied = _make_app(database_url, redis_url, tmp_path / "proxied", PORTAL_TRUSTED_PROXIES=1)
    with proxied.app_context():
        client = proxied.test_client()
        over_https = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        over_http = client.get("/login", headers={"X-Forwarded-Proto": "http"})
    assert over_https.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in over_http.headers


def test_form_action_admits_only_configured_oauth_sign_in_pages(app, client, make_user):
    # No OAuth client configured: forms post to this portal only.
    assert policy(client.get("/login"))["form-action"] == ["'self'"]
    # Starting a sign-in is a form POST answered by a redirect to the provider, which the
    # browser checks against form-action: the provider's authorize origin is let through.
    app.config.update(PORTAL_OAUTH_MAILCHIMP_CLIENT_ID="id",
                      PORTAL_OAUTH_MAILCHIMP_CLIENT_SECRET="secret")
    assert policy(client.get("/login"))["form-action"] == [
        "'self'", "https://login.mailchimp.com"]
    app.config["PORTAL_OAUTH_MAILCHIMP_AUTHORIZE_URL"] = "http://127.0.0.1:8765/authorize?x=1"
    auth = Auth(client, make_user)
    auth.login("operator")
    response = client.post("/vault/new/mailchimp/oauth2",
                           data={"csrf_token": auth.csrf(), "label": "via OAuth"})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("http://127.0.0.1:8765/authorize")
    assert policy(response)["form-action"] == ["'self'", "http://127.0.0.1:8765"]


# Attributes and elements a strict policy blocks, looked for in every template and in the
# HTML our scripts build. The browser test walks the pages; this finds what it may miss.
INLINE = [
    (re.compile(r"\sstyle\s*=", re.I), "an inline style attribute"),
    (re.compile(r"<style", re.I), "a <style> element"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an inline event handler"),
    (re.compile(r"hx-on|data-hx-on", re.I), "an hx-on handler (needs eval)"),
    (re.compile(r"""["'](?:javascript|js):""", re.I), "a javascript: URL or js: value"),
    (re.compile(r"""hx-trigger\s*=\s*["'][^"']*\[""", re.I), "an htmx trigger filter (eval)"),
    (re.compile(r"<script(?![^>]*\ssrc=)(?![^>]*type=\"application/json\")", re.I),
     "an inline script"),
]


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.html")) + sorted(STATIC.glob("*.js")),
                         ids=lambda path: path.name)
def test_no_inline_script_style_or_eval(path):
    text = path.read_text()
    for pattern, what in INLINE:
        if path.suffix == ".js" and "<" not in pattern.pattern and "hx-" not in pattern.pattern:
            continue  # plain JavaScript has no attributes of its own
        match = pattern.search(text)
        if match:
            context = text[max(0, match.start() - 40):match.end() + 40]
            pytest.fail(f"{path.name}: {what} at …{context}…")
