"""Issue 14 (forms that keep input): identifiers unique ignoring case, decimal comma in the blood count,
/setup and Admin → Users keep what was typed (never a password) and show every error at its field with a
summary at the top, number inputs for the thresholds, and plurals."""

from __future__ import annotations

import re

import pytest
from conftest import csrf_from
from test_patients import VALID, api_headers, register

from device.store.records import Patient


def test_an_identifier_differing_only_in_case_is_refused_at_its_field(app, client, auth):
    auth.login("tech")
    assert register(client, identifier="mrn-2024-0117").status_code == 302
    response = register(client, identifier=" MRN-2024-0117 ", name="Someone Else")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "already registered to another patient (as mrn-2024-0117" in html
    assert 'value="Someone Else"' in html  # what was typed stays
    api = client.post("/api/patients", json=dict(VALID, identifier="Mrn-2024-0117"), headers=api_headers(client))
    assert api.status_code == 400 and "already registered" in api.get_json()["fields"]["identifier"]
    with app.app_context():
        assert [p.identifier for p in Patient.select()] == ["mrn-2024-0117"]  # shown as typed


def test_editing_a_patient_may_change_the_case_of_its_own_identifier(app, client, auth):
    auth.login("tech")
    register(client, identifier="mrn-7")
    with app.app_context():
        patient_id = Patient.get().id
    token = csrf_from(client.get(f"/patients/{patient_id}/edit").get_data(as_text=True))
    response = client.post(f"/patients/{patient_id}/edit", data=dict(VALID, identifier="MRN-7", csrf_token=token))
    assert response.status_code == 302
    with app.app_context():
        assert Patient.get().identifier == "MRN-7"


def test_blood_count_takes_a_decimal_comma_in_a_text_input(app, client, auth):
    auth.login("tech")
    html = client.get("/patients/new").get_data(as_text=True)
    wbc = re.search(r"<input[^>]*name=\"wbc\"[^>]*>", html).group(0)
    assert 'type="text"' in wbc and 'inputmode="decimal"' in wbc  # type=number refuses "48,5" in Chromium
    assert register(client, wbc="48,5", hemoglobin=" 9,25 ").status_code == 302
    with app.app_context():
        patient = Patient.get()
        assert (patient.wbc, patient.hemoglobin) == (48.5, 9.25)
    response = register(client, identifier="MRN-9", wbc="48,5,1")
    assert response.status_code == 400 and 'value="48,5,1"' in response.get_data(as_text=True)


def _fresh_client(tmp_path):
    from webui.app import create_app

    app = create_app(data_dir=tmp_path / "fresh", start_workers=False)
    app.testing = True
    return app, app.test_client()


def test_setup_keeps_what_was_typed_and_shows_every_error_at_its_field(tmp_path):
    app, client = _fresh_client(tmp_path)
    try:
        token = csrf_from(client.get("/setup").get_data(as_text=True))
        response = client.post("/setup", data={"csrf_token": token, "username": "Dr Boss!", "full_name": "Dr. Ana Boss",
                                               "password": "short", "password_again": "shorter",
                                               "roles": ["admin", "pathologist"]})
        html = response.get_data(as_text=True)
        assert response.status_code == 400
        assert 'value="Dr Boss!"' in html and 'value="Dr. Ana Boss"' in html  # kept
        assert "short" not in re.findall(r'<input[^>]*type="password"[^>]*>', html).__str__()  # never a password
        assert re.search(r'value="pathologist" checked', html) and not re.search(r'value="technician" checked', html)
        summary = re.search(r'<div class="error-summary".*?</div>', html, re.DOTALL).group(0)
        for anchor in ("#username", "#password", "#password_again"):
            assert f'href="{anchor}"' in summary
        assert "these 3 fields" in summary
        assert html.count('class="field-error"') == 3  # each at its field too
        assert 'id="username-error"' in html and 'aria-describedby="password_again-error"' in html
    finally:
        app.appliance.stop()


def test_admin_users_refusal_has_a_banner_at_the_top_and_keeps_the_typed_values(app, client, auth):
    auth.login("admin")
    token = csrf_from(client.get("/admin/users").get_data(as_text=True))
    response = client.post("/admin/users", data={"csrf_token": token, "username": "new.tech", "full_name": "New Tech",
                                                 "password": "x", "confirm": "y"})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    summary = re.search(r'<div class="error-summary".*?</div>', html, re.DOTALL)
    assert summary and html.index("error-summary") < html.index('class="ad-users"')  # above the user list
    assert "New user: Roles" in summary.group(0) and "New user: New password" in summary.group(0)
    assert 'href="#roles"' in summary.group(0) and 'id="roles"' in html
    assert 'value="new.tech"' in html and 'value="New Tech"' in html
    assert 'value="x"' not in html


def test_threshold_settings_are_number_inputs_with_bounds(client, auth):
    auth.login("admin")
    html = client.get("/admin/settings").get_data(as_text=True)
    for name, bounds in (("threshold", ('min="0"', 'max="1"', 'step="0.01"')),
                         ("idle_minutes", ('min="1"', 'max="120"', 'step="1"'))):
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html).group(0)
        assert 'type="number"' in tag and all(b in tag for b in bounds), tag


@pytest.mark.parametrize("count, text", [(1, "1 cell was flagged"), (2, "2 cells were flagged")])
def test_report_page_plurals(app, client, auth, count, text):
    from review_data import STANDARD_CELLS, add_sample

    cells = [dict(STANDARD_CELLS[2])] + [dict(STANDARD_CELLS[3])] * (count - 1)
    sample_id, _ = add_sample(app, cells=cells)
    auth.login("path")
    token = csrf_from(client.get(f"/samples/{sample_id}/review").get_data(as_text=True))
    client.post(f"/samples/{sample_id}/report/draft", data={"csrf_token": token, "conclusion": "x"})
    html = client.get(f"/samples/{sample_id}/report").get_data(as_text=True)
    assert text in html


def test_idle_logout_message_says_1_minute(app, client, auth):
    from device.services.actor import Actor

    app.appliance.save_settings({"idle_minutes": "1"}, Actor("admin"))
    auth.login("tech")
    with client.session_transaction() as session:
        session["last_seen"] = session["last_seen"] - 61
    html = client.get("/", follow_redirects=True).get_data(as_text=True)
    assert "Logged out after 1 minute without activity." in html
