"""Every registered route, as anonymous and as each role, against ONE table of who may do what.

A route missing from the table fails the test: a new page must be added here
deliberately. "Allowed" means the role check let the request through (the
view may still answer 400/404/409 for the empty request we send); "denied"
means 403 for a logged-in role and a redirect to /login (401 for the API)
for anonymous.
"""

from __future__ import annotations

import pytest

from device.store.datadir import DataDir
from device.store.records import Capture, Cell, Patient, Report, Sample, User

A = "anonymous"
T = "tech"    # technician
P = "path"    # pathologist
D = "admin"   # admin only
ALL = {A, T, P, D}
USERS = {T, P, D}
CLINICAL = {T, P}

# endpoint -> who may call it
TABLE: dict[str, set[str]] = {
    "static": ALL,
    "auth.login": ALL,
    "auth.setup": ALL,          # answers 404 once a user exists, for everyone
    "auth.logout": USERS,
    "auth.session_ping": USERS,
    "monitoring.healthz": ALL,  # no authentication: a load balancer or systemd probe
    "monitoring.metrics": ALL,  # by network (loopback by default), not by role: tests/web/test_monitoring.py
    # patients and samples
    "patients.patient_list": CLINICAL,
    "patients.patient_new": CLINICAL,
    "patients.patient_page": CLINICAL,
    "patients.patient_edit": CLINICAL,
    "patients.sample_new": CLINICAL,
    "patients.sample_page": CLINICAL,
    "api.api_patient_list": CLINICAL,
    "api.api_patient_create": CLINICAL,
    "api.api_patient": CLINICAL,
    "api.api_patient_update": CLINICAL,
    "api.api_sample_create": CLINICAL,
    "api.api_sample": CLINICAL,
    # capture, upload, analysis
    "capture.capture_page": CLINICAL,
    "capture.sample_capture": CLINICAL,
    "capture.capture_still": CLINICAL,
    "capture.upload": CLINICAL,
    "capture.reanalyse_capture": CLINICAL,
    "capture.discard": CLINICAL,
    "results.sample_results": CLINICAL,
    "capture.live_mjpeg": CLINICAL,
    "capture.live_jpeg": CLINICAL,
    "capture.capture_image": CLINICAL,
    "capture.cell_crop": CLINICAL,
    "api.api_capture_upload": CLINICAL,
    "api.api_capture_still": CLINICAL,
    "api.api_capture_reanalyse": CLINICAL,
    "api.api_capture_discard": CLINICAL,
    "api.api_sample_captures": CLINICAL,
    "api.api_capture": CLINICAL,
    "api.api_capture_poll": CLINICAL,
    "api.api_camera_poll": CLINICAL,
    # review and sign-off: pathologists only
    "review.queue": {P},
    "review.sample_review": {P},
    "review.label_cell": {P},
    "review.accept_ai_labels": {P},
    "review.save_draft": {P},
    "review.sign": {P},
    "review.amend": {P},
    "api.api_label_cell": {P},
    "api.api_accept_ai_labels": {P},
    "api.api_sample_review": {P},
    "api.api_sign": {P},
    # reports: every clinical role reads them
    "reports.sample_report": CLINICAL,
    "reports.report_version": CLINICAL,
    "reports.report_pdf": CLINICAL,
    "reports.report_viewer": CLINICAL,
    "reports.report_fhir": CLINICAL,
    "api.api_report": CLINICAL,
    # administration: admins only
    "admin.status": {D},
    "admin.users": {D},
    "admin.user_roles": {D},
    "admin.user_disable": {D},
    "admin.user_enable": {D},
    "admin.user_password": {D},
    "admin.user_unlock": {D},
    "admin.settings": {D},
    "admin.audit": {D},
}


@pytest.fixture
def records(app):
    """One of each record, so that every URL with an id points at something real."""
    with app.app_context():
        data: DataDir = app.appliance.data
        patient = Patient.create(identifier="P-1", name="Test Patient")
        sample = Sample.create(patient=patient)
        image_path, digest = data.store_image(_tiny_png())
        capture = Capture.create(sample=sample, image_path=image_path, sha256=digest, source="upload",
                                 status="done", width=8, height=8)
        crop = data.store_crop(capture.id, 0, _tiny_png())
        cell = Cell.create(capture=capture, x=4, y=4, w=4, h=4, crop_path=crop, ai_label="normal", p_blast=0.1)
        report = Report.create(sample=sample, status="signed", conclusion="x", signed_by="path")
        victim = User.get(User.username == "chief")  # a user that admin actions may touch harmlessly
        return {"patient_id": patient.id, "sample_id": sample.id, "capture_id": capture.id, "cell_id": cell.id,
                "report_id": report.id, "user_id": victim.id, "filename": "style.css"}


def _tiny_png() -> bytes:
    import cv2
    import numpy as np

    ok, encoded = cv2.imencode(".png", np.full((8, 8, 3), 200, np.uint8))
    return encoded.tobytes()


def _session_cookies(app, auth_factory) -> dict[str, str | None]:
    """Log each role in once through the real form; keep its session cookie."""
    cookies = {A: None}
    for role in USERS:
        client = app.test_client()
        auth_factory(client).login(role)
        cookies[role] = client.get_cookie("allscope_session").value
    return cookies


def _routes(app):
    for rule in app.url_map.iter_rules():
        methods = sorted(m for m in rule.methods if m not in ("HEAD", "OPTIONS"))
        for method in methods:
            yield rule, method


def test_every_route_is_in_the_table(app):
    registered = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert registered - set(TABLE) == set(), "routes missing from the access table"
    assert set(TABLE) - registered == set(), "table lists routes that no longer exist"


def test_every_route_declares_its_roles(app):
    from webui.kit.access import declared_roles

    with app.test_request_context():
        undeclared = [e for e in app.view_functions if declared_roles(e) is None]
    assert undeclared == []


def test_route_role_table(app, records):
    from conftest import Auth, csrf_from

    cookies = _session_cookies(app, Auth)
    checked = 0
    problems = []
    for rule, method in _routes(app):
        allowed = TABLE[rule.endpoint]
        with app.test_request_context():
            url = app.url_for(rule.endpoint, **{k: records[k] for k in rule.arguments})
        for who in (A, T, P, D):
            client = app.test_client()  # a fresh copy of the session for every request: side effects stay local
            # (except logging out, which ends every copy of a session server-side: everyone logs in again)
            if cookies[who]:
                client.set_cookie("allscope_session", cookies[who])
            headers = {}
            if method != "GET":  # a valid CSRF token, so that the role check is what answers
                headers["X-CSRFToken"] = csrf_from(client.get("/login").get_data(as_text=True))
            response = client.open(url, method=method, headers=headers)
            status = response.status_code
            location = response.headers.get("Location", "")
            if who == A:
                denied = (status == 302 and location.startswith("/login")) or \
                    (status == 401 and url.startswith("/api/"))
            else:
                denied = status == 403
            if (who in allowed) == denied:
                problems.append(f"{method} {url} as {who}: {status} {location} (table says "
                                f"{'allowed' if who in allowed else 'denied'})")
            checked += 1
            if rule.endpoint == "auth.logout" and who != A:
                cookies = _session_cookies(app, Auth)  # log every role in again
    assert not problems, "\n".join(problems)
    print(f"route x role table: {checked} requests checked")
