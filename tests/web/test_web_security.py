"""Web security of both apps (device UI and central admin UI), generated from their url_maps.

tests/web/test_access.py walks the route x role table and tests/web/test_auth.py covers
lock-out, device-side fixation and ``next=``; this file adds, for EVERY route:
CSRF on every state change (refused with 400 and not one row changed in any
table, while the same request with a token does change something), the
security headers on every GET for every role, and no stack trace, secret key,
password hash, SQL or repository path in any answer to garbage input. Plus a
forced exception in a view (one line out, the traceback in the log), the
session cookie flags, fixation on the central app and its ``next=``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil

import pytest
from conftest import CENTRAL_USERS, REPO_ROOT, TEST_PASSWORD, Auth, csrf_from
from figures import report

STATE_CHANGING = {"POST", "PATCH", "PUT", "DELETE"}
DEVICE_COOKIE, CENTRAL_COOKIE = "allscope_session", "allscope_central_session"


# --- helpers ---------------------------------------------------------------------------------------------------

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


def _png(value=200, size=8) -> bytes:
    import cv2
    import numpy as np

    ok, encoded = cv2.imencode(".png", np.full((size, size, 3), value, np.uint8))
    return encoded.tobytes()


# --- device app fixtures --------------------------------------------------------------------------------------

DEVICE_ROLES = {"tech": "technician", "path": "pathologist", "admin": "admin"}


@pytest.fixture
def device_records(app):
    """One of each record (a draft report on a second sample, so that sign, draft and amend have targets)."""
    from device.store.records import Capture, Cell, Patient, Report, Sample, User, utcnow

    with app.app_context():
        data = app.appliance.data
        patient = Patient.create(identifier="P-1", name="Test Patient")
        sample = Sample.create(patient=patient)
        image_path, digest = data.store_image(_png())
        capture = Capture.create(sample=sample, image_path=image_path, sha256=digest, source="upload",
                                 status="done", width=8, height=8, cell_count=1)
        crop = data.store_crop(capture.id, 0, _png())
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
        "auth.setup": None,  # 404 once a user exists: nothing it could change
        "patients.patient_new": {"data": {"identifier": "P-NEW", "name": "New Patient", "sex": "female"}},
        "patients.patient_edit": {"data": {"identifier": "P-1", "name": "Renamed", "sex": "male"}},
        "patients.sample_new": {"data": {"collected_at": "2024-05-01T10:00", "specimen_type": None,
                                         "stain": None}},
        "capture.capture_still": None,  # no camera in this app: 503 either way, covered in test_device_faults
        "capture.upload": {"data": {"images": (_io(_png(90)), "f.png")}},
        "review.label_cell": {"data": {"label": "blast"}},
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
        "admin.settings": None,     # a whole settings form; its no-token refusal is still checked below
        "api.api_capture_upload": {"data": {"files": (_io(_png(91)), "g.png")}},
        "api.api_capture_still": None,
        "api.api_patient_create": {"json": {"identifier": "P-API", "name": "Api Patient"}},
        "api.api_patient_update": {"json": {"name": "Patched"}},
        "api.api_sample_create": {"json": {}},
        "api.api_label_cell": {"json": {"label": "other"}},
        "api.api_sign": {"json": {"conclusion": "api signed"}},
    }


def _io(data: bytes):
    import io

    return io.BytesIO(data)


def _fill_choices(body, app, endpoint):
    """Select fields need a real choice: take the form's first one."""
    if endpoint == "patients.sample_new":
        from webui.forms.patients import SPECIMEN_TYPES, STAINS

        body["data"]["specimen_type"], body["data"]["stain"] = SPECIMEN_TYPES[0], STAINS[0]
    return body


def _fresh_body(app, endpoint, ids):
    body = device_bodies(ids).get(endpoint, "missing")
    assert body != "missing", f"{endpoint}: add a request body to device_bodies()"
    return None if body is None else _fill_choices(body, app, endpoint)


REVIEW_ENDPOINTS = {"review.label_cell", "review.save_draft", "review.sign", "api.api_label_cell", "api.api_sign"}


