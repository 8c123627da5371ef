"""Shared by the web security tests of both apps: records of every kind, role cookies, route tables, dumps, header checks."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil

import pytest
from conftest import CENTRAL_USERS, TEST_PASSWORD, Auth

STATE_CHANGING = {"POST", "PATCH", "PUT", "DELETE"}


DEVICE_COOKIE, CENTRAL_COOKIE = "allscope_session", "allscope_central_session"


def dump(database) -> dict[str, list]:
    """Every row of every table, sorted: two dumps are equal when nothing at all changed."""
    tables = [r[0] for r in database.execute_sql(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()]
    return {t: sorted(map(repr, database.execute_sql(f'SELECT * FROM "{t}"').fetchall())) for t in tables}


def routes(app, methods=None):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if methods is None or method in methods:
                yield rule, method


def declared(app, endpoint):
    from webui.kit.access import declared_roles

    with app.test_request_context():
        return declared_roles(endpoint)


# Routes whose success ends sessions server-side (the user's session epoch is bumped).
SESSION_ENDING = {"auth.logout", "admin.user_disable", "admin.user_enable", "admin.user_password"}


def login_cookie(app, username, cookie_name) -> str:
    client = app.test_client()
    response = Auth(client).login(username)
    assert response.status_code == 302, f"{username} could not log in"
    return client.get_cookie(cookie_name).value


def client_as(app, cookies, who, cookie_name):
    """A fresh test client carrying ``who``'s session (None: anonymous)."""
    client = app.test_client()
    if cookies.get(who):
        client.set_cookie(cookie_name, cookies[who])
    return client


def png(value=200, size=8) -> bytes:
    import cv2
    import numpy as np

    ok, encoded = cv2.imencode(".png", np.full((size, size, 3), value, np.uint8))
    return encoded.tobytes()


DEVICE_ROLES = {"tech": "technician", "path": "pathologist", "admin": "admin"}


@pytest.fixture
def device_records(app):
    """One of each record (a draft report on a second sample, so that sign, draft and amend have targets)."""
    from device.store.records import Capture, Cell, Patient, Report, Sample, User, utcnow

    with app.app_context():
        data = app.appliance.data
        patient = Patient.create(identifier="P-1", name="Test Patient")
        sample = Sample.create(patient=patient)
        image_path, digest = data.store_image(png())
        capture = Capture.create(sample=sample, image_path=image_path, sha256=digest, source="upload",
                                 status="done", width=8, height=8, cell_count=1)
        crop = data.store_crop(capture.id, 0, png())
        cell = Cell.create(capture=capture, x=4, y=4, w=4, h=4, crop_path=crop, ai_label="normal", p_blast=0.1)
        signed = Report.create(sample=sample, status="signed", conclusion="x", signed_by="path", signed_at=utcnow())
        victim = User.get(User.username == "chief")
        return {"patient_id": patient.id, "sample_id": sample.id, "capture_id": capture.id, "cell_id": cell.id,
                "report_id": signed.id, "user_id": victim.id, "filename": "style.css"}


@pytest.fixture
def device_cookies(app):
    return {None: None, **{name: login_cookie(app, name, DEVICE_COOKIE) for name in DEVICE_ROLES}}


def device_caller(app, endpoint) -> str | None:
    """A username whose role the endpoint allows (None: anonymous views)."""
    roles = declared(app, endpoint)
    if "anonymous" in roles:
        return None
    for name, role in DEVICE_ROLES.items():
        if role in roles:
            return name
    raise AssertionError(f"no test user may call {endpoint}")


