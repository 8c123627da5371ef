"""The central admin web UI: role walls, CSRF, devices, enrol, revoke, records search, patient view, errors.

A real SQLite central database (``open_central_database``) per test, rows put
in directly through the central models, the Flask test client logging in
through the real form.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import zipfile

import pytest
from conftest import CENTRAL_USERS, TEST_PASSWORD, Auth, csrf_from

# endpoint -> who may call it ("anonymous" means everyone)
ANON, ADMIN_ONLY = "anonymous", "admin"
TABLE = {
    "static": ANON,
    "central_static": ANON,
    "auth.login": ANON,
    "auth.setup": ANON,        # 404 once a user exists, for everyone
    "auth.home": ADMIN_ONLY,
    "auth.logout": "any user",
    "devices.device_list": ADMIN_ONLY,
    "devices.device_page": ADMIN_ONLY,
    "devices.enrol": ADMIN_ONLY,
    "devices.revoke_confirm": ADMIN_ONLY,
    "devices.revoke": ADMIN_ONLY,
    "devices.register_key": ADMIN_ONLY,
    "records.record_list": ADMIN_ONLY,
    "records.record_page": ADMIN_ONLY,
    "records.patient_page": ADMIN_ONLY,
    "ingest.error_list": ADMIN_ONLY,
}


@pytest.fixture
def central(tmp_path, central_users_db):
    from sync.central.web.app import create_central_app

    data = tmp_path / "central"
    data.mkdir()
    shutil.copyfile(central_users_db, data / "central.db")
    app = create_central_app(data / "central.db", data, pki_dir=tmp_path / "pki", page_size=5)
    app.testing = True
    yield app
    app.central.database.close()


@pytest.fixture
def admin(central):
    client = central.test_client()
    response = Auth(client).login("boss")
    assert response.status_code == 302 and response.location.endswith("/devices")
    return client


def _device(device_id="scope-kano-01", clinic="Kano General", **fields):
    from sync.central.models import Device

    return Device.create(device_id=device_id, clinic=clinic, cert_fingerprint="AB:" * 31 + "CD", **fields)


def _record(device, entity, record_id, version, payload, identifier, when=None):
    from sync.central.models import ReceivedRecord

    when = when or dt.datetime(2024, 5, 1, 12, 0) + dt.timedelta(minutes=record_id * 10 + version)
    return ReceivedRecord.create(device=device, entity=entity, record_id=record_id, version=version,
                                 content_sha256=f"{entity}{record_id}v{version}".ljust(64, "0"), payload=payload,
                                 created_at=when, patient_identifier=identifier)


def _patient(device, record_id, identifier, name, version=1):
    return _record(device, "patient", record_id, version,
                   {"id": record_id, "identifier": identifier, "name": name, "sex": "female", "version": version},
                   identifier)


def _report(device, record_id, identifier, *, status, version=1, sync_version=1, signed_by=None, conclusion=""):
    return _record(device, "report", record_id, sync_version,
                   {"id": record_id, "sample_id": 7, "version": version, "status": status, "signed_by": signed_by,
                    "conclusion": conclusion, "patient_identifier": identifier}, identifier)


def _form_token(client, path):
    return csrf_from(client.get(path).get_data(as_text=True))


# --- role walls ---------------------------------------------------------------------------------------------

def test_every_route_is_declared_and_in_the_table(central):
    from webui.kit.access import declared_roles

    with central.test_request_context():
        undeclared = [e for e in central.view_functions if declared_roles(e) is None]
    assert undeclared == []
    assert {rule.endpoint for rule in central.url_map.iter_rules()} == set(TABLE)


def test_role_walls_for_every_route(central):
    from flask import url_for

    device = _device()
    record = _patient(device, 1, "P-1", "Ada Obi")
    args = {"device_id": device.device_id, "record_id": record.id, "identifier": "P-1", "filename": "style.css"}
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
                headers = {"X-CSRFToken": _form_token(client, "/login")} if method != "GET" else {}
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

    token = _form_token(admin, "/devices")
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
    from sync.central.web.app import create_central_app

    app = create_central_app(tmp_path / "c.db", tmp_path / "data")
    app.testing = True
    client = app.test_client()
    assert client.get("/login").location.endswith("/setup")
    token = _form_token(client, "/setup")
    short = client.post("/setup", data={"csrf_token": token, "username": "root", "password": "short",
                                        "confirm": "short"})
    assert short.status_code == 400 and "Use at least 10 characters." in short.get_data(as_text=True)
    ok = client.post("/setup", data={"csrf_token": token, "username": "root", "password": TEST_PASSWORD,
                                     "confirm": TEST_PASSWORD})
    assert ok.status_code == 302 and ok.location.endswith("/login")
    assert User.get(User.username == "root").role_set == {"admin"}
    assert client.get("/setup").status_code == 404
    app.central.database.close()


# --- devices ------------------------------------------------------------------------------------------------

def test_device_list_shows_state_connection_backlog_and_fingerprints(admin):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.wire.keys import fingerprint, public_pem

    key = Ed25519PrivateKey.generate()
    _device("scope-kano-01", online=True, backlog=42, last_seen_at=dt.datetime(2024, 5, 2, 8, 30),
            signing_public_key=public_pem(key).decode())
    _device("scope-jos-02", clinic="Jos Teaching", state="revoked", revoked_at=dt.datetime(2024, 5, 3, 9, 0))
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
    _device("scope-kano-01")  # registered without a certificate in this PKI: the CRL stays as it is
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

    _device("scope-kano-01")
    token = _form_token(admin, "/devices/scope-kano-01/revoke")
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
    _device("scope-kano-01", signing_public_key=public_pem(raced).decode())  # someone else's hello came first
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
    token = _form_token(admin, "/devices/enrol")
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
    token = _form_token(admin, "/devices/enrol")
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

    token = _form_token(admin, "/devices/scope-kano-07/revoke")
    admin.post("/devices/scope-kano-07/revoke", data={"csrf_token": token})
    assert current_certificate_revoked(pki, "scope-kano-07")
    assert "CRL lists serials" in AuditEvent.get(AuditEvent.action == "revoke").detail

    token = _form_token(admin, "/devices/enrol?device_id=scope-kano-07")
    again = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "scope-kano-07", "clinic": "",
                                               "broker": "10.0.0.5:8883"})
    assert again.mimetype == "application/zip"
    device = Device.get(Device.device_id == "scope-kano-07")
    assert device.state == "enrolled" and device.revoked_at is None and device.clinic == "Kano General"
    event = AuditEvent.get(AuditEvent.action == "re-enrol")
    assert event.before["state"] == "revoked" and event.after["state"] == "enrolled"


def test_enrol_refuses_reserved_names_and_a_missing_pki_in_one_line(admin):
    from sync.central.models import Device

    token = _form_token(admin, "/devices/enrol")
    reserved = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "central-2", "clinic": "",
                                                  "broker": "localhost:8883"})
    assert reserved.status_code == 400 and "reserved" in reserved.get_data(as_text=True)
    no_pki = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "scope-ok-1", "clinic": "",
                                                "broker": "localhost:8883"})
    html = no_pki.get_data(as_text=True)
    assert no_pki.status_code == 400 and 'class="error-message"' in html and "Traceback" not in html
    assert not Device.select().where(Device.device_id == "scope-ok-1").exists()


# --- records, search, patient view --------------------------------------------------------------------------

@pytest.fixture
def fleet():
    kano = _device("scope-kano-01", clinic="Kano General")
    jos = _device("scope-jos-02", clinic="Jos Teaching")
    _patient(kano, 1, "KN-100", "Ada Obi")
    _patient(kano, 1, "KN-100", "Ada Obi-Eze", version=2)
    _patient(kano, 2, "KN-200", "Musa Bello")
    _patient(jos, 1, "JT-9", "Zoë Ibrahim")
    _report(kano, 5, "KN-100", status="amended", version=1, sync_version=1, signed_by="drbala", conclusion="No blasts.")
    _report(kano, 6, "KN-100", status="signed", version=2, sync_version=1, signed_by="drbala",
            conclusion="Blasts 30 %: refer to haematology.")
    _report(jos, 3, "JT-9", status="draft")
    return {"kano": kano, "jos": jos}


def _listed(html: str) -> set[str]:
    return set(re.findall(r">((?:patient|sample|capture|report) \d+ · v\d+)<", html))


def test_records_search_by_identifier_and_by_name(admin, fleet):
    everything = admin.get("/records").get_data(as_text=True)
    assert "7 record versions" in everything and "page 1 of 2" in everything  # page size 5 in the fixture
    by_id = admin.get("/records?q=kn-1").get_data(as_text=True)  # case-insensitive, part of the identifier
    assert _listed(by_id) == {"patient 1 · v1", "patient 1 · v2", "report 5 · v1", "report 6 · v1"}
    by_name = admin.get("/records?q=bello").get_data(as_text=True)
    assert _listed(by_name) == {"patient 2 · v1"}
    accented = admin.get("/records?q=zoë").get_data(as_text=True)  # non-ASCII names are stored \\u-escaped
    assert _listed(accented) == {"patient 1 · v1", "report 3 · v1"} and "scope-jos-02" in accented
    nothing = admin.get("/records?q=nobody").get_data(as_text=True)
    assert "No record matches." in nothing and "0 record versions" in nothing


def test_records_per_clinic_device_and_kind(admin, fleet):
    jos = admin.get("/records?clinic=Jos+Teaching").get_data(as_text=True)
    assert _listed(jos) == {"patient 1 · v1", "report 3 · v1"}
    assert "Kano General: 5 records, 1 device" in jos
    reports = admin.get("/records?device=scope-kano-01&entity=report").get_data(as_text=True)
    assert _listed(reports) == {"report 5 · v1", "report 6 · v1"}
    page2 = admin.get("/records?page=2").get_data(as_text=True)
    assert len(_listed(page2)) == 2 and "page 2 of 2" in page2


def test_record_page_shows_payload_and_versions_and_audits(admin, fleet):
    from device.store.records import AuditEvent
    from sync.central.models import ReceivedRecord

    record = ReceivedRecord.get((ReceivedRecord.entity == "patient") & (ReceivedRecord.version == 2))
    html = admin.get(f"/records/{record.id}").get_data(as_text=True)
    assert "Ada Obi-Eze" in html and "v1" in html and "v2" in html
    assert AuditEvent.select().where((AuditEvent.action == "view") & (AuditEvent.entity == "received_record")
                                     & (AuditEvent.entity_id == str(record.id))).count() == 1
    assert admin.get("/records/99999").status_code == 404


def test_patient_page_lists_diagnoses_newest_first_with_status_and_signer(admin, fleet):
    from device.store.records import AuditEvent

    response = admin.get("/patients/KN-100")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.index("Report 6 v2") < html.index("Report 5 v1")  # newest first
    assert "Signed by <strong>drbala</strong>" in html and "Blasts 30 %: refer to haematology." in html
    assert "amended" in html and "Ada Obi-Eze" in html and "Musa Bello" not in html
    assert AuditEvent.get((AuditEvent.action == "view") & (AuditEvent.entity == "patient")).entity_id == "KN-100"
    assert "Not signed" in admin.get("/patients/JT-9").get_data(as_text=True)
    assert admin.get("/patients/NOPE").status_code == 404


# --- ingestion errors ---------------------------------------------------------------------------------------

def test_errors_page_counts_per_reason_and_filters(admin):
    from sync.central.models import IngestError

    for reason, n in (("bad_signature", 3), ("revoked", 2), ("replay_conflict", 1)):
        for i in range(n):
            IngestError.create(device_id="scope-kano-01" if i else "scope-x", reason=reason, detail=f"{reason} #{i}")
    html = admin.get("/errors").get_data(as_text=True)
    counts = dict(re.findall(r'<span class="ce-reason">(\w+)</span> <strong class="ce-n">(\d+)</strong>', html))
    assert counts == {"bad_signature": "3", "revoked": "2", "replay_conflict": "1"}
    assert list(counts) == ["bad_signature", "revoked", "replay_conflict"]  # most frequent first
    assert "6 errors" in html
    only = admin.get("/errors?reason=revoked").get_data(as_text=True)
    assert "2 errors" in only and "revoked #1" in only and "bad_signature #0" not in only
    by_device = admin.get("/errors?device=scope-x").get_data(as_text=True)
    assert "3 errors" in by_device


# --- CLI: allscope central users / serve --------------------------------------------------------------------

def _cli(*args, stdin=""):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "device.cli", "central", *args], input=stdin, text=True,
                          capture_output=True, cwd=REPO_ROOT, timeout=120)


def test_cli_users_create_and_list(tmp_path):
    data = str(tmp_path / "central")
    created = _cli("users", "create", "boss", "--role", "admin", "--data-dir", data, stdin=TEST_PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "created boss (admin)"
    again = _cli("users", "--data-dir", data, "create", "boss", stdin=TEST_PASSWORD + "\n")
    assert again.returncode == 2 and again.stderr.strip() == "allscope: user 'boss' already exists"
    weak = _cli("users", "create", "other", "--data-dir", data, stdin="short\n")
    assert weak.returncode == 2 and "password too short" in weak.stderr and "Traceback" not in weak.stderr
    listed = _cli("users", "list", "--central-db", str(tmp_path / "central" / "central.db"))
    assert listed.returncode == 0 and listed.stdout.startswith("boss\tadmin\tactive\tlast login never")


def test_cli_serve_answers_the_login_page(tmp_path):
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import REPO_ROOT, free_port

    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "device.cli", "central", "serve", "--data-dir",
                                str(tmp_path / "central"), "--port", str(port)], stdout=log, stderr=log,
                               cwd=REPO_ROOT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/setup", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail((tmp_path / "serve.log").read_text())
                time.sleep(0.2)
        assert "create the central administrator" in body
        assert (tmp_path / "central" / "central.db").exists()
        assert oct((tmp_path / "central" / "secret_key").stat().st_mode & 0o777) == "0o600"
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
        log.close()
    assert "/setup" in (tmp_path / "serve.log").read_text()