def _open_sample(app, patient_id) -> dict:
    """A sample with one analysed capture, one cell and a draft report: labels, drafts and sign-off all work."""
    from device.store.records import Capture, Cell, Report, Sample

    with app.app_context():
        data = app.appliance.data
        sample = Sample.create(patient=patient_id)
        png = _png(int(sample.id) % 200 + 20)
        image_path, digest = data.store_image(png)
        capture = Capture.create(sample=sample, image_path=image_path, sha256=digest, source="upload",
                                 status="done", width=8, height=8, cell_count=1)
        cell = Cell.create(capture=capture, x=4, y=4, w=4, h=4, crop_path=data.store_crop(capture.id, 0, png),
                           ai_label="normal", p_blast=0.1)
        Report.create(sample=sample, status="draft", conclusion="")
        return {"sample_id": sample.id, "cell_id": cell.id}


def test_csrf_on_every_state_changing_device_route(app, device_records, device_cookies):
    database = app.appliance.database
    refused = changed = 0
    problems = []
    for rule, method in routes(app, STATE_CHANGING):
        who = device_caller(app, rule.endpoint)
        ids = dict(device_records)
        if rule.endpoint in REVIEW_ENDPOINTS:
            ids.update(_open_sample(app, device_records["patient_id"]))
        with app.test_request_context():
            url = app.url_for(rule.endpoint, **{k: ids[k] for k in rule.arguments})
        for variant in ("none", "forged"):
            body = _fresh_body(app, rule.endpoint, ids) or {"data": {}}
            headers = {"X-CSRFToken": "forged-" + "a" * 40} if variant == "forged" else {}
            if variant == "forged" and "data" in body:
                body["data"]["csrf_token"] = "IjAxMjM0NTY3ODki.forged.signature"
            before = dump(database)
            response = client_as(app, device_cookies, who, DEVICE_COOKIE).open(url, method=method, headers=headers,
                                                                                **body)
            after = dump(database)
            text = response.get_data(as_text=True)
            if response.status_code != 400 or before != after:
                changed_tables = [t for t in after if after[t] != before.get(t)]
                problems.append(f"{method} {url} as {who} ({variant} token): {response.status_code}, "
                                f"tables changed: {changed_tables}")
            elif "Traceback" in text or len(_visible_message(text, url)) > 200:
                problems.append(f"{method} {url}: the refusal is not one line")
            refused += 1
        # the control: with a valid token the same request does change the database
        body = _fresh_body(app, rule.endpoint, ids)
        if body is None:
            continue
        client = client_as(app, device_cookies, who, DEVICE_COOKIE)
        token = csrf_from(client.get("/login").get_data(as_text=True))
        if "data" in body:
            body["data"]["csrf_token"] = token
        before = dump(database)
        response = client.open(url, method=method, headers={"X-CSRFToken": token}, **body)
        if dump(database) == before:
            problems.append(f"control {method} {url} as {who} with a token changed nothing "
                            f"({response.status_code}): the refusal above proves nothing")
        changed += 1
        if rule.endpoint == "admin.user_disable":  # keep chief usable for later rules
            client.post(f"/admin/users/{ids['user_id']}/enable", data={"csrf_token": token})
        if rule.endpoint in SESSION_ENDING:  # logout, disable and a new password end every copy of a session
            device_cookies.update({name: login_cookie(app, name, DEVICE_COOKIE) for name in DEVICE_ROLES})
    assert not problems, "\n".join(problems)
    assert refused >= 2 * 25 and changed >= 18
    report("CSRF: state-changing requests refused without a valid token (device + central)", refused)
    report("CSRF: control requests with a token that changed the database", changed)


def _visible_message(text: str, url: str) -> str:
    """The error line of a refusal: the JSON error, or the page's <p class="error..."> / <main> text."""
    if url.startswith("/api/"):
        try:
            return json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            return text
    match = re.search(r"<main[^>]*>(.*?)</main>", text, re.S)
    inner = re.sub(r"<[^>]+>", " ", match.group(1) if match else text)
    return " ".join(inner.split())


