"""Failed log-ins (issue 13, items 1 and 8), device and central: nothing an anonymous visitor types fills the
disk, and nobody is locked out by someone else's guesses.

* a user name that breaks the user-name rule is refused before any write (a 400 KB name once grew the
  database by a megabyte per attempt);
* attempts refused while a wait runs write nothing; the audit trail itemises a bounded number of failures
  per address and hour; failures older than ``login.forget_after_hours`` are deleted;
* waits grow per (user name, address): guesses from elsewhere, or another user's typos at the kiosk
  (everyone is 127.0.0.1), never block a user; an administrator unlocks (page and CLI, audited);
* behind the central's proxy, X-Forwarded-For is believed only from ``central.trusted_proxies``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, TEST_PASSWORD, csrf_from
from figures import report

from device.config.schema import parse_config
from device.store.records import AuditEvent, LoginFailure, User

HUGE_NAME = "x" * 400_000


def login(client, username: str, password: str = TEST_PASSWORD, address: str = "127.0.0.1",
          forwarded: str | None = None):
    environ = {"REMOTE_ADDR": address}
    token = csrf_from(client.get("/login", environ_base=environ).get_data(as_text=True))
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/login", data={"csrf_token": token, "username": username, "password": password},
                       environ_base=environ, headers=headers)


def rows(app) -> tuple[int, int]:
    with app.app_context():
        return LoginFailure.select().count(), AuditEvent.select().count()


@pytest.fixture
def device_app(tmp_path, users_database):
    """The device UI with a small audit budget, so that the bound is reached quickly."""
    from webui.app import create_app

    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copyfile(users_database, data_dir / "allscope.db")
    config = parse_config("[login]\naudited_failures_per_hour = 4\n")
    application = create_app(config, data_dir=data_dir, start_workers=False)
    application.testing = True
    yield application
    application.appliance.stop()


def age_failures(app, key_prefix: str, by: dt.timedelta) -> None:
    """Move the recorded failures back in time (the waits run out without the test sleeping)."""
    with app.app_context():
        for row in LoginFailure.select().where(LoginFailure.key.startswith(key_prefix)):
            LoginFailure.update(at=row.at - by).where(LoginFailure.id == row.id).execute()


# --- item 1: the disk ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [HUGE_NAME, "Robert'); DROP TABLE user;--", "a", "ü" * 10, "tech\x00admin"])
def test_a_name_that_breaks_the_rule_is_refused_before_any_write(device_app, name):
    client = device_app.test_client()
    before = rows(device_app)
    response = login(client, name, "whatever-password")
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "user names are 2-64 characters" in page and (len(name) < 3 or name not in page)
    assert rows(device_app) == before
    report("log-in attempts with a name breaking the rule, refused without a write", 1)


def test_thirty_huge_names_do_not_grow_the_database(device_app):
    database = device_app.appliance.data.database
    client = device_app.test_client()
    login(client, "tech")  # warm up: the WAL and the first pages exist
    with device_app.app_context():
        device_app.appliance.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    size = database.stat().st_size + database.with_name(database.name + "-wal").stat().st_size
    for _ in range(30):
        assert login(client, HUGE_NAME, "x").status_code == 401
    grown = database.stat().st_size + database.with_name(database.name + "-wal").stat().st_size - size
    assert grown < 64 * 1024, grown
    report("bytes the database grew for 30 log-ins with a 400 KB user name", grown)


def test_attempts_refused_while_waiting_write_nothing(device_app):
    client = device_app.test_client()
    for _ in range(3):
        assert login(client, "path", "wrong-password-x").status_code == 401
    written = rows(device_app)
    for _ in range(20):
        response = login(client, "path", "wrong-password-x")
        assert "Too many failed attempts for path" in response.get_data(as_text=True)
    assert rows(device_app) == written
    report("log-in attempts refused during a wait, written nowhere", 20)


def test_the_audit_trail_itemises_a_bounded_number_of_failures_per_address(device_app):
    client = device_app.test_client()
    for i in range(12):
        login(client, f"nobody{i:02d}", "wrong-password-x")
    with device_app.app_context():
        failed = list(AuditEvent.select().where(AuditEvent.action == "login_failed").order_by(AuditEvent.id))
        assert len(failed) == 5  # the budget of 4, then one event saying the rest are only counted
        assert "not itemised" in failed[-1].detail
        assert all(len(e.username) <= 64 and len(e.entity_id) <= 64 for e in failed)
        assert {e.username for e in failed} == {""}  # a name with no account is not shown as a user
        # still throttled: every (name, address) pair is counted
        assert LoginFailure.select().where(LoginFailure.key.startswith("pair:")).count() == 12
    other = login(device_app.test_client(), "nobody99", "wrong-password-x", address="10.1.1.1")
    assert other.status_code == 401
    with device_app.app_context():  # another address has its own budget
        assert AuditEvent.select().where((AuditEvent.action == "login_failed") &
                                         (AuditEvent.address == "10.1.1.1")).count() == 1
    report("failed log-ins with distinct names, itemised in the audit trail at most 5", 12)


def test_the_user_filter_of_the_audit_page_lists_accounts_not_every_name_typed(device_app):
    client = device_app.test_client()
    for i in range(3):
        login(client, f"guess-{i}", "wrong-password-x")
    admin = device_app.test_client()
    assert login(admin, "admin").status_code == 302
    page = admin.get("/admin/audit").get_data(as_text=True)
    assert "guess-0" not in page.split("<table")[0]  # not in the filter's choices


def test_old_failures_are_deleted(device_app):
    client = device_app.test_client()
    login(client, "tech", "wrong-password-x")
    age_failures(device_app, "", dt.timedelta(hours=25))
    login(client, "path", "wrong-password-x")
    with device_app.app_context():
        assert [r.key for r in LoginFailure.select().where(LoginFailure.key.startswith("pair:"))] == \
            ["pair:path@127.0.0.1"]


# --- item 8: no denial of service ---------------------------------------------------------------------------

def test_waits_grow_per_name_and_address_and_run_out(device_app):
    client = device_app.test_client()
    for _ in range(3):
        assert "Wrong username or password" in login(client, "path", "wrong-password-x").get_data(as_text=True)
    refused = login(client, "path", TEST_PASSWORD)  # even the right password waits
    text = refused.get_data(as_text=True)
    assert refused.status_code == 401 and "try again in 5 s" in text
    assert "ask an administrator to unlock path" in text
    age_failures(device_app, "pair:path@", dt.timedelta(seconds=6))
    assert "Wrong username or password" in login(client, "path", "wrong-password-x").get_data(as_text=True)
    assert "try again in 10 s" in login(client, "path", TEST_PASSWORD).get_data(as_text=True)
    age_failures(device_app, "pair:path@", dt.timedelta(seconds=11))
    assert login(client, "path", TEST_PASSWORD).status_code == 302
    with device_app.app_context():  # a success clears that address's count
        assert not LoginFailure.select().where(LoginFailure.key == "pair:path@127.0.0.1").exists()


def test_guesses_at_the_kiosk_lock_no_other_user_out(device_app):
    client = device_app.test_client()
    for i in range(25):  # another user's typos and guesses, all from 127.0.0.1
        login(client, f"someone{i % 5}", "wrong-password-x")
        login(client, "path", "wrong-password-x")
    assert login(device_app.test_client(), "tech").status_code == 302
    assert login(device_app.test_client(), "chief").status_code == 302


def test_guesses_from_elsewhere_never_lock_a_user_out_of_the_kiosk(device_app):
    remote = device_app.test_client()
    for _ in range(10):
        login(remote, "path", "wrong-password-x", address="203.0.113.9")
    assert "Too many failed attempts" in login(remote, "path", TEST_PASSWORD,
                                               address="203.0.113.9").get_data(as_text=True)
    assert login(device_app.test_client(), "path").status_code == 302  # at the kiosk


def test_an_admin_unlocks_a_user_on_the_users_page(device_app):
    for address in ("127.0.0.1", "10.0.0.5"):
        client = device_app.test_client()
        for _ in range(4):
            login(client, "path", "wrong-password-x", address=address)
    admin = device_app.test_client()
    assert login(admin, "admin").status_code == 302
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "waiting after failed log-ins (2 addresses)" in page
    with device_app.app_context():
        path_id = User.get(User.username == "path").id
    token = csrf_from(page)
    response = admin.post(f"/admin/users/{path_id}/unlock", data={"csrf_token": token})
    assert response.status_code == 302
    assert "path can log in again at once (6 failed log-ins cleared)" in \
        admin.get("/admin/users").get_data(as_text=True)
    assert login(device_app.test_client(), "path").status_code == 302
    with device_app.app_context():
        [event] = AuditEvent.select().where(AuditEvent.action == "unlock")
        assert event.username == "admin" and event.entity_id == str(path_id) and "6 failed" in event.detail
    # CSRF and role walls hold
    assert admin.post(f"/admin/users/{path_id}/unlock").status_code == 400
    tech = device_app.test_client()
    login(tech, "tech")
    assert tech.post(f"/admin/users/{path_id}/unlock", data={"csrf_token": token}).status_code in (400, 403)


def test_allscope_users_unlock(tmp_path, users_database):
    from device.store.records import open_database

    data = tmp_path / "var"
    data.mkdir()
    shutil.copyfile(users_database, data / "allscope.db")
    database = open_database(data / "allscope.db")
    from device.services import accounts

    for _ in range(5):
        accounts.authenticate("path", "wrong-password-x", "127.0.0.1")
    assert accounts.lockout_remaining("path", "127.0.0.1") is not None
    database.close()
    run = subprocess.run([sys.executable, "-m", "device.cli", "users", "unlock", "Path", "--data-dir", str(data)],
                         text=True, capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "unlocked path (cleared 3 failed log-ins)"  # attempts 4-5 waited: not counted
    missing = subprocess.run([sys.executable, "-m", "device.cli", "users", "unlock", "nobody", "--data-dir",
                              str(data)], text=True, capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "no such user" in missing.stderr
    database = open_database(data / "allscope.db")
    assert accounts.lockout_remaining("path", "127.0.0.1") is None
    [event] = AuditEvent.select().where(AuditEvent.action == "unlock")
    assert event.username.startswith("cli:")
    database.close()


# --- the central: same rules, its CLI, and the trusted proxy ------------------------------------------------

def central_app(tmp_path, central_users_db, trusted=()):
    from sync.central.web.app import create_central_app

    data = tmp_path / "central"
    data.mkdir(exist_ok=True)
    shutil.copyfile(central_users_db, data / "central.db")
    app = create_central_app(data / "central.db", data, pki_dir=tmp_path / "pki", trusted_proxies=trusted)
    app.testing = True
    return app


def test_central_refuses_a_huge_name_before_any_write(tmp_path, central_users_db):
    app = central_app(tmp_path, central_users_db)
    before = rows(app)
    response = login(app.test_client(), HUGE_NAME, "x")
    assert response.status_code == 401 and "user names are 2-64 characters" in response.get_data(as_text=True)
    assert rows(app) == before
    app.central.database.close()


def test_central_without_trusted_proxies_ignores_x_forwarded_for(tmp_path, central_users_db):
    app = central_app(tmp_path, central_users_db)
    client = app.test_client()
    for i in range(4):
        login(client, "boss", "wrong-password-x", forwarded=f"198.51.100.{i}")
    assert "Too many failed attempts" in login(client, "boss", forwarded="198.51.100.77").get_data(as_text=True)
    with app.app_context():
        assert {e.address for e in AuditEvent.select().where(AuditEvent.action == "login_failed")} == {"127.0.0.1"}
    app.central.database.close()


def test_central_behind_a_trusted_proxy_throttles_each_client_on_its_own(tmp_path, central_users_db):
    app = central_app(tmp_path, central_users_db, trusted=("127.0.0.1",))
    client = app.test_client()
    for _ in range(6):  # an attacker behind the proxy
        login(client, "boss", "wrong-password-x", forwarded="203.0.113.66")
    assert "Too many failed attempts" in login(client, "boss", forwarded="203.0.113.66").get_data(as_text=True)
    # the real admin, through the same proxy, from their own address; a forged left part changes nothing
    assert login(app.test_client(), "boss", forwarded="198.51.100.7").status_code == 302
    assert "Too many failed attempts" in login(app.test_client(), "boss",
                                               forwarded="198.51.100.7, 203.0.113.66").get_data(as_text=True)
    # a client that is not a trusted proxy cannot choose its address
    direct = app.test_client()
    for _ in range(4):
        login(direct, "boss", "wrong-password-x", address="192.0.2.50", forwarded="198.51.100.7")
    with app.app_context():
        addresses = {e.address for e in AuditEvent.select().where(AuditEvent.action == "login_failed")}
        assert addresses == {"203.0.113.66", "192.0.2.50"}
    app.central.database.close()
    report("proxy address chains checked (trusted, forged, untrusted)", 3)


def test_allscope_central_users_unlock(tmp_path, central_users_db):
    app = central_app(tmp_path, central_users_db)
    client = app.test_client()
    for _ in range(4):
        login(client, "boss", "wrong-password-x")
    assert "ask an administrator to unlock boss" in login(client, "boss").get_data(as_text=True)
    app.central.database.close()
    run = subprocess.run([sys.executable, "-m", "device.cli", "central", "users", "unlock", "boss", "--data-dir",
                          str(tmp_path / "central")], text=True, capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "unlocked boss (cleared 3 failed log-ins)"  # the 4th waited: not counted
    from sync.central.db import open_central_database

    database = open_central_database(tmp_path / "central" / "central.db")
    assert not LoginFailure.select().where(LoginFailure.key.startswith("pair:boss@")).exists()
    assert AuditEvent.select().where(AuditEvent.action == "unlock").count() == 1
    database.close()


def test_central_config_names_the_trusted_proxies():
    config = parse_config('[central]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\n[login]\nfree_failures = 5\n')
    assert config.central.trusted_proxies == ("127.0.0.1", "10.0.0.0/8") and config.login.free_failures == 5
    from device.errors import ConfigError

    with pytest.raises(ConfigError) as problem:
        parse_config('[central]\ntrusted_proxies = ["the proxy"]\n')
    assert problem.value.problems == ["allscope.toml:2: central.trusted_proxies: 'the proxy' is not an IP address "
                                      "or network (such as 10.0.0.0/8)"]
