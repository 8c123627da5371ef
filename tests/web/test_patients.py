"""Patients and samples: pages and JSON API with the real app, real SQLite and the real audit trail."""

from __future__ import annotations

import datetime as dt

from conftest import csrf_from

from device.store.records import AuditEvent, Capture, Patient, Report, Sample, db_proxy

VALID = {"identifier": "MRN-0001", "name": "Ada Example", "date_of_birth": "1980-05-17", "sex": "female",
         "referring_clinician": "Dr Who", "symptoms": "fatigue, bruising", "wbc": "54.2", "hemoglobin": "8.1",
         "platelets": "31", "notes": ""}


def register(client, **overrides):
    token = csrf_from(client.get("/patients/new").get_data(as_text=True))
    return client.post("/patients/new", data=dict(VALID, csrf_token=token, **overrides))


def api_headers(client) -> dict:
    return {"X-CSRFToken": csrf_from(client.get("/").get_data(as_text=True))}


def events(app, action: str, entity: str):
    with app.app_context():
        return list(AuditEvent.select().where(AuditEvent.action == action, AuditEvent.entity == entity)
                    .order_by(AuditEvent.id))


def the_patient(app, identifier: str = "MRN-0001") -> Patient:
    with app.app_context():
        return Patient.get(Patient.identifier == identifier)


# --- access ----------------------------------------------------------------------------------------------