# --- central app fixtures -------------------------------------------------------------------------------------



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
    return {"device_id": "scope-kano-01", "record_id": record.id, "identifier": "P-1", "filename": "style.css"}


@pytest.fixture
def central_cookies(central):
    return {None: None, **{name: login_cookie(central, name, CENTRAL_COOKIE) for name in CENTRAL_USERS}}


def test_csrf_on_every_state_changing_central_route(central, central_records, central_cookies):
    from sync.fleet.pki import init_pki

    init_pki(central.central.pki_dir)  # so that enrol and revoke really change something with a token
    database = central.central.database
    bodies = {
        "auth.login": {"username": "boss", "password": "wrong-password"},
        "auth.logout": {},
        "auth.setup": None,  # 404 once a user exists
        "devices.enrol": {"device_id": "scope-new-02", "clinic": "Jos", "broker": "mqtt.example.org:8883"},
        "devices.revoke": {},
    }
    refused = changed = 0
    problems = []
    for rule, method in routes(central, STATE_CHANGING):
        roles = declared(central, rule.endpoint)
        who = None if "anonymous" in roles else "boss"
        with central.test_request_context():
            url = central.url_for(rule.endpoint, **{k: central_records[k] for k in rule.arguments})
        assert rule.endpoint in bodies, f"{rule.endpoint}: add a request body"
        for variant in ("none", "forged"):
            data = dict(bodies[rule.endpoint] or {})
            headers = {}
            if variant == "forged":
                data["csrf_token"], headers["X-CSRFToken"] = "IjAxMjM0NTY3ODki.forged.signature", "forged"
            before = dump(database)
            response = client_as(central, central_cookies, who, CENTRAL_COOKIE).open(
                url, method=method, data=data, headers=headers)
            if response.status_code != 400 or dump(database) != before:
                problems.append(f"{method} {url} ({variant} token): {response.status_code} or the database changed")
            refused += 1
        if bodies[rule.endpoint] is None:
            continue
        client = client_as(central, central_cookies, who, CENTRAL_COOKIE)
        token = csrf_from(client.get("/login").get_data(as_text=True))
        before = dump(database)
        response = client.open(url, method=method, data={**bodies[rule.endpoint], "csrf_token": token})
        if dump(database) == before:
            problems.append(f"control {method} {url} with a token changed nothing ({response.status_code})")
        changed += 1
        if rule.endpoint in SESSION_ENDING:
            central_cookies.update({name: login_cookie(central, name, CENTRAL_COOKIE) for name in CENTRAL_USERS})
    assert not problems, "\n".join(problems)
    assert refused == 10 and changed == 4
    report("CSRF: state-changing requests refused without a valid token (device + central)", refused)
    report("CSRF: control requests with a token that changed the database", changed)


# --- security headers on every GET, every role, both apps -----------------------------------------------------

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


def _walk_gets(app, ids, cookies, cookie_name) -> tuple[int, list[str]]:
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


def test_security_headers_on_every_get_for_every_role(app, device_records, device_cookies, central,
                                                      central_records, central_cookies):
    device_checked, device_problems = _walk_gets(app, device_records, device_cookies, DEVICE_COOKIE)
    central_checked, central_problems = _walk_gets(central, central_records, central_cookies, CENTRAL_COOKIE)
    assert not device_problems + central_problems, "\n".join(device_problems + central_problems)
    assert device_checked > 100 and central_checked > 30
    report("security headers: GET responses checked (every route x role, both apps)", device_checked + central_checked)


# --- garbage in, no secrets out -------------------------------------------------------------------------------

BAD_INTS = (0, 999999, 2**31, 2**63 - 1, 2**63, 10**30)
BAD_STRINGS = ("nope", "..", "../secret_key", "%2e%2e%2fsecret_key", "a" * 3000, "%00", "'; DROP TABLE user;--",
               "<script>x</script>")
BAD_QUERIES = ("", "?page=-1", "?page=abc&page=2", "?page=99999999999999999999999", "?w=99999999999999999999",
               "?w=-5", "?q=%27%20OR%201%3D1%20--", "?q=" + "x" * 5000, "?next=//evil.example",
               "?reason=%00&device=%ff", "?user=%27&action=%22&entity=1&since=notadate&until=2024-13-45")
