"""Users administration: create, invite, roles, disable/enable, resets, own password
change, guard rails and the audit trail. Browsers are clients of a served app (each request
its own app context, as in production), so one browser's session is really its own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, User, UserLink
from portal.models.types import utcnow
from tests.conftest import TEST_PASSWORD, _make_app, csrf_token

NEW_PASSWORD = "velvet comet harbour 7"


@pytest.fixture
def server(app, database_url, redis_url, tmp_path) -> Iterator[Flask]:
    served = _make_app(database_url, redis_url, tmp_path / "served")
    yield served
    with served.app_context():
        db.engine.dispose()


def browser(server: Flask, user: User, password: str = TEST_PASSWORD) -> FlaskClient:
    client = server.test_client()
    response = client.post("/login", data={"email": user.email, "password": password,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


def post(client: FlaskClient, path: str, **data):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/settings")})


def signed_in(client: FlaskClient) -> bool:
    return client.get("/jobs").status_code == 200


def audited(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def fresh(user: User) -> User:
    db.session.expire_all()
    return db.session.get(User, user.id)


def test_disabling_a_user_ends_their_open_session(server, make_user, token_for):
    admin = make_user("admin", "boss@example.com")
    operator = make_user("operator")
    boss, them = browser(server, admin), browser(server, operator)
    assert signed_in(them)
    response = post(boss, f"/admin/users/{operator.id}/disable")
    assert response.status_code == 303
    assert not signed_in(them)  # the very next request
    assert not fresh(operator).active
    (entry,) = audited("disabled")
    assert entry.actor == admin.email and entry.object_id == operator.id
    # Signing in again is refused while disabled; enabling lets them back.
    again = server.test_client()
    assert again.post("/login", data={"email": operator.email, "password": TEST_PASSWORD,
                                      "csrf_token": csrf_token(again)}).status_code == 422
    post(boss, f"/admin/users/{operator.id}/enable")
    assert fresh(operator).active and audited("enabled")
    assert signed_in(browser(server, operator))


def test_a_disabled_users_api_tokens_stop(server, make_user, token_for):
    raw = token_for("operator")  # created by boss@example.com
    admin = db.session.scalar(select(User).where(User.email == "boss@example.com"))
    other = make_user("admin", "other@example.com")
    api = server.test_client()
    assert api.get("/api/v2/job", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    post(browser(server, other), f"/admin/users/{admin.id}/disable")
    assert api.get("/api/v2/job", headers={"Authorization": f"Bearer {raw}"}).status_code == 401


def test_a_role_change_takes_effect_on_the_next_request(server, make_user):
    admin = make_user("admin", "boss@example.com")
    viewer = make_user("viewer")
    boss, them = browser(server, admin), browser(server, viewer)
    assert them.get("/admin/users").status_code == 403
    assert post(boss, f"/admin/users/{viewer.id}/role", role="admin").status_code == 303
    assert them.get("/admin/users").status_code == 200
    (entry,) = audited("role_changed")
    assert entry.details == {"before": "viewer", "after": "admin"}
    assert entry.actor == admin.email


def test_guard_rails(server, make_user):
    admin = make_user("admin", "boss@example.com")
    boss = browser(server, admin)
    post(boss, f"/admin/users/{admin.id}/role", role="viewer")
    assert fresh(admin).role == "admin"
    assert "last active admin" in boss.get("/admin/users").get_data(as_text=True)
    post(boss, f"/admin/users/{admin.id}/disable")
    assert fresh(admin).active
    assert "cannot disable yourself" in boss.get("/admin/users").get_data(as_text=True)
    # With a second admin, one can step down, but still not disable themselves.
    make_user("admin", "other@example.com")
    post(boss, f"/admin/users/{admin.id}/disable")
    assert fresh(admin).active
    post(boss, f"/admin/users/{admin.id}/role", role="operator")
    assert fresh(admin).role == "operator"
    assert not audited("disabled")


def test_create_with_field_errors_then_for_real(server, make_user):
    admin = make_user("admin", "boss@example.com")
    boss = browser(server, admin)
    response = post(boss, "/admin/users", mode="create", email="not-an-email", role="king",
                    password="short")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Enter an email address" in page and "Choose a role" in page
    assert "short" not in re.findall(r'name="password"[^>]*', page)[0]
    response = post(boss, "/admin/users", mode="create", email="Ana@Example.com",
                    name="Ana", role="operator", password="password1234")
    assert response.status_code == 422
    assert "most common passwords" in response.get_data(as_text=True)
    response = post(boss, "/admin/users", mode="create", email="Ana@Example.com",
                    name="Ana", role="operator", password=NEW_PASSWORD)
    assert response.status_code == 303
    user = db.session.scalar(select(User).where(User.email == "ana@example.com"))
    assert user.role == "operator" and user.check_password(NEW_PASSWORD)
    assert audited("created")[0].actor == admin.email
    page = post(boss, "/admin/users", mode="create", email="ana@example.com", role="viewer",
                password=NEW_PASSWORD).get_data(as_text=True)
    assert "Someone with this email can already sign in" in page


def _link(page: str, kind: str) -> str:
    match = re.search(rf'id="link-value"[^>]*>http://[^/<]+(/{kind}/[^<]+)</code>', page)
    assert match, page
    return match.group(1)


def test_an_invitation_works_once_and_expires(server, make_user):
    admin = make_user("admin", "boss@example.com")
    boss = browser(server, admin)
    response = post(boss, "/admin/users", mode="invite", email="new@example.com",
                    role="viewer")
    assert response.status_code == 200
    link = _link(response.get_data(as_text=True), "invite")
    assert "Invited" in boss.get("/admin/users").get_data(as_text=True)
    assert link not in boss.get("/admin/users").get_data(as_text=True)  # shown once
    invitee = server.test_client()
    assert invitee.get(link).status_code == 200
    weak = invitee.post(link, data={"password": "aaaaaaaaaaaaaa",
                                    "confirm_password": "aaaaaaaaaaaaaa",
                                    "csrf_token": csrf_token(invitee, link)})
    assert weak.status_code == 422 and "easy to guess" in weak.get_data(as_text=True)
    done = invitee.post(link, data={"password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
                                    "csrf_token": csrf_token(invitee, link)})
    assert done.status_code == 303 and signed_in(invitee)
    user = db.session.scalar(select(User).where(User.email == "new@example.com"))
    assert fresh(user).last_login_method == "invite"
    assert audited("invited") and audited("invite_accepted")
    # Single use.
    assert server.test_client().get(link).status_code == 404
    # Expiring: a second invitation, aged past its lifetime.
    response = post(boss, "/admin/users", mode="invite", email="late@example.com",
                    role="viewer")
    late = _link(response.get_data(as_text=True), "invite")
    newest = db.session.scalar(select(UserLink).order_by(UserLink.id.desc()))
    newest.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert server.test_client().get(late).status_code == 404


def test_reset_link_ends_sessions_and_sets_a_password(server, make_user):
    admin = make_user("admin", "boss@example.com")
    operator = make_user("operator")
    boss, them = browser(server, admin), browser(server, operator)
    response = post(boss, f"/admin/users/{operator.id}/reset")
    link = _link(response.get_data(as_text=True), "reset")
    assert not signed_in(them)
    assert audited("password_reset_link")
    page = server.test_client()
    assert page.post(link, data={"password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
                                 "csrf_token": csrf_token(page, link)}).status_code == 303
    assert signed_in(browser(server, operator, NEW_PASSWORD))
    # An admin can also set one directly.
    post(boss, f"/admin/users/{operator.id}/reset", password="orchid tundra falcon 9")
    assert fresh(operator).check_password("orchid tundra falcon 9")
    assert audited("password_reset")


def test_own_password_change_keeps_this_browser_and_ends_the_others(server, make_user):
    user = make_user("viewer")
    here, elsewhere = browser(server, user), browser(server, user)
    response = post(here, "/settings/password", current_password="wrong one",
                    new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert response.status_code == 422
    assert "not your current password" in response.get_data(as_text=True)
    response = post(here, "/settings/password", current_password=TEST_PASSWORD,
                    new_password=NEW_PASSWORD, confirm_password="different")
    assert response.status_code == 422 and "differ" in response.get_data(as_text=True)
    response = post(here, "/settings/password", current_password=TEST_PASSWORD,
                    new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert response.status_code == 303
    assert signed_in(here) and not signed_in(elsewhere)
    assert fresh(user).check_password(NEW_PASSWORD)
    (entry,) = audited("password_changed")
    assert entry.actor == user.email


def test_users_page_lists_people_and_tokens(server, make_user, token_for):
    token_for("viewer")
    admin = db.session.scalar(select(User).where(User.email == "boss@example.com"))
    boss = browser(server, admin)
    page = boss.get("/admin/users").get_data(as_text=True)
    assert "boss@example.com" in page and "viewer script" in page
    assert 'id="new-token-form"' in page and 'id="new-user-form"' in page
    assert boss.get("/admin/tokens").status_code == 200