def test_anonymous_is_sent_to_login(client):
    for path in ("/", "/patients/new", "/patients/1", "/samples/1"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path
    assert client.get("/api/patients").status_code == 401


def test_admin_only_user_is_refused_clinical_pages_and_api(client, auth):
    auth.login("admin")
    assert client.get("/").status_code == 403
    assert client.get("/patients/new").status_code == 403
    response = client.get("/api/patients")
    assert response.status_code == 403 and response.get_json()["error"]


def test_admin_who_is_also_pathologist_may_register(app, client, auth):
    auth.login("chief")
    assert register(client).status_code == 302


# --- register, edit, audit -------------------------------------------------------------------------------

def test_technician_registers_a_patient_and_it_is_audited(app, client, auth):
    auth.login("tech")
    response = register(client)
    patient = the_patient(app)
    assert response.status_code == 302 and response.headers["Location"] == f"/patients/{patient.id}"
    assert patient.date_of_birth == dt.date(1980, 5, 17) and patient.wbc == 54.2 and patient.version == 1
    [created] = events(app, "create", "patient")
    assert created.username == "tech" and created.entity_id == str(patient.id)
    assert created.after["identifier"] == "MRN-0001" and created.after["platelets"] == 31.0


INVALID = [  # (field, value, message shown next to it)
    ("date_of_birth", (dt.date.today() + dt.timedelta(days=1)).isoformat(), "cannot be in the future"),
    ("date_of_birth", "1899-12-31", "cannot be before 1900"),
    ("date_of_birth", "17/05/1980", "Not a valid date"),
    ("wbc", "1000.5", "Enter a value from 0 to 1000 ×10⁹/L"),
    ("hemoglobin", "-1", "from 0 to 30 g/dL"),
    ("platelets", "nan", "Enter a number"),
    ("identifier", "MRN 0001", "Use only letters, digits"),
    ("identifier", "X" * 65, "At most 64 characters"),
    ("identifier", "  ", "Enter the patient identifier"),
    ("name", "", "Enter the patient&#39;s name"),
    ("sex", "robot", "Not a valid choice"),
]


def test_invalid_fields_are_refused_with_a_message_next_to_the_field(app, client, auth):
    auth.login("tech")  # one log-in for all cases: password hashing is the slow part
    for field, value, message in INVALID:
        response = register(client, **{field: value})
        html = response.get_data(as_text=True)
        assert response.status_code == 400, (field, value)
        assert message in html, (field, value)
        assert f'id="{field}-error"' in html, (field, value)  # the message sits with its field
    with app.app_context():
        assert Patient.select().count() == 0
    assert events(app, "create", "patient") == []


def test_duplicate_identifier_gets_a_friendly_message(app, client, auth):
    auth.login("tech")
    register(client)
    response = register(client, name="Someone Else")
    assert response.status_code == 400
    assert "already registered to another patient" in response.get_data(as_text=True)
    with app.app_context():
        assert Patient.select().count() == 1


def test_comma_decimal_and_empty_optional_fields_are_accepted(app, client, auth):
    auth.login("tech")
    assert register(client, wbc="7,5", hemoglobin="", platelets="", date_of_birth="").status_code == 302
    patient = the_patient(app)
    assert patient.wbc == 7.5 and patient.hemoglobin is None and patient.date_of_birth is None


def test_edit_audits_only_changed_fields_and_bumps_the_version(app, client, auth):
    auth.login("path")
    register(client)
    patient = the_patient(app)
    page = client.get(f"/patients/{patient.id}/edit").get_data(as_text=True)
    assert 'value="MRN-0001"' in page and 'value="54.2"' in page
    form = dict(VALID, csrf_token=csrf_from(page), wbc="60", notes="repeat count")
    response = client.post(f"/patients/{patient.id}/edit", data=form)
    assert response.status_code == 302
    edited = the_patient(app)
    assert edited.version == 2 and edited.wbc == 60.0 and edited.updated_at > patient.updated_at
    [update] = events(app, "update", "patient")
    assert update.before == {"wbc": 54.2, "notes": ""}
    assert update.after == {"wbc": 60.0, "notes": "repeat count"}
    assert update.username == "path" and update.entity_id == str(patient.id)
    # saving again with nothing changed neither bumps nor audits
    client.post(f"/patients/{patient.id}/edit", data=form)
    assert the_patient(app).version == 2 and len(events(app, "update", "patient")) == 1


def test_edit_keeps_own_identifier_but_refuses_another_patients(app, client, auth):
    auth.login("tech")
    register(client)
    register(client, identifier="MRN-0002", name="Bob Example")
    second = the_patient(app, "MRN-0002")
    token = csrf_from(client.get(f"/patients/{second.id}/edit").get_data(as_text=True))
    response = client.post(f"/patients/{second.id}/edit", data=dict(VALID, csrf_token=token, name="Bob"))
    assert response.status_code == 400 and "already registered" in response.get_data(as_text=True)
    assert the_patient(app, "MRN-0002").version == 1


def test_missing_patient_is_404(client, auth):
    auth.login("tech")
    assert client.get("/patients/999").status_code == 404
    assert client.get("/patients/999/edit").status_code == 404
    assert client.get("/samples/999").status_code == 404


# --- list and search -------------------------------------------------------------------------------------

def test_list_searches_identifier_and_name_newest_first_and_paginates(app, client, auth):
    auth.login("tech")
    with app.app_context():
        with db_proxy.atomic():
            base = dt.datetime(2026, 1, 1)
            for i in range(30):
                Patient.create(identifier=f"P{i:03d}", name=f"Name {i}", created_at=base + dt.timedelta(hours=i))
            Patient.create(identifier="ZZ_9", name="Grace Hopper", created_at=base)
    first = client.get("/").get_data(as_text=True)
    assert first.index("P029") < first.index("P028")  # newest first
    assert "P004" not in first and "Page 1 of 2" in first
    second = client.get("/?page=2").get_data(as_text=True)
    assert "P004" in second and "P029" not in second
    found = client.get("/?q=hopper").get_data(as_text=True)
    assert "ZZ_9" in found and "P001" not in found
    by_id = client.get("/?q=P01").get_data(as_text=True)
    assert "P015" in by_id and "P025" not in by_id
    # LIKE wildcards are taken literally
    assert "ZZ_9" in client.get("/?q=_").get_data(as_text=True)
    assert "P001" not in client.get("/?q=_").get_data(as_text=True)
    assert "No patient matches" in client.get("/?q=nobody").get_data(as_text=True)


def test_list_shows_sample_count_age_and_latest_report_status(app, client, auth):
    auth.login("tech")
    register(client)
    with app.app_context():
        patient = Patient.get()
        with db_proxy.atomic():
            first = Sample.create(patient=patient)
            second = Sample.create(patient=patient)
            Report.create(sample=first, status="amended", created_at=dt.datetime(2026, 1, 1))
            Report.create(sample=second, status="signed", created_at=dt.datetime(2026, 2, 1))
    html = client.get("/").get_data(as_text=True)
    age = dt.date.today().year - 1980 - ((dt.date.today().month, dt.date.today().day) < (5, 17))
    assert "2 samples" in html and f"({age} y)" in html
    assert 'class="badge signed"' in html and "amended" not in html


# --- patient page, samples -------------------------------------------------------------------------------

def test_patient_page_shows_samples_with_report_versions_and_is_audited(app, client, auth):
    auth.login("tech")
    register(client)
    with app.app_context():
        patient = Patient.get()
        with db_proxy.atomic():
            sample = Sample.create(patient=patient, collected_at=dt.datetime(2026, 3, 1, 9, 30))
            Capture.create(sample=sample, image_path="x.png", sha256="0" * 64, source="upload")
            old = Report.create(sample=sample, version=1, status="amended")
            Report.create(sample=sample, version=2, status="signed", supersedes=old, signed_by="path",
                          signed_at=dt.datetime(2026, 3, 2))
    html = client.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "Ada Example" in html and "fatigue, bruising" in html and "1 capture" in html
    assert html.index("Report v2") < html.index("Report v1")
    assert 'class="badge signed"' in html and 'class="badge amended"' in html
    assert f'href="/samples/{sample.id}"' in html
    assert f'href="/patients/{patient.id}/samples/new"' in html
    [view] = events(app, "view", "patient")
    assert view.entity_id == str(patient.id) and view.username == "tech"
    if "reports.sample_report" in app.view_functions:
        assert f'href="/samples/{sample.id}/report"' in html


def test_new_sample_is_created_audited_and_opens_capture(app, client, auth):
    auth.login("tech")
    register(client)
    patient = the_patient(app)
    page = client.get(f"/patients/{patient.id}/samples/new").get_data(as_text=True)
    assert 'type="datetime-local"' in page and "Wright-Giemsa" in page and "bone marrow aspirate" in page
    response = client.post(f"/patients/{patient.id}/samples/new", data={
        "csrf_token": csrf_from(page), "collected_at": "2026-01-02T08:15", "specimen_type": "bone marrow aspirate",
        "stain": "Wright-Giemsa", "notes": "left iliac crest"})
    assert response.status_code == 302
    with app.app_context():
        sample = Sample.get()
        assert sample.patient_id == patient.id and sample.stain == "Wright-Giemsa" and sample.created_by == "tech"
        local = sample.collected_at.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)
        assert local == dt.datetime(2026, 1, 2, 8, 15)  # stored in UTC, typed in device time
    expected = (f"/samples/{sample.id}/capture" if "capture.sample_capture" in app.view_functions
                else f"/patients/{patient.id}")  # the capture area may not be built yet
    assert response.headers["Location"] == expected
    [created] = events(app, "create", "sample")
    assert created.after["specimen_type"] == "bone marrow aspirate" and created.after["patient"] == patient.id