BAD_BODIES = (
    {"data": b"[1, 2, 3]", "content_type": "application/json"},
    {"data": b'"a string"', "content_type": "application/json"},
    {"data": b"{not json", "content_type": "application/json"},
    {"data": b"null", "content_type": "application/json"},
    {"json": {"label": 5, "conclusion": ["x"], "identifier": {"a": 1}, "name": None, "date_of_birth": "1999-99-99",
              "sex": "dragon", "collected_at": 12, "reason": {"x": 1}}},
    {"json": {"identifier": "x" * 100000, "name": "y" * 100000}},
    {"data": b"\x00\xff" * 100, "content_type": "text/plain"},
    {"data": b"--xx\r\nbroken multipart", "content_type": "multipart/form-data; boundary=xx"},
    {"data": {"files": (b"not an image", "../../etc/passwd.png"), "images": (b"GIF89a", "..\\x.gif"),
              "username": ["a", "b"], "roles": ["root", "admin"], "label": "blast\x00",
              "date_of_birth": "0000-00-00", "collected_at": "9999-99-99T99:99"}},
)
SQL = re.compile(r"\bSELECT\b.+\bFROM\b|\bINSERT INTO\b|sqlite3\.|peewee|OperationalError|IntegrityError|"
                 r"OverflowError|no such (table|column)", re.S)


def leaks(response, secrets: list[str], paths: list[str]) -> list[str]:
    text = response.get_data(as_text=True) if not response.is_streamed else ""
    found = [s for s in ("Traceback", 'File "', "$argon2") if s in text]
    found += [f"secret {s[:6]}…" for s in secrets if s and s in text]
    if SQL.search(text):
        found.append(f"SQL: {SQL.search(text).group(0)[:60]!r}")
    if response.status_code >= 400:
        found += [f"path {p}" for p in paths if p in text]
    if response.status_code >= 500 and response.status_code != 503:
        found.append(f"status {response.status_code}")
    if response.status_code >= 400 and response.mimetype == "application/json":
        body = response.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("error"), str) or "\n" in body["error"]:
            found.append("error JSON is not one line")
    return found


def _garbage_requests(app, ids):
    """(method, url, request kwargs) for every route: bad ids, bad query strings, bad bodies."""
    from werkzeug.routing import IntegerConverter

    for rule, method in routes(app):
        with app.test_request_context():
            good = app.url_for(rule.endpoint, **{k: ids[k] for k in rule.arguments})
            bad_urls = []
            for name in rule.arguments:
                numeric = isinstance(rule._converters[name], IntegerConverter)
                for bad in (BAD_INTS if numeric else BAD_STRINGS):
                    values = {k: ids[k] for k in rule.arguments}
                    if numeric:
                        values[name] = bad
                        bad_urls.append(app.url_for(rule.endpoint, **values))
                    else:  # raw, so that traversal and encodings reach the router as they are
                        marker = "ZZMARKERZZ"
                        values[name] = marker
                        bad_urls.append(app.url_for(rule.endpoint, **values).replace(marker, bad))
        for url in bad_urls:
            yield rule.endpoint, method, url, {}
        for query in BAD_QUERIES:
            yield rule.endpoint, method, good + query, {}
        if method != "GET":
            for body in BAD_BODIES:
                yield rule.endpoint, method, good, body


def _walk_garbage(app, ids, caller, cookies, cookie_name, secrets, paths) -> tuple[int, list[str]]:
    import copy
    import io

    sent, problems = 0, []
    tokens = {}
    for endpoint, method, url, body in _garbage_requests(app, ids):
        who = caller(endpoint)
        client = client_as(app, cookies, who, cookie_name)
        if who not in tokens:
            tokens[who] = csrf_from(client.get("/login").get_data(as_text=True))
        kwargs = copy.deepcopy(body)
        if isinstance(kwargs.get("data"), dict):  # files as fresh streams for each request
            kwargs["data"] = {k: (io.BytesIO(v[0]), v[1]) if isinstance(v, tuple) else v
                              for k, v in kwargs["data"].items()}
            kwargs["data"]["csrf_token"] = tokens[who]
        response = client.open(url, method=method, headers={"X-CSRFToken": tokens[who]}, **kwargs)
        found = leaks(response, secrets, paths)
        if found:
            problems.append(f"{method} {url[:120]} as {who} -> {response.status_code}: {', '.join(found)}")
        response.close()
        sent += 1
    return sent, problems


