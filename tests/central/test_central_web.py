"""The central admin web UI: role walls, CSRF, devices, enrol, revoke, records search, patient view, errors.

A real SQLite central database (``open_central_database``) per test, rows put
in directly through the central models, the Flask test client logging in
through the real form.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile

from central_web_kit import (  # noqa: F401  (shared fixtures and helpers)
    ADMIN_ONLY,
    ANON,
    TABLE,
    admin,
    central,
    device_row,
    form_token,
    patient_row,
)
from conftest import CENTRAL_USERS, TEST_PASSWORD, Auth, csrf_from


def test_every_route_is_declared_and_in_the_table(central):
    from webui.kit.access import declared_roles

    with central.test_request_context():
        undeclared = [e for e in central.view_functions if declared_roles(e) is None]
    assert undeclared == []
    assert {rule.endpoint for rule in central.url_map.iter_rules()} == set(TABLE)


def test_role_walls_for_every_route(central):
    from flask import url_for

    device = device_row()
    record = patient_row(device, 1, "P-1", "Ada Obi")
    args = {"device_id": device.device_id, "record_id": record.id, "identifier": "P-1", "filename": "style.css",
            "file_id": 1, "user_id": 999_999}  # no such user: an allowed POST answers 404 and changes nobody
    cookies = {}
    for username in CENTRAL_USERS:
        client = central.test_client()
        Auth(client).login(username)
        cookies[username] = client.get_cookie("allscope_central_session").value
    problems, checked = [], 0
    for rule in central.url_map.iter_rules():
        with central.test_request_context():
            url = url_for(rule.endpoint, **{k: args[k] for k in rule.arguments})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for who in ("anonymous", "tech", "boss"):
                client = central.test_client()
                if who != "anonymous":
                    client.set_cookie("allscope_central_session", cookies[who])
                headers = {"X-CSRFToken": form_token(client, "/login")} if method != "GET" else {}
                response = client.open(url, method=method, headers=headers)
                rule_for = TABLE[rule.endpoint]
                allowed = rule_for == ANON or (rule_for == "any user" and who != "anonymous") or \
                    (rule_for == ADMIN_ONLY and who == "boss")
                if who == "anonymous":
                    denied = response.status_code == 302 and response.location.startswith("/login")
                else:
                    denied = response.status_code == 403
                if allowed == denied:
                    problems.append(f"{method} {url} as {who}: {response.status_code} {response.location}")
                checked += 1
                if rule.endpoint == "auth.logout" and who != "anonymous":  # logout ends every copy: log in again
                    client = central.test_client()
                    Auth(client).login(who)
                    cookies[who] = client.get_cookie("allscope_central_session").value
    assert not problems, "\n".join(problems)
    assert checked >= 3 * len(TABLE)


def test_non_admin_is_refused_with_one_line(central):
    client = central.test_client()
    Auth(client).login("tech")
    response = client.get("/devices")
    assert response.status_code == 403
    html = response.get_data(as_text=True)
    assert "Your role does not allow this page or action." in html and "Traceback" not in html


def test_login_failure_and_security_headers(central):
    client = central.test_client()
    response = Auth(client).login("boss", password="wrong-password-1")
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)
    headers = client.get("/login").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    cookie = client.get_cookie("allscope_central_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Strict"


def test_logout_and_idle_logout(central, admin):
    from device.store.records import AuditEvent

    token = form_token(admin, "/devices")
    response = admin.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.location.endswith("/login")
    assert AuditEvent.get(AuditEvent.action == "logout").username == "boss"
    assert admin.get("/devices").location.startswith("/login")

    Auth(admin).login("boss")
    with admin.session_transaction() as session:
        session["last_seen"] -= central.central.idle_minutes * 60 + 1
    expired = admin.get("/records")
    assert expired.status_code == 302 and expired.location.startswith("/login?next=/records")
    assert "without activity" in admin.get(expired.location).get_data(as_text=True)


def test_setup_page_creates_the_first_admin_once(tmp_path):
    from device.store.records import User
    from sync.central import setup_token
    from sync.central.web.app import create_central_app

    app = create_central_app(tmp_path / "c.db", tmp_path / "data")
    app.testing = True
    client = app.test_client()
    assert client.get("/login").location.endswith("/setup")
    token = form_token(client, "/setup")
    one_time = setup_token.issue(app.central.data.root)  # what allscope central setup-token prints
    short = client.post("/setup", data={"csrf_token": token, "username": "root", "password": "short",
                                        "confirm": "short", "setup_token": one_time})
    assert short.status_code == 400 and "Use at least 10 characters." in short.get_data(as_text=True)
    ok = client.post("/setup", data={"csrf_token": token, "username": "root", "password": TEST_PASSWORD,
                                     "confirm": TEST_PASSWORD, "setup_token": one_time})
    assert ok.status_code == 302 and ok.location.endswith("/login")
    assert User.get(User.username == "root").role_set == {"admin"}
    assert client.get("/setup").status_code == 404
    assert setup_token.current(app.central.data.root) is None  # one-time: gone with its use
    app.central.database.close()


def test_device_list_shows_state_connection_backlog_and_fingerprints(admin):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.wire.keys import fingerprint, public_pem

    key = Ed25519PrivateKey.generate()
    device_row("scope-kano-01", online=True, backlog=42, last_seen_at=dt.datetime(2024, 5, 2, 8, 30),
            signing_public_key=public_pem(key).decode())
    device_row("scope-jos-02", clinic="Jos Teaching", state="revoked", revoked_at=dt.datetime(2024, 5, 3, 9, 0))
    html = admin.get("/devices").get_data(as_text=True)
    assert "scope-kano-01" in html and "scope-jos-02" in html and "Jos Teaching" in html
    assert "42" in html and "2024-05-02 08:30" in html and "online" in html
    assert "revoked 2024-05-03" in html.replace("<time datetime=\"2024-05-03T09:00:00Z\">", "")
    page = admin.get("/devices/scope-kano-01").get_data(as_text=True)
    assert fingerprint(key) in page and "AB:AB:AB" in page
    assert "not pinned yet" in admin.get("/devices/scope-jos-02").get_data(as_text=True)


def test_revoke_needs_csrf_then_changes_state_and_audits(admin, central):
    from device.store.records import AuditEvent
    from sync.central.models import Device
    from sync.fleet.pki import init_pki

    init_pki(central.central.pki_dir)
    device_row("scope-kano-01")  # registered without a certificate in this PKI: the CRL stays as it is
    confirm = admin.get("/devices/scope-kano-01/revoke")
    assert confirm.status_code == 200 and "Revoke scope-kano-01?" in confirm.get_data(as_text=True)
    refused = admin.post("/devices/scope-kano-01/revoke", data={})
    assert refused.status_code == 400 and "reload the page" in refused.get_data(as_text=True)
    assert Device.get(Device.device_id == "scope-kano-01").state == "enrolled"

    token = csrf_from(confirm.get_data(as_text=True))
    response = admin.post("/devices/scope-kano-01/revoke", data={"csrf_token": token})
    assert response.status_code == 302
    device = Device.get(Device.device_id == "scope-kano-01")
    assert device.state == "revoked" and device.revoked_at is not None
    event = AuditEvent.get(AuditEvent.action == "revoke")
    assert (event.entity, event.entity_id, event.username) == ("device", "scope-kano-01", "boss")
    assert event.before == {"state": "enrolled"} and event.after["state"] == "revoked"
    page = admin.get(response.location).get_data(as_text=True)
    assert "is revoked" in page and "the CRL is unchanged" in page
    again = admin.post("/devices/scope-kano-01/revoke", data={"csrf_token": token})
    assert "already revoked" in admin.get(again.location).get_data(as_text=True)
    assert AuditEvent.select().where(AuditEvent.action == "revoke").count() == 1


def test_revoke_without_a_pki_leaves_the_device_enrolled(admin):
    from device.store.records import AuditEvent
    from sync.central.models import Device

    device_row("scope-kano-01")
    token = form_token(admin, "/devices/scope-kano-01/revoke")
    response = admin.post("/devices/scope-kano-01/revoke", data={"csrf_token": token})
    assert response.status_code == 302
    page = admin.get(response.location).get_data(as_text=True)
    assert 'class="flash flash-error"' in page and "Traceback" not in page
    assert Device.get(Device.device_id == "scope-kano-01").state == "enrolled"
    assert not AuditEvent.select().where(AuditEvent.action == "revoke").exists()


def test_register_signing_key_on_the_device_page_needs_csrf_unpins_another_key_and_audits(admin):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from device.store.records import AuditEvent
    from sync.central.models import Device
    from sync.wire.keys import fingerprint, public_pem

    raced, real = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    device_row("scope-kano-01", signing_public_key=public_pem(raced).decode())  # someone else's hello came first
    page = admin.get("/devices/scope-kano-01").get_data(as_text=True)
    assert "Register key" in page and "Registered key" in page
    url = "/devices/scope-kano-01/signing-key"
    assert admin.post(url, data={"fingerprint": fingerprint(real)}).status_code == 400  # no CSRF token
    assert Device.get(Device.device_id == "scope-kano-01").signing_key_fingerprint == ""
    token = csrf_from(page)
    typo = admin.post(url, data={"csrf_token": token, "fingerprint": "12:34"})
    assert "64 hex digits" in admin.get(typo.location).get_data(as_text=True)
    done = admin.post(url, data={"csrf_token": token, "fingerprint": fingerprint(real)})
    after = admin.get(done.location).get_data(as_text=True)
    assert f"registered signing key {fingerprint(real)}" in after and "no longer trusted" in after
    device = Device.get(Device.device_id == "scope-kano-01")
    assert (device.signing_key_fingerprint, device.signing_public_key) == (fingerprint(real), "")
    (event,) = AuditEvent.select().where(AuditEvent.action == "register-key")
    assert (event.entity_id, event.username) == ("scope-kano-01", "boss")
    assert event.before == {"signing_key_fingerprint": "", "pinned": fingerprint(raced)}
    assert event.after == {"signing_key_fingerprint": fingerprint(real), "unpinned": True}


def test_enrol_form_validates_next_to_the_fields(admin):
    token = form_token(admin, "/devices/enrol")
    response = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "Bad Name!",
                                                  "clinic": "", "broker": "host:99999"})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Use 3-64 lower-case letters" in html and "Write the broker as host:port" in html


def test_enrol_downloads_a_bundle_the_device_installs_then_revoke_puts_it_on_the_crl(admin, central, tmp_path):
    import json

    from device.store.records import AuditEvent
    from sync.central.models import Device
    from sync.fleet.enrol import current_certificate_revoked, install_bundle
    from sync.fleet.pki import init_pki

    pki = init_pki(central.central.pki_dir)
    token = form_token(admin, "/devices/enrol")
    response = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "scope-kano-07",
                                                  "clinic": "Kano General", "broker": "mqtt.example.org:8883"})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/zip" and response.headers["Cache-Control"] == "no-store"
    assert "allscope-bundle-scope-kano-07.zip" in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert {name.split("/", 1)[1] for name in archive.namelist()} == {
        "ca.crt", "device.crt", "device.key", "central_enc_x25519.pub", "central_sign_ed25519.pub", "bundle.json"}
    key_info = next(i for i in archive.infolist() if i.filename.endswith("/device.key"))
    assert (key_info.external_attr >> 16) & 0o777 == 0o600
    bundle = json.loads(archive.read("allscope-bundle-scope-kano-07/bundle.json"))
    assert (bundle["device_id"], bundle["broker_host"], bundle["broker_port"]) == \
        ("scope-kano-07", "mqtt.example.org", 8883)
    device = Device.get(Device.device_id == "scope-kano-07")
    assert device.clinic == "Kano General" and device.state == "enrolled" and device.cert_fingerprint
    event = AuditEvent.get(AuditEvent.action == "enrol")
    assert (event.entity_id, event.username, event.before) == ("scope-kano-07", "boss", None)
    assert event.after["broker"] == "mqtt.example.org:8883"
    assert event.after["cert_fingerprint"] == device.cert_fingerprint

    zip_path = tmp_path / "bundle.zip"  # the device side takes the download as it is
    zip_path.write_bytes(response.data)
    installed = install_bundle(zip_path, tmp_path / "device-data")
    assert installed.device_id == "scope-kano-07" and installed.broker == "mqtt.example.org:8883"

    token = form_token(admin, "/devices/scope-kano-07/revoke")
    admin.post("/devices/scope-kano-07/revoke", data={"csrf_token": token})
    assert current_certificate_revoked(pki, "scope-kano-07")
    assert "CRL lists serials" in AuditEvent.get(AuditEvent.action == "revoke").detail

    token = form_token(admin, "/devices/enrol?device_id=scope-kano-07")
    again = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "scope-kano-07", "clinic": "",
                                               "broker": "10.0.0.5:8883"})
    assert again.mimetype == "application/zip"
    device = Device.get(Device.device_id == "scope-kano-07")
    assert device.state == "enrolled" and device.revoked_at is None and device.clinic == "Kano General"
    event = AuditEvent.get(AuditEvent.action == "re-enrol")
    assert event.before["state"] == "revoked" and event.after["state"] == "enrolled"


def test_enrol_refuses_reserved_names_and_a_missing_pki_in_one_line(admin):
    from sync.central.models import Device

    token = form_token(admin, "/devices/enrol")
    reserved = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "central-2", "clinic": "",
                                                  "broker": "localhost:8883"})
    assert reserved.status_code == 400 and "reserved" in reserved.get_data(as_text=True)
    no_pki = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "scope-ok-1", "clinic": "",
                                                "broker": "localhost:8883"})
    html = no_pki.get_data(as_text=True)
    assert no_pki.status_code == 400 and 'class="error-message"' in html and "Traceback" not in html
    assert not Device.select().where(Device.device_id == "scope-ok-1").exists()