def test_sample_in_the_future_or_with_unknown_stain_is_refused(app, client, auth):
    auth.login("tech")
    register(client)
    patient = the_patient(app)
    token = csrf_from(client.get(f"/patients/{patient.id}/samples/new").get_data(as_text=True))
    later = (dt.datetime.now() + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(f"/patients/{patient.id}/samples/new", data={
        "csrf_token": token, "collected_at": later, "specimen_type": "peripheral blood", "stain": "Giemsa"})
    assert response.status_code == 400 and "cannot be in the future" in response.get_data(as_text=True)
    response = client.post(f"/patients/{patient.id}/samples/new", data={
        "csrf_token": token, "collected_at": "2026-01-01T08:00", "specimen_type": "urine", "stain": "Gram"})
    assert response.status_code == 400 and "Not a valid choice" in response.get_data(as_text=True)
    with app.app_context():
        assert Sample.select().count() == 0


def test_sample_page_lists_captures_with_counts_and_flags(app, client, auth):
    auth.login("path")
    register(client)
    with app.app_context():
        with db_proxy.atomic():
            sample = Sample.create(patient=Patient.get(), stain="Leishman")
            Capture.create(sample=sample, image_path="a.png", sha256="1" * 64, source="camera", status="done",
                           flag="blasts_seen", cell_count=12, blast_count=5, review_count=2)
            Capture.create(sample=sample, image_path="b.png", sha256="2" * 64, source="upload", status="failed",
                           error="The image is not a readable picture.")
    html = client.get(f"/samples/{sample.id}").get_data(as_text=True)
    assert "Leishman" in html and "Ada Example" in html and "Captures (2)" in html
    assert "12 cells · 5 called blast · 2 to review" in html and 'class="badge blasts_seen"' in html
    assert "The image is not a readable picture." in html
    assert [e.entity_id for e in events(app, "view", "sample")] == [str(sample.id)]
    if "review.sample_review" in app.view_functions:
        assert f'href="/samples/{sample.id}/review"' in html
        auth.logout()
        auth.login("tech")
        assert f'href="/samples/{sample.id}/review"' not in client.get(f"/samples/{sample.id}").get_data(as_text=True)


def test_pages_carry_no_inline_script_or_style(client, auth):
    auth.login("tech")
    register(client)
    for path in ("/", "/patients/new", "/patients/1", "/patients/1/edit", "/patients/1/samples/new"):
        html = client.get(path).get_data(as_text=True)
        assert "style=" not in html and " onclick" not in html and "<style" not in html, path
        assert "<script>" not in html and "<script src" in html, path


# --- JSON API --------------------------------------------------------------------------------------------

API_PATIENT = {"identifier": "API-7", "name": "Alan Api", "date_of_birth": "1990-01-31", "sex": "male",
               "wbc": 12.5, "platelets": 150}


def test_api_refuses_state_changes_without_the_csrf_header(app, client, auth):
    auth.login("tech")
    response = client.post("/api/patients", json=API_PATIENT)
    assert response.status_code == 400 and "reload the page" in response.get_json()["error"]
    with app.app_context():
        assert Patient.select().count() == 0


def test_api_create_list_get_and_patch(app, client, auth):
    auth.login("tech")
    headers = api_headers(client)
    response = client.post("/api/patients", json=API_PATIENT, headers=headers)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()["patient"]
    assert created["identifier"] == "API-7" and created["wbc"] == 12.5 and created["date_of_birth"] == "1990-01-31"
    assert response.headers["Location"] == f"/api/patients/{created['id']}"

    listing = client.get("/api/patients?q=alan").get_json()
    assert listing["total"] == 1 and listing["patients"][0]["sample_count"] == 0
    assert listing["patients"][0]["latest_report_status"] is None
    assert client.get("/api/patients?q=nobody").get_json()["total"] == 0

    response = client.patch(f"/api/patients/{created['id']}", json={"wbc": 20, "notes": "rechecked"},
                            headers=headers)
    assert response.status_code == 200 and response.get_json()["changed"] is True
    patched = response.get_json()["patient"]
    assert patched["wbc"] == 20.0 and patched["name"] == "Alan Api" and patched["version"] == 2
    [update] = events(app, "update", "patient")
    assert update.before == {"wbc": 12.5, "notes": ""} and update.after == {"wbc": 20.0, "notes": "rechecked"}

    response = client.patch(f"/api/patients/{created['id']}", json={"wbc": 20}, headers=headers)
    assert response.get_json()["changed"] is False and response.get_json()["patient"]["version"] == 2

    response = client.patch(f"/api/patients/{created['id']}", json={"platelets": None}, headers=headers)
    assert response.get_json()["patient"]["platelets"] is None


def test_api_validation_errors_name_the_fields(app, client, auth):
    auth.login("tech")
    headers = api_headers(client)
    bad = dict(API_PATIENT, wbc=5000, date_of_birth="1850-01-01", identifier="bad id")
    response = client.post("/api/patients", json=bad, headers=headers)
    body = response.get_json()
    assert response.status_code == 400 and set(body["fields"]) == {"wbc", "date_of_birth", "identifier"}
    assert "from 0 to 1000" in body["fields"]["wbc"] and body["error"].split(":")[0] in body["fields"]

    assert client.post("/api/patients", json=API_PATIENT, headers=headers).status_code == 201
    duplicate = client.post("/api/patients", json=dict(API_PATIENT, name="Other"), headers=headers)
    assert duplicate.status_code == 400 and "already registered" in duplicate.get_json()["fields"]["identifier"]

    for payload in ([1, 2], {"shoe_size": 44}, {"wbc": True}, {"name": {"first": "x"}}):
        response = client.post("/api/patients", json=payload, headers=headers)
        assert response.status_code == 400 and response.get_json()["error"], payload
    response = client.post("/api/patients", data="not json", headers=headers)
    assert response.status_code == 400 and "JSON" in response.get_json()["error"]

    patient_id = client.get("/api/patients").get_json()["patients"][0]["id"]
    response = client.patch(f"/api/patients/{patient_id}", json={"hemoglobin": 31}, headers=headers)
    assert response.status_code == 400 and "hemoglobin" in response.get_json()["fields"]
    response = client.patch(f"/api/patients/{patient_id}", json={"name": ""}, headers=headers)
    assert response.status_code == 400 and "name" in response.get_json()["fields"]
    assert client.patch("/api/patients/999", json={"name": "x"}, headers=headers).status_code == 404
    with app.app_context():
        assert Patient.get_by_id(patient_id).version == 1
        assert len(events(app, "create", "patient")) == 1 and events(app, "update", "patient") == []


def test_api_samples_create_and_read_with_view_audit(app, client, auth):
    auth.login("path")
    headers = api_headers(client)
    patient_id = client.post("/api/patients", json=API_PATIENT, headers=headers).get_json()["patient"]["id"]
    response = client.post(f"/api/patients/{patient_id}/samples", json={"stain": "Giemsa"}, headers=headers)
    assert response.status_code == 201, response.get_json()
    sample = response.get_json()["sample"]
    assert sample["stain"] == "Giemsa" and sample["specimen_type"] == "peripheral blood"
    assert sample["collected_at"] and sample["patient"] == patient_id  # defaults to now

    bad = client.post(f"/api/patients/{patient_id}/samples", json={"collected_at": "2099-01-01T00:00"},
                      headers=headers)
    assert bad.status_code == 400 and "collected_at" in bad.get_json()["fields"]
    assert client.post("/api/patients/999/samples", json={}, headers=headers).status_code == 404

    one = client.get(f"/api/samples/{sample['id']}").get_json()
    assert one["sample"]["id"] == sample["id"] and one["patient"]["identifier"] == "API-7"
    assert one["captures"] == []
    full = client.get(f"/api/patients/{patient_id}").get_json()
    assert [s["id"] for s in full["samples"]] == [sample["id"]]
    assert full["samples"][0]["capture_count"] == 0 and full["samples"][0]["reports"] == []
    assert len(events(app, "view", "patient")) == 1 and len(events(app, "view", "sample")) == 1
    assert len(events(app, "create", "sample")) == 1