# A request per state-changing endpoint that DOES change the database when it carries a token: proof that
# the 400 without one comes from the CSRF check and not from a body the view would refuse anyway.
def device_bodies(ids):
    return {
        "auth.login": {"data": {"username": "tech", "password": "wrong-password"}},   # a failure row is written
        "auth.logout": {"data": {}},
        "auth.session_ping": None,  # restarts the session's idle clock: nothing in the database
        "auth.setup": None,  # 404 once a user exists: nothing it could change
        "patients.patient_new": {"data": {"identifier": "P-NEW", "name": "New Patient", "sex": "female"}},
        "patients.patient_edit": {"data": {"identifier": "P-1", "name": "Renamed", "sex": "male"}},
        "patients.sample_new": {"data": {"collected_at": "2024-05-01T10:00", "specimen_type": None,
                                         "stain": None}},
        "capture.capture_still": None,  # no camera in this app: 503 either way, covered in test_device_faults
        "capture.upload": {"data": {"images": (io(png(90)), "f.png")}},
        "capture.reanalyse_capture": None,  # the fixture's capture is done (and signed): 409, nothing to change
        "capture.discard": None,  # the fixture's capture belongs to a signed report: 409, nothing to change
        "review.label_cell": {"data": {"label": "blast"}},
        "review.accept_ai_labels": {"data": {}},
        "review.save_draft": {"data": {"conclusion": "draft text"}},
        "review.sign": {"data": {"conclusion": "signed text"}},
        "review.amend": {"data": {"reason": "a typo in the conclusion"}},
        "admin.users": {"data": {"username": "newbie", "full_name": "N", "roles": ["technician"],
                                 "password": TEST_PASSWORD, "confirm": TEST_PASSWORD}},
        "admin.user_roles": {"data": {f"u{ids['user_id']}-roles": ["pathologist"]}},
        "admin.user_disable": {"data": {}},
        "admin.user_enable": None,  # enabling an enabled user changes nothing
        "admin.user_password": {"data": {f"p{ids['user_id']}-password": TEST_PASSWORD + "x",
                                         f"p{ids['user_id']}-confirm": TEST_PASSWORD + "x"}},
        "admin.user_unlock": {"data": {}},  # audited even when nothing was waiting
        "admin.settings": None,     # a whole settings form; its no-token refusal is still checked below
        "api.api_capture_upload": {"data": {"files": (io(png(91)), "g.png")}},
        "api.api_capture_still": None,
        "api.api_capture_reanalyse": None,  # as capture.reanalyse_capture
        "api.api_capture_discard": None,  # as capture.discard
        "api.api_patient_create": {"json": {"identifier": "P-API", "name": "Api Patient"}},
        "api.api_patient_update": {"json": {"name": "Patched"}},
        "api.api_sample_create": {"json": {}},
        "api.api_label_cell": {"json": {"label": "other"}},
        "api.api_accept_ai_labels": {"json": {}},
        "api.api_sign": {"json": {"conclusion": "api signed"}},
    }


def io(data: bytes):
    import io

    return io.BytesIO(data)


def fill_choices(body, app, endpoint):
    """Select fields need a real choice: take the form's first one."""
    if endpoint == "patients.sample_new":
        from webui.forms.patients import SPECIMEN_TYPES, STAINS

        body["data"]["specimen_type"], body["data"]["stain"] = SPECIMEN_TYPES[0], STAINS[0]
    return body


def fresh_body(app, endpoint, ids):
    body = device_bodies(ids).get(endpoint, "missing")
    assert body != "missing", f"{endpoint}: add a request body to device_bodies()"
    return None if body is None else fill_choices(body, app, endpoint)


REVIEW_ENDPOINTS = {"review.label_cell", "review.save_draft", "review.sign", "api.api_label_cell", "api.api_sign",
                    "review.accept_ai_labels", "api.api_accept_ai_labels",
                    "capture.upload", "api.api_capture_upload"}  # uploads too: a signed sample takes no frame


def open_sample(app, patient_id) -> dict:
    """A sample with one analysed capture, one cell and a draft report: labels, drafts and sign-off all work."""
    from device.store.records import Capture, Cell, Report, Sample

    with app.app_context():
        data = app.appliance.data
        sample = Sample.create(patient=patient_id)
        frame = png(int(sample.id) % 200 + 20)
        image_path, digest = data.store_image(frame)
        capture = Capture.create(sample=sample, image_path=image_path, sha256=digest, source="upload",
                                 status="done", width=8, height=8, cell_count=1)
        cell = Cell.create(capture=capture, x=4, y=4, w=4, h=4, crop_path=data.store_crop(capture.id, 0, frame),
                           ai_label="normal", p_blast=0.1)
        Report.create(sample=sample, status="draft", conclusion="")
        return {"sample_id": sample.id, "cell_id": cell.id}


