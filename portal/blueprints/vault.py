"""The Vault pages: authorizations that jobs use to reach providers.

Create: provider -> method -> label, description and credentials (or a sign-in with the
provider, for OAuth). Reached from the job wizard with `next`, it returns there with the
new authorization chosen.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from flask import Blueprint, abort, request, url_for
from flask_login import current_user
from sqlalchemy import select

from portal import audit, htmx, oauth, params, vault
from portal.access import role_required
from portal.extensions import db
from portal.models import Authorization, AuthorizationVersion
from portal.schemaform import (
    coerce,
    destinations_said,
    ordered_fields,
    prefixed,
)
from providers import CATALOG, get_provider
from providers.base import AuthMethod, Provider, ProviderError

bp = Blueprint("vault", __name__, url_prefix="/vault")

STEPS = ("Provider", "Method", "Details")
CREDENTIAL = "cred"  # form fields of credentials are named cred-<field>


def _providers() -> list[Provider]:
    """Providers that have something to authorize."""
    return [provider for provider in CATALOG.values() if provider.needs_authorization]


def _provider(provider_key: str) -> Provider:
    provider = get_provider(provider_key)
    if provider is None or not provider.needs_authorization:
        abort(404, description=f"There is no provider called {provider_key!r} that takes "
                               "an authorization. Pick one from the list.")
    return provider


def _method(provider: Provider, method_key: str) -> AuthMethod:
    method = provider.auth_method(method_key)
    if method is None:
        abort(404, description=f"{provider.name} has no authorization method {method_key!r}.")
    return method


def _next_url() -> str:
    """Where to go after creating: only a step of the job wizard (never another site)."""
    target = request.values.get("next", "")
    return target if htmx.local_url(target, under="/jobs/new/") and "//" not in target else ""


def _back_to(target: str, authorization: Authorization) -> str:
    if not target:
        return url_for("vault.summary", authorization_id=authorization.id)
    joiner = "&" if "?" in target else "?"
    return f"{target}{joiner}{urlencode({'authorization': authorization.id})}"


def _authorization(authorization_id: int, *, for_change: bool = False) -> Authorization:
    """The authorization with this id (404 if none); `for_change`: also 403 unless the
    current user may change it (its creator or an admin; any operator may use it)."""
    found = db.get_or_404(Authorization, authorization_id,
                          description="There is no such authorization; it may have been "
                                      "deleted.")
    if for_change and not vault.can_change(found, current_user):
        abort(403, description=f"{_who_may_change(found)} You can still use it in jobs and "
                               "test its connection.")
    return found


def _who_may_change(authorization: Authorization) -> str:
    creator = authorization.owner.email if authorization.owner else None
    return (f"Only {creator}, who created “{authorization.label}”, or an admin can change it."
            if creator else f"Only an admin can change “{authorization.label}”.")


def _method_of(authorization: Authorization) -> tuple[Provider, AuthMethod]:
    try:
        return vault.method_of(authorization)
    except vault.VaultError as exc:
        abort(409, description=str(exc))


@bp.get("")
@role_required("viewer")
def index():
    """Every authorization with its health and the number of jobs that use it."""
    authorizations = db.session.scalars(
        select(Authorization).order_by(Authorization.label, Authorization.id)).all()
    return htmx.render("vault/index.html", authorizations=authorizations,
                       uses=vault.use_counts(), can_create=bool(_providers()))


@bp.get("/new")
@role_required("operator")
def new():
    return htmx.render("vault/new.html", "vault/_providers.html", steps=STEPS, step=0,
                       providers=_providers(), next_url=_next_url())


@bp.get("/new/<provider_key>")
@role_required("operator")
def methods(provider_key: str):
    provider = _provider(provider_key)
    return htmx.render("vault/new.html", "vault/_methods.html", steps=STEPS, step=1,
                       provider=provider, next_url=_next_url(),
                       oauth_missing=_oauth_missing(provider))


def _oauth_missing(provider: Provider) -> dict[str, str]:
    """Per OAuth method, the message naming the settings it still needs."""
    missing = {}
    for method in provider.auth_methods:
        if method.kind == "oauth2":
            try:
                vault.oauth_settings(provider, method)
            except vault.MissingOAuthSettings as exc:
                missing[method.key] = str(exc)
    return missing


@bp.route("/new/<provider_key>/<method_key>", methods=["GET", "POST"])
@role_required("operator")
def details(provider_key: str, method_key: str):
    """Step 3: label, description and credentials; an OAuth method signs in instead."""
    provider = _provider(provider_key)
    method = _method(provider, method_key)
    next_url = _next_url()
    label = request.form.get("label", "").strip()
    description = request.form.get("description", "").strip()
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if request.method == "POST":
        errors = vault.label_errors(label, description)
        if method.kind == "oauth2":
            if not errors:
                return _begin_oauth(provider, method, {
                    "label": label, "description": description, "next": next_url})
        else:
            values, field_errors = coerce(method.schema or {}, prefixed(request.form, CREDENTIAL))
            errors.update(field_errors)
            for field, message in vault.check_entered(method, values).items():
                errors.setdefault(field, message)
            if not errors:
                try:
                    authorization = vault.create(provider, method, label=label,
                                                 description=description, credentials=values,
                                                 by=current_user)
                except vault.InvalidCredentials as exc:
                    errors.update(exc.errors)
                else:
                    db.session.commit()
                    return htmx.redirect(_back_to(next_url, authorization))
    return htmx.render(
        "vault/new.html", "vault/_details.html", status=422 if errors else 200, steps=STEPS,
        step=2, provider=provider, method=method, next_url=next_url, label=label,
        description=description, values=values, errors=errors,
        fields=ordered_fields(method.schema or {}), prefix=CREDENTIAL,
        oauth_missing=_oauth_missing(provider).get(method.key),
    )


def _begin_oauth(provider: Provider, method: AuthMethod, pending: dict[str, Any]):
    try:
        target = oauth.begin(
            provider, method,
            url_for("vault.oauth_callback", provider_key=provider.key, _external=True),
            {**pending, "method": method.key, "user_id": current_user.id})
    except vault.MissingOAuthSettings as exc:
        abort(409, description=str(exc))
    return htmx.redirect(target)


@bp.get("/oauth/<provider_key>/callback")
@role_required("operator")
def oauth_callback(provider_key: str):
    """The provider sends the browser back here with a code (or an error) and the state."""
    provider = _provider(provider_key)
    state = request.args.get("state")
    pending = oauth.pending(state)
    if pending is None or pending.get("user_id") != current_user.id:
        return _oauth_failed(provider, "This sign-in cannot be finished: it was not started "
                                       "here, was already used, or is more than an hour old. "
                                       "Start it again.", None)
    method = _method(provider, pending["method"])
    if request.args.get("error"):
        oauth.discard(state)
        # Its standard code only: free text in a link is the sender's, not the provider's.
        reason = vault.oauth_error(request.args["error"])
        return _oauth_failed(provider, f"{provider.name} did not grant access ({reason}). "
                                       "Nothing was saved.", pending)
    try:
        token = oauth.finish(provider, method, state)
    except MismatchingStateError:
        return _oauth_failed(provider, "The sign-in did not match the one started here "
                                       "(state mismatch). Nothing was saved; start again.",
                             pending)
    except OAuthError as exc:
        return _oauth_failed(provider, f"{provider.name} refused to issue a token "
                                       f"({exc.error}). Nothing was saved; start again.",
                             pending)
    try:
        extras = provider.authorized(method.key, token) if provider.authorized else {}
    except Exception as exc:  # the provider's follow-up call: its own errors are worded
        # safely (providers/http.py); anything else is named, never quoted.
        said = str(exc) if isinstance(exc, ProviderError) else type(exc).__name__
        return _oauth_failed(provider, f"Signed in, but {provider.name} could not tell which "
                                       f"account this is: {said}. Nothing was saved.", pending)
    credentials = {**token, **extras}
    if pending.get("authorization_id"):
        authorization = _authorization(pending["authorization_id"], for_change=True)
        try:
            vault.replace(authorization, credentials, expected_version=pending["version"],
                          reason="reauthorized", by=current_user)
        except vault.VersionConflict as exc:
            return _oauth_failed(provider, str(exc), pending)
        db.session.commit()
        return htmx.redirect(url_for("vault.summary", authorization_id=authorization.id))
    authorization = vault.create(provider, method, label=pending["label"],
                                 description=pending["description"], credentials=credentials,
                                 by=current_user)
    db.session.commit()
    return htmx.redirect(_back_to(pending.get("next", ""), authorization))


def _oauth_failed(provider: Provider, message: str, pending: dict[str, Any] | None):
    return htmx.render("vault/oauth_failed.html", status=400, provider=provider,
                       message=message, pending=pending or {})


@bp.get("/<int:authorization_id>")
@role_required("viewer")
def summary(authorization_id: int):
    authorization = _authorization(authorization_id)
    return htmx.render("vault/summary.html", **_summary_context(authorization))


def _summary_context(authorization: Authorization, **extra: Any) -> dict[str, Any]:
    provider = get_provider(authorization.provider)
    method = provider.auth_method(authorization.method) if provider else None
    versions = db.session.scalars(
        select(AuthorizationVersion)
        .where(AuthorizationVersion.authorization_id == authorization.id)
        .order_by(AuthorizationVersion.version.desc())).all()
    others = db.session.scalars(
        select(Authorization).where(Authorization.provider == authorization.provider,
                                    Authorization.id != authorization.id)
        .order_by(Authorization.label)).all()
    context = {
        "authorization": authorization, "provider": provider, "method": method,
        "versions": versions, "jobs": vault.jobs_using(authorization), "others": others,
        "history": audit.entries_for("authorization", authorization.id),
        "fields": ordered_fields(method.schema or {}) if method else [], "prefix": CREDENTIAL,
        "can_change": vault.can_change(authorization, current_user),
        "who_may_change": _who_may_change(authorization),
        "destinations": destinations_said(method.schema or {}, method.destination_fields)
        if method else "",
        "values": authorization.public.get("values", {}), "errors": {}, "notice": None,
        "details_errors": {},
    }
    context.update(extra)
    return context


@bp.post("/<int:authorization_id>/details")
@role_required("operator")
def edit_details(authorization_id: int):
    authorization = _authorization(authorization_id, for_change=True)
    label = request.form.get("label", "").strip()
    description = request.form.get("description", "").strip()
    errors = vault.label_errors(label, description)
    if not errors:
        vault.edit_details(authorization, label=label, description=description, by=current_user)
        db.session.commit()
    return htmx.render("vault/summary.html", "vault/_details_form.html",
                       status=422 if errors else 200,
                       **_summary_context(authorization, details_errors=errors,
                                          notice=None if errors else "Saved."))


@bp.post("/<int:authorization_id>/credentials")
@role_required("operator")
def update_credentials(authorization_id: int):
    """A new version of the credentials; blank secret fields keep the stored values."""
    authorization = _authorization(authorization_id, for_change=True)
    _, method = _method_of(authorization)
    values, errors = coerce(method.schema or {}, prefixed(request.form, CREDENTIAL))
    expected = params.int_arg(request.form, "version", default=None, low=0, strict=False)
    if expected is None:
        abort(400, description="The form lacks the version it edits; reload the page.")
    notice = None
    if not errors:
        try:
            version = vault.update_entered(authorization, values, expected_version=expected,
                                           by=current_user)
        except vault.InvalidCredentials as exc:
            errors = exc.errors
        except vault.VaultError as exc:
            errors = {"__all__": str(exc)}
        else:
            db.session.commit()
            notice = (f"Saved as version {version}. Jobs that use this authorization pick it "
                      "up on their next run.")
    db.session.refresh(authorization)
    return htmx.render("vault/summary.html", "vault/_credentials.html",
                       status=422 if errors else 200,
                       **_summary_context(authorization, errors=errors, notice=notice,
                                          values={**authorization.public.get("values", {}),
                                                  **{k: v for k, v in values.items()
                                                     if k not in method.secret_fields}}))


@bp.post("/<int:authorization_id>/reauthorize")
@role_required("operator")
def reauthorize(authorization_id: int):
    authorization = _authorization(authorization_id, for_change=True)
    provider, method = _method_of(authorization)
    if method.kind != "oauth2":
        abort(400, description="Only OAuth authorizations are re-authorized; update the "
                               "credentials instead.")
    return _begin_oauth(provider, method, {"authorization_id": authorization.id,
                                           "version": authorization.current_version})


@bp.post("/<int:authorization_id>/test")
@role_required("operator")
def test_connection(authorization_id: int):
    authorization = _authorization(authorization_id)
    vault.test_connection(authorization, by=current_user)
    return htmx.render("vault/summary.html", "vault/_health.html",
                       **_summary_context(authorization))


@bp.post("/<int:authorization_id>/delete")
@role_required("operator")
def delete(authorization_id: int):
    authorization = _authorization(authorization_id, for_change=True)
    try:
        vault.delete(authorization, by=current_user)
    except vault.InUse as exc:
        return htmx.render("vault/summary.html", "vault/_delete.html", status=409,
                           **_summary_context(authorization, delete_refused=str(exc)))
    db.session.commit()
    return htmx.redirect(url_for("vault.index"))


@bp.post("/<int:authorization_id>/reassign")
@role_required("operator")
def reassign(authorization_id: int):
    authorization = _authorization(authorization_id, for_change=True)
    target_id = params.id_arg(request.form, "target", strict=False)
    target = db.session.get(Authorization, target_id) if target_id else None
    try:
        if target is None:
            raise vault.VaultError("Choose the authorization the jobs should use instead.")
        moved = vault.reassign(authorization, target, by=current_user)
    except vault.VaultError as exc:
        return htmx.render("vault/summary.html", "vault/_delete.html", status=422,
                           **_summary_context(authorization, delete_refused=str(exc)))
    db.session.commit()
    return htmx.render("vault/summary.html", "vault/_delete.html",
                       **_summary_context(authorization, notice=f"{moved} job(s) now use "
                                                                f"“{target.label}”."))