def test_garbage_ids_params_and_bodies_leak_nothing_device(app, device_records, device_cookies):
    secrets = [app.config["SECRET_KEY"].decode() if isinstance(app.config["SECRET_KEY"], bytes)
               else app.config["SECRET_KEY"]]
    paths = [str(REPO_ROOT), str(app.appliance.data.root)]
    sent, problems = _walk_garbage(app, device_records, lambda e: device_caller(app, e), device_cookies,
                                   DEVICE_COOKIE, secrets, paths)
    assert not problems, f"{len(problems)} of {sent}:\n" + "\n".join(problems[:60])
    report("garbage requests (ids, params, bodies) without a leak or a 500", sent)


def test_garbage_ids_params_and_bodies_leak_nothing_central(central, central_records, central_cookies):
    from sync.fleet.pki import init_pki

    init_pki(central.central.pki_dir)
    secrets = [central.config["SECRET_KEY"].decode()]
    paths = [str(REPO_ROOT), str(central.central.data.root), str(central.central.pki_dir)]

    def caller(endpoint):
        return None if "anonymous" in declared(central, endpoint) else "boss"

    sent, problems = _walk_garbage(central, central_records, caller, central_cookies, CENTRAL_COOKIE, secrets, paths)
    assert not problems, f"{len(problems)} of {sent}:\n" + "\n".join(problems[:60])
    report("garbage requests (ids, params, bodies) without a leak or a 500", sent)


# --- an unexpected exception in a view ------------------------------------------------------------------------

MARKER = "kaboom-internal-detail /work/secret/path SELECT * FROM user"


def _explode(*_args, **_kwargs):
    raise RuntimeError(MARKER)


def _one_line_500(response, api: bool) -> str:
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert MARKER not in text and "Traceback" not in text and "RuntimeError" not in text
    if api:
        message = response.get_json()["error"]
    else:
        message = re.search(r'<p class="error-message">(.*?)</p>', text, re.S).group(1)
    assert "\n" not in message.strip() and 20 < len(message) < 200 and "logged" in message
    assert check_headers(response, "/page") == []
    return message


def _logged_traceback(caplog, path: str) -> bool:
    return any(path in r.getMessage() and r.exc_text and "Traceback" in r.exc_text and MARKER in r.exc_text
               for r in caplog.records)


def test_unexpected_exception_in_a_device_view_is_one_line_and_logged(app, device_cookies, monkeypatch, caplog):
    from device.services import patients as patients_store

    monkeypatch.setattr(patients_store, "search_patients", _explode)
    client = client_as(app, device_cookies, "tech", DEVICE_COOKIE)
    with caplog.at_level("ERROR"):
        page = _one_line_500(client.get("/"), api=False)
        api = _one_line_500(client.get("/api/patients"), api=True)
    assert page == api
    assert _logged_traceback(caplog, "GET /") and _logged_traceback(caplog, "GET /api/patients")
    assert client.get("/patients/new").status_code == 200  # the app goes on


def test_unexpected_exception_in_a_central_view_is_one_line_and_logged(central, central_cookies, monkeypatch,
                                                                        caplog):
    from sync.central.web import devices as central_web_devices

    monkeypatch.setattr(central_web_devices, "_record_counts", _explode)
    client = client_as(central, central_cookies, "boss", CENTRAL_COOKIE)
    with caplog.at_level("ERROR"):
        _one_line_500(client.get("/devices"), api=False)
    assert _logged_traceback(caplog, "GET /devices")
    assert client.get("/records").status_code == 200


# --- session cookies, fixation, open redirects ----------------------------------------------------------------

