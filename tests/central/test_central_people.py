"""Central accounts from the UI and the CLI (disable, enable, new password, roles; the device's rules) and the
audit trail page with its filters."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from central_web_kit import admin, central, form_token  # noqa: F401  (fixtures)
from conftest import REPO_ROOT, TEST_PASSWORD, Auth

NEW_PASSWORD = "a-new-long-passphrase-42"


def _user(name):
    from device.store.records import User

    return User.get(User.username == name)


def _post(client, url, **data):
    return client.post(url, data={"csrf_token": form_token(client, "/users"), **data})


def test_disable_enable_password_and_roles_from_the_ui_are_audited(central, admin):
    from device.store.records import AuditEvent

    page = admin.get("/users")
    assert page.status_code == 200 and "tech" in page.get_data(as_text=True)
    with central.app_context():
        tech, boss = _user("tech").id, _user("boss").id
    tech_client = central.test_client()
    assert Auth(tech_client).login("tech").status_code == 302

    assert _post(admin, f"/users/{tech}/disable").status_code == 302
    with central.app_context():
        assert _user("tech").disabled
    assert tech_client.get("/devices").status_code == 302  # the open session ended
    assert Auth(central.test_client()).login("tech").status_code == 401
    assert _post(admin, f"/users/{tech}/enable").status_code == 302

    refused = _post(admin, f"/users/{tech}/password", **{f"p{tech}-password": "short", f"p{tech}-confirm": "short"})
    assert refused.status_code == 400 and "at least" in refused.get_data(as_text=True)
    done = _post(admin, f"/users/{tech}/password",
                 **{f"p{tech}-password": NEW_PASSWORD, f"p{tech}-confirm": NEW_PASSWORD})
    assert done.status_code == 302
    assert Auth(central.test_client()).login("tech", NEW_PASSWORD).status_code in (302, 403)

    assert _post(admin, f"/users/{tech}/roles", **{f"r{tech}-roles": ["admin", "pathologist"]}).status_code == 302
    with central.app_context():
        assert _user("tech").roles == "pathologist,admin"
    odd = _post(admin, f"/users/{tech}/roles", **{f"r{tech}-roles": ["technician"]})
    assert odd.status_code == 400 and "not a valid choice" in odd.get_data(as_text=True)
    with central.app_context():
        assert _user("tech").roles == "pathologist,admin"
    own = _post(admin, f"/users/{boss}/disable")
    assert own.status_code == 409 and "cannot disable your own account" in own.get_data(as_text=True)
    assert _post(admin, "/users/999999/disable").status_code == 404
    no_csrf = admin.post(f"/users/{tech}/disable")
    assert no_csrf.status_code == 400
    with central.app_context():
        actions = [(e.action, e.username) for e in AuditEvent.select().where(AuditEvent.entity == "user")
                   .order_by(AuditEvent.id)]
    assert ("disable", "boss") in actions and ("enable", "boss") in actions
    assert ("password", "boss") in actions and ("update", "boss") in actions


def test_last_admin_cannot_be_demoted(central, admin):
    with central.app_context():
        boss = _user("boss").id
    response = _post(admin, f"/users/{boss}/roles", **{f"r{boss}-roles": ["pathologist"]})
    assert response.status_code == 400 and "own admin role" in response.get_data(as_text=True)


def _cli(data, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "device.cli", "central", "users", *args, "--data-dir", str(data)],
                          input=stdin, text=True, capture_output=True, cwd=REPO_ROOT, timeout=120)


def test_cli_disable_enable_password_and_roles(tmp_path):
    data = tmp_path / "central"
    assert _cli(data, "create", "boss", stdin=TEST_PASSWORD + "\n").returncode == 0
    assert _cli(data, "create", "lab", stdin=TEST_PASSWORD + "\n").returncode == 0
    run = _cli(data, "disable", "lab")
    assert run.returncode == 0 and run.stdout.strip() == "lab disabled"
    assert "lab\tadmin\tdisabled" in _cli(data, "list").stdout
    assert _cli(data, "enable", "lab").stdout.strip() == "lab enabled"
    run = _cli(data, "roles", "lab", "--role", "pathologist")
    assert run.returncode == 0 and run.stdout.strip() == "lab now has the roles: pathologist"
    run = _cli(data, "roles", "boss", "--role", "pathologist")
    assert run.returncode == 2 and "last active administrator" in run.stderr and "Traceback" not in run.stderr
    run = _cli(data, "roles", "lab", "--role", "technician")
    assert run.returncode == 2 and "has no use on the central" in run.stderr
    run = _cli(data, "password", "lab", stdin=NEW_PASSWORD + "\n")
    assert run.returncode == 0 and run.stdout.strip() == "new password set for lab"
    run = _cli(data, "disable", "nobody")
    assert run.returncode == 2 and run.stderr.strip() == "allscope: no such user: nobody"

    from device.services import accounts
    from device.store.records import AuditEvent
    from sync.central.db import open_central_database

    database = open_central_database(data / "central.db")
    try:
        user, _ = accounts.authenticate("lab", NEW_PASSWORD, "127.0.0.1")
        assert user is not None and user.roles == "pathologist"
        events = [e.action for e in AuditEvent.select().where(AuditEvent.entity == "user").order_by(AuditEvent.id)]
        assert events[-5:] == ["disable", "enable", "update", "password", "login"]  # then the check above
        assert AuditEvent.select().where(AuditEvent.username.startswith("cli:")).count() >= 4
    finally:
        database.close()


def test_audit_trail_filters_by_user_action_and_dates(central, admin):
    from device.store.records import AuditEvent

    with central.app_context():
        for day, user, action in ((1, "ana", "revoke"), (2, "ana", "enrol"), (3, "ben", "enrol"), (9, "ben", "login")):
            AuditEvent.create(at=dt.datetime(2026, 2, day, 9, 0), username=user, action=action, entity="device",
                              entity_id=f"dev-{day}", detail=f"event of day {day}")

    def shown(**query) -> set[str]:  # up to February 2026: the log-ins of this test are left out (5 per page)
        html = admin.get("/audit", query_string={"to": "2026-02-28", **query}).get_data(as_text=True)
        return {f"dev-{d}" for d in (1, 2, 3, 9) if f"device dev-{d}<" in html}

    assert shown() == {"dev-1", "dev-2", "dev-3", "dev-9"}
    assert shown(user="ana") == {"dev-1", "dev-2"}
    assert shown(action="enrol") == {"dev-2", "dev-3"}
    assert shown(user="ben", action="enrol") == {"dev-3"}
    assert shown(**{"from": "2026-02-02", "to": "2026-02-03"}) == {"dev-2", "dev-3"}
    assert shown(to="2026-02-01") == {"dev-1"}
    assert shown(**{"from": "not-a-date"}) == {"dev-1", "dev-2", "dev-3", "dev-9"}  # ignored, not an error
    assert shown(to="2026-02-01", **{"from": "2026-02-01"}) == {"dev-1"}
    everything = admin.get("/audit").get_data(as_text=True)
    assert "login" in everything and "page 1 of" in everything  # the admin's own log-ins are events too
    page = admin.get("/audit", query_string={"user": "ana"}).get_data(as_text=True)
    assert '<option value="ana" selected>' in page


def test_account_rules_work_on_postgresql(postgres_url):
    """The rules' write lock is SQLite's BEGIN IMMEDIATE there; PostgreSQL has its own (SERIALIZABLE)."""
    from device.services import account_rules, accounts
    from device.store.records import User
    from sync.central.db import open_central_database

    database = open_central_database(postgres_url)
    try:
        accounts.create_user("boss", TEST_PASSWORD, ["admin"])
        accounts.create_user("lab", TEST_PASSWORD, ["admin"])
        account_rules.set_enabled(User.get(User.username == "lab"), False, "boss")
        assert User.get(User.username == "lab").disabled
        account_rules.change_roles(User.get(User.username == "lab"), ["pathologist"], "boss")
        try:
            account_rules.change_roles(User.get(User.username == "boss"), ["pathologist"], "lab")
        except accounts.AccountRefused as error:
            assert "last active administrator" in str(error)
        else:
            raise AssertionError("the last administrator was demoted")
    finally:
        database.close()


def test_new_users_are_created_from_the_ui_with_the_cli_rules_csrf_and_audit(central, admin):
    from device.store.records import AuditEvent, User

    page = admin.get("/users").get_data(as_text=True)
    assert "New user" in page and 'action="/users/new"' in page
    fields = {"new-username": "Reporter", "new-full_name": "Rita Reporter", "new-roles": ["pathologist"],
              "new-password": NEW_PASSWORD, "new-confirm": NEW_PASSWORD}
    assert admin.post("/users/new", data=fields).status_code == 400  # no CSRF token: nothing created
    with central.app_context():
        assert not User.select().where(User.username == "reporter").exists()

    short = _post(admin, "/users/new", **{**fields, "new-password": "short", "new-confirm": "short"})
    assert short.status_code == 400 and "at least 10 characters" in short.get_data(as_text=True)
    bad_name = _post(admin, "/users/new", **{**fields, "new-username": "no spaces allowed"})
    assert bad_name.status_code == 400 and "lower-case letters" in bad_name.get_data(as_text=True)
    no_role = _post(admin, "/users/new", **{k: v for k, v in fields.items() if k != "new-roles"})
    assert no_role.status_code == 400 and "Choose at least one role" in no_role.get_data(as_text=True)
    foreign = _post(admin, "/users/new", **{**fields, "new-roles": ["technician"]})
    assert foreign.status_code == 400 and "Traceback" not in foreign.get_data(as_text=True)
    with central.app_context():
        assert not User.select().where(User.username == "reporter").exists()

    done = _post(admin, "/users/new", **fields)
    assert done.status_code == 302
    assert "User reporter created (pathologist)" in admin.get(done.location).get_data(as_text=True)
    again = _post(admin, "/users/new", **fields)
    assert again.status_code == 400 and "already exists" in again.get_data(as_text=True)
    with central.app_context():
        user = _user("reporter")
        assert (user.roles, user.full_name, user.disabled) == ("pathologist", "Rita Reporter", False)
        (event,) = [e for e in AuditEvent.select().where((AuditEvent.action == "create") & (AuditEvent.entity == "user"))
                    if e.after.get("username") == "reporter"]
        assert event.username == "boss" and event.after == {"username": "reporter", "roles": ["pathologist"]}
    reporter = central.test_client()
    assert Auth(reporter).login("reporter", NEW_PASSWORD).status_code == 302
    assert reporter.get("/export").status_code == 200 and reporter.get("/devices").status_code == 403
