"""Both web apps against hostile requests: garbage ids, params and bodies leak nothing; an unexpected exception
is one line; session cookies, fixation and open redirects."""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import REPO_ROOT, Auth, csrf_from
from figures import report
from web_security_kit import (  # noqa: F401  (shared fixtures and helpers)
    CENTRAL_COOKIE,
    DEVICE_COOKIE,
    central,
    central_cookies,
    central_records,
    check_headers,
    client_as,
    declared,
    device_caller,
    device_cookies,
    device_records,
    io,
    png,
    routes,
)

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