def _cookie_attributes(response, name) -> dict[str, str]:
    header = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "="))
    parts = [p.strip() for p in header.split(";")[1:]]
    return {p.split("=")[0].lower(): (p.split("=", 1)[1] if "=" in p else True) for p in parts}


@pytest.mark.parametrize("tls", [False, True])
def test_session_cookie_flags_on_both_apps(tmp_path, users_database, central_users_db, tls):
    from device.config.schema import AllscopeConfig, DeviceSection
    from sync.central.web.app import create_central_app
    from webui.app import create_app

    shutil.copytree(users_database.parent, tmp_path / "device")
    device = create_app(AllscopeConfig(device=DeviceSection(tls=tls)), data_dir=tmp_path / "device",
                        start_workers=False)
    (tmp_path / "central").mkdir()
    shutil.copyfile(central_users_db, tmp_path / "central" / "central.db")
    central = create_central_app(tmp_path / "central" / "central.db", tmp_path / "central", tls=tls)
    for app, user, name in ((device, "tech", DEVICE_COOKIE), (central, "boss", CENTRAL_COOKIE)):
        client = app.test_client()
        response = Auth(client).login(user)
        assert response.status_code == 302
        flags = _cookie_attributes(response, name)
        assert flags.get("httponly") and flags.get("samesite") == "Strict", flags
        assert bool(flags.get("secure")) == tls, flags
        assert "domain" not in flags and flags.get("path") == "/"
        assert not any(h.startswith("remember_token") for h in response.headers.getlist("Set-Cookie"))
    central.central.database.close()


def test_central_session_fixation_nothing_planted_survives_login(central):
    client = central.test_client()
    with client.session_transaction() as session:
        session["planted"] = "by-attacker"
        session["_user_id"] = "999"  # not a signed-in user: a forged claim the login must not keep
    planted_cookie = client.get_cookie(CENTRAL_COOKIE).value
    assert Auth(client).login("boss").status_code == 302
    with client.session_transaction() as session:
        assert "planted" not in session and session["_user_id"] != "999"
    assert client.get_cookie(CENTRAL_COOKIE).value != planted_cookie
    # the attacker's copy of the pre-login cookie is still not a logged-in session
    attacker = central.test_client()
    attacker.set_cookie(CENTRAL_COOKIE, planted_cookie)
    response = attacker.get("/devices")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_device_pre_login_cookie_is_not_logged_in_after_the_victim_logs_in(client, auth, app):
    client.get("/login")
    before = client.get_cookie(DEVICE_COOKIE).value if client.get_cookie(DEVICE_COOKIE) else None
    assert auth.login("tech").status_code == 302
    attacker = app.test_client()
    if before:
        attacker.set_cookie(DEVICE_COOKIE, before)
    response = attacker.get("/")
    assert response.status_code == 302 and response.location.startswith("/login")


OFF_SITE = ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "\\\\evil.example", "javascript:alert(1)",
            "http:/evil.example", "/%2F%2Fevil.example", " //evil.example", "\t//evil.example", "https:evil.example",
            "//evil.example@central", "data:text/html,<script>alert(1)</script>"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_central_login_next_never_redirects_off_site(central, target):
    from urllib.parse import urljoin, urlsplit

    client = central.test_client()
    page = client.get("/login", query_string={"next": target})
    assert page.status_code == 200
    response = Auth(client).login("boss", next_url=target)
    assert response.status_code == 302
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert not parts.scheme and not parts.netloc and location.startswith("/") and not location.startswith("//")
    assert "\\" not in location  # browsers read a backslash as a slash
    assert urlsplit(urljoin("https://central.example/login", location)).netloc == "central.example"
    report("open-redirect targets refused on the central login", 1)


def test_central_login_next_keeps_a_local_path(central):
    response = Auth(central.test_client()).login("boss", next_url="/records?q=abc")
    assert response.headers["Location"] == "/records?q=abc"


def test_a_copied_session_cookie_is_dead_after_logout(app, client, auth):
    auth.login("tech")
    stolen = client.get_cookie(DEVICE_COOKIE).value
    auth.logout()
    replay = app.test_client()
    replay.set_cookie(DEVICE_COOKIE, stolen)
    assert replay.get("/").status_code == 302
