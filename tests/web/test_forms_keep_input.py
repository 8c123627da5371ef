"""Issue 14 (forms that keep input): identifiers unique ignoring case, decimal comma in the blood count,
/setup and Admin → Users keep what was typed (never a password) and show every error at its field with a
summary at the top, number inputs for the thresholds, and plurals."""

from __future__ import annotations

import re
import shutil

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
