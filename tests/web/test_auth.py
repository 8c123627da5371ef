"""Log-in, lock-out, first-run set-up, open redirects, session fixation and idle logout, with the real app."""

from __future__ import annotations

import time

import pytest
from conftest import TEST_PASSWORD, csrf_from

from device.store.records import AuditEvent, LoginFailure


def test_login_lands_clinical_users_on_patients_and_admins_on_status(client, auth):
    assert auth.login("tech").headers["Location"] == "/"
    auth.logout()
    assert auth.login("admin").headers["Location"] == "/admin/status"


def test_wrong_password_is_refused_and_audited(app, client, auth):
    response = auth.login("tech", "not-the-password")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "login_failed").count() == 1


def test_a_wait_after_three_failures_holds_even_for_the_right_password(app, client, auth):
    for _ in range(5):
        auth.login("path", "wrong-password-x")
    response = auth.login("path", TEST_PASSWORD)
    assert response.status_code == 401
    assert "Too many failed attempts" in response.get_data(as_text=True)
    with app.app_context():  # persisted: a restart does not forget; attempts made while waiting are not stored
        assert LoginFailure.select().where(LoginFailure.key == "pair:path@127.0.0.1").count() == 3
    # another account from the same address is not locked by someone else's failures
    assert auth.login("tech").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
def test_login_next_never_redirects_off_site(client, auth, target):
    response = auth.login("tech", next_url=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_login_next_keeps_a_local_path(client, auth):
    assert auth.login("tech", next_url="/?q=abc").headers["Location"] == "/?q=abc"


def test_session_data_from_before_login_does_not_survive(client, auth):
    with client.session_transaction() as session:
        session["planted"] = "by-attacker"
    auth.login("tech")
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.get("_user_id")


def test_idle_session_is_logged_out(client, auth):
    auth.login("tech")
    assert client.get("/").status_code == 200
    with client.session_transaction() as session:
        session["last_seen"] = time.time() - 11 * 60
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert client.get("/").status_code == 302  # really logged out


def test_setup_page_only_works_while_no_user_exists(client):
    assert client.get("/setup").status_code == 404


def test_first_run_setup_creates_one_admin_then_closes(tmp_path):
    from webui.app import create_app

    app = create_app(data_dir=tmp_path / "fresh", start_workers=False)
    client = app.test_client()
    assert client.get("/login").headers["Location"] == "/setup"
    token = csrf_from(client.get("/setup").get_data(as_text=True))
    weak = client.post("/setup", data={"csrf_token": token, "username": "boss", "password": "short",
                                       "password_again": "short"})
    assert weak.status_code == 400 and "too short" in weak.get_data(as_text=True)
    ok = client.post("/setup", data={"csrf_token": token, "username": "boss", "password": TEST_PASSWORD,
                                     "password_again": TEST_PASSWORD, "roles": ["admin"]})
    assert ok.status_code == 302
    assert client.get("/setup").status_code == 404


def test_forms_without_csrf_token_are_refused(client):
    response = client.post("/login", data={"username": "tech", "password": TEST_PASSWORD})
    assert response.status_code == 400
    assert "Traceback" not in response.get_data(as_text=True)


def test_session_cookie_flags(client, auth):
    response = auth.login("tech")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_security_headers_on_every_page(client):
    response = client.get("/login")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_secret_key_is_generated_private(app):
    import os
    import stat

    key_file = app.appliance.data.root / "secret_key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(key_file.read_bytes().strip()) == 64


def test_a_new_password_or_disabling_ends_open_sessions(app, client, auth):
    from device.services import accounts
    from device.store.records import User

    auth.login("tech")
    assert client.get("/").status_code == 200
    with app.app_context():
        accounts.set_password(User.get(User.username == "tech"), "another-password-9", actor="admin")
    assert client.get("/").status_code == 302  # the open session is gone
    auth.login("tech", "another-password-9")
    assert client.get("/").status_code == 200
    with app.app_context():
        accounts.set_disabled("tech", True, actor="admin")
        accounts.set_disabled("tech", False, actor="admin")
    assert client.get("/").status_code == 302