def visible_message(text: str, url: str) -> str:
    """The error line of a refusal: the JSON error, or the page's <p class="error..."> / <main> text."""
    if url.startswith("/api/"):
        try:
            return json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            return text
    match = re.search(r"<main[^>]*>(.*?)</main>", text, re.S)
    inner = re.sub(r"<[^>]+>", " ", match.group(1) if match else text)
    return " ".join(inner.split())


@pytest.fixture
def central(tmp_path, central_users_db):
    from sync.central.web.app import create_central_app

    data = tmp_path / "central"
    data.mkdir()
    shutil.copyfile(central_users_db, data / "central.db")
    app = create_central_app(data / "central.db", data, pki_dir=tmp_path / "pki")
    app.testing = True
    yield app
    app.central.database.close()


@pytest.fixture
def central_records(central):
    from sync.central.models import Device, ReceivedRecord

    with central.app_context():
        device = Device.create(device_id="scope-kano-01", clinic="Kano", cert_fingerprint="AB:" * 31 + "CD")
        record = ReceivedRecord.create(device=device, entity="patient", record_id=1, version=1,
                                       content_sha256="a" * 64, created_at=dt.datetime(2024, 5, 1), payload={"id": 1, "identifier": "P-1", "name": "X"},
                                       patient_identifier="P-1")
        from sync.central.models import ReceivedFile

        (central.central.data.root / "files").mkdir(exist_ok=True)
        (central.central.data.root / "files" / "crop.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        received = ReceivedFile.create(device=device, sha256="b" * 64, name="crops/1.png", size=8, chunks=1,
                                       received_chunks=1, complete=True, stored_path="files/crop.png")
    return {"device_id": "scope-kano-01", "record_id": record.id, "identifier": "P-1", "filename": "style.css",
            "file_id": received.id, "user_id": 999_999}  # no such account: the account actions change nobody


@pytest.fixture
def central_cookies(central):
    return {None: None, **{name: login_cookie(central, name, CENTRAL_COOKIE) for name in CENTRAL_USERS}}


def check_headers(response, path: str) -> list[str]:
    problems = []
    csp = response.headers.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    script = directives.get("script-src") or directives.get("default-src") or []
    style = directives.get("style-src") or directives.get("default-src") or []
    if not csp:
        problems.append("no Content-Security-Policy")
    if "'unsafe-inline'" in csp or "'unsafe-eval'" in csp:
        problems.append(f"CSP allows unsafe-inline/eval: {csp}")
    if not script or any(s in ("*", "data:", "http:", "https:") for s in script + style):
        problems.append(f"script/style sources too wide: {csp}")
    if directives.get("object-src") != ["'none'"]:
        problems.append("object-src is not 'none'")
    if directives.get("frame-ancestors") != ["'none'"] and response.headers.get("X-Frame-Options") != "DENY":
        problems.append("framing is not denied")
    if response.headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("no nosniff")
    if not path.startswith(("/static/", "/central-static/")) and \
            "no-store" not in response.headers.get("Cache-Control", ""):
        problems.append(f"Cache-Control {response.headers.get('Cache-Control')!r} on a page")
    return problems


def walk_gets(app, ids, cookies, cookie_name) -> tuple[int, list[str]]:
    checked, problems = 0, []
    for rule, _method in routes(app, {"GET"}):
        with app.test_request_context():
            url = app.url_for(rule.endpoint, **{k: ids[k] for k in rule.arguments})
        for who in cookies:
            response = client_as(app, cookies, who, cookie_name).get(url, buffered=True)
            problems += [f"GET {url} as {who} ({response.status_code}): {p}" for p in check_headers(response, url)]
            checked += 1
    for url in ("/no-such-page", "/static/../secret_key"):  # error answers carry the headers too
        response = app.test_client().get(url)
        problems += [f"GET {url}: {p}" for p in check_headers(response, url)]
        checked += 1
    return checked, problems
