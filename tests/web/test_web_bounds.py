"""Issue 13, item 12: JSON bodies bounded in size and depth (400, one line, not a RecursionError 500), ``next=``
with CR/LF after a successful log-in (a redirect home, not a 500), and names isolated from the page's direction
(``<bdi>``) wherever a heading or list shows them."""

from __future__ import annotations

import re

import pytest
from central_web_kit import admin, central, device_row, patient_row  # noqa: F401  (fixtures)
from conftest import Auth, csrf_from
from figures import report

from device.store.records import Patient, Sample
from webui.kit.jsonbounds import JSONRejected, check_json, json_depth

DEEP = "[" * 5000 + "]" * 5000
JSON_ENDPOINTS = ["/api/patients"]


def _api_headers(client) -> dict:
    return {"X-CSRFToken": csrf_from(client.get("/").get_data(as_text=True)), "Content-Type": "application/json"}


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth('{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth('"\\"[[["') == 0
    with pytest.raises(JSONRejected, match=r"^JSON nested too deep: 5000 levels \(limit 32\)$"):
        check_json(DEEP)
    with pytest.raises(JSONRejected, match=r"^JSON body too large: 300,002 bytes \(limit 262,144\)$"):
        check_json('"' + "x" * 300_000 + '"')


@pytest.mark.parametrize("body, line", [
    (DEEP, "JSON nested too deep: 5000 levels (limit 32)"),
    ('{"name": "' + "x" * 300_000 + '"}', "JSON body too large: 300,012 bytes (limit 262,144)"),
])
def test_device_json_endpoints_refuse_deep_or_large_bodies_with_400_and_one_line(app, client, auth, body, line):
    auth.login("tech")
    headers = _api_headers(client)
    with app.app_context():
        patient = Patient.create(identifier="H-9", name="Ada")
        sample = Sample.create(patient=patient, created_by="tech")
    paths = [("post", "/api/patients"), ("patch", f"/api/patients/{patient.id}"),
             ("post", f"/api/patients/{patient.id}/samples")]
    tried = 0
    for method, path in paths:
        response = getattr(client, method)(path, data=body, headers=headers)
        assert response.status_code == 400, (path, response.status_code)
        assert response.get_json() == {"error": line}
        tried += 1
    auth.logout()
    auth.login("path")
    headers = _api_headers(client)
    for path in [p.rule for p in app.url_map.iter_rules() if p.rule.startswith("/api/") and "POST" in p.methods
                 and "review" in p.rule.lower()]:
        concrete = re.sub(r"<int:\w+>", str(sample.id), path)
        response = client.post(concrete, data=body, headers=headers)
        assert response.status_code in (400, 404), (concrete, response.status_code)
        if response.status_code == 400:
            assert response.get_json() == {"error": line}
            tried += 1
    report("JSON bodies refused before parsing (depth 5000, 300 KB)", tried)


def test_the_device_json_limits_are_settings(tmp_path, users_database):
    import shutil

    from device.config.schema import parse_config
    from webui.app import create_app

    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copyfile(users_database, data_dir / "allscope.db")
    config = parse_config("[ui]\nmax_json_depth = 3\nmax_json_kb = 1\n")
    app = create_app(config, data_dir=data_dir, start_workers=False)
    app.testing = True
    client = app.test_client()
    Auth(client).login("tech")
    response = client.post("/api/patients", data='{"a": [[[1]]]}', headers=_api_headers(client))
    assert response.status_code == 400 and response.get_json() == {"error": "JSON nested too deep: 4 levels (limit 3)"}
    app.appliance.stop()


def test_central_parses_json_under_the_same_bounds(central):  # noqa: F811
    with central.test_request_context("/", method="POST", data=DEEP, content_type="application/json"):
        from flask import request

        with pytest.raises(JSONRejected, match="JSON nested too deep: 5000 levels"):
            request.get_json(silent=True)


CRLF_TARGETS = ["/patients\r\nSet-Cookie: x=1", "/\nLocation: https://evil.example", "/a\x00b", "/%0d%0a\r"]


@pytest.mark.parametrize("target", CRLF_TARGETS)
def test_device_login_next_with_control_characters_goes_home_not_500(client, target):
    response = Auth(client).login("tech", next_url=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    report("next= targets with control characters refused (both apps)", 1)


@pytest.mark.parametrize("target", CRLF_TARGETS)
def test_central_login_next_with_control_characters_goes_home_not_500(central, target):  # noqa: F811
    response = Auth(central.test_client()).login("boss", next_url=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/devices"
    report("next= targets with control characters refused (both apps)", 1)


RTL_NAME = "\u202eAda Lovelace"  # RIGHT-TO-LEFT OVERRIDE: would reverse the rest of the heading


def _isolated(html: str) -> bool:
    """Every occurrence of the name sits inside <bdi>…</bdi>."""
    occurrences = [m.start() for m in re.finditer(re.escape(RTL_NAME), html)]
    return bool(occurrences) and all(html.rfind("<bdi>", 0, at) > html.rfind("</bdi>", 0, at) for at in occurrences)


def test_names_are_isolated_in_every_device_heading_and_list(app, client, auth):
    with app.app_context():
        patient = Patient.create(identifier="H-77", name=RTL_NAME)
        sample = Sample.create(patient=patient, created_by="tech")
    auth.login("chief")
    pages = ["/", f"/patients/{patient.id}", f"/patients/{patient.id}/samples/new", f"/samples/{sample.id}/capture",
             "/capture"]
    checked = 0
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        body = html[html.index("<body"):]  # <title> holds text only; the browser shows it isolated
        assert _isolated(body), path
        checked += 1
    report("pages checked for isolated right-to-left names", checked)


def test_names_are_isolated_on_the_central_patient_page(central, admin):  # noqa: F811
    with central.app_context():
        device = device_row()
        patient_row(device, 1, "H-77", RTL_NAME)
    html = admin.get("/patients/H-77").get_data(as_text=True)
    assert _isolated(html[html.index("<body"):])
