"""Issue 13 item 4: a signed report never changes. The patient and sample details are frozen in the signed
version; an edit of the patient record afterwards (identifier, name, clinician, WBC) leaves the report's page,
PDF and FHIR as signed, and each says clearly that the record changed after signing."""

from __future__ import annotations

from conftest import csrf_from
from figures import report
from review_data import add_sample, api_headers

from device.services import reporting
from device.services.report_pdf import render_report_pdf
from device.store.records import Patient, Report


def sign(app, client, auth) -> tuple[int, int, int]:
    """(sample id, patient id, report id) of a signed report of Anna Grünwald, MRN-0042."""
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    for cell_id, value in ((cells[2], "blast"), (cells[3], "normal")):
        assert client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers).status_code == 200
    response = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts present."},
                           headers=headers)
    assert response.status_code == 200, response.get_json()
    with app.app_context():
        patient_id = Patient.get(Patient.identifier == "MRN-0042").id
    return sample_id, patient_id, response.get_json()["report"]["id"]


def technician_edits(app, client, auth, patient_id: int) -> None:
    auth.logout()
    auth.login("tech")
    response = client.patch(f"/api/patients/{patient_id}", json={
        "identifier": "MRN-9999", "name": "Someone Else", "referring_clinician": "Dr. Other", "wbc": "4.2"},
        headers={"X-CSRFToken": csrf_from(client.get("/").get_data(as_text=True))})
    assert response.status_code == 200 and response.get_json()["changed"]


def test_patient_edit_after_signing_changes_neither_page_pdf_nor_fhir(app, client, auth):
    sample_id, patient_id, report_id = sign(app, client, auth)
    fhir_before = client.get(f"/reports/{report_id}/fhir.json").get_json()
    technician_edits(app, client, auth, patient_id)

    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "MRN-0042" in page and "Anna Grünwald" in page and "Dr. Ōkubo" in page and "38.5" in page
    assert "MRN-9999" not in page and "Someone Else" not in page and "Dr. Other" not in page
    assert "Patient details changed after signing on" in page
    assert "(identifier, name, referring clinician, WBC)" in page

    fhir = client.get(f"/reports/{report_id}/fhir.json").get_json()
    assert fhir["subject"] == fhir_before["subject"] and fhir["subject"]["identifier"]["value"] == "MRN-0042"
    assert fhir["subject"]["display"] == "Anna Grünwald"
    assert all(obs["subject"] == fhir_before["subject"] for obs in fhir["contained"] if "subject" in obs)
    assert fhir["effectiveDateTime"] == fhir_before["effectiveDateTime"]
    assert fhir["specimen"] == fhir_before["specimen"] and fhir["issued"] == fhir_before["issued"]
    changed = [e["valueString"] for e in fhir["extension"] if e["url"].endswith("record-changed-after-signing")]
    assert len(changed) == 1 and changed[0].startswith("Patient details changed after signing on")

    with app.app_context():
        content = reporting.report_content(Report.get_by_id(report_id))
    pdf = render_report_pdf(content, lambda _cell: None, unicode_font=None, compress=False).decode("latin-1")
    assert "MRN-0042" in pdf and "MRN-9999" not in pdf and "Someone Else" not in pdf
    assert "Patient details changed after signing on" in pdf
    report("signed-report outputs checked unchanged after a patient edit (page, PDF, FHIR)", 3)


def test_draft_shows_the_live_record_and_an_unchanged_signed_report_has_no_notice(app, client, auth):
    sample_id, patient_id, report_id = sign(app, client, auth)
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "changed after signing" not in page
    with app.app_context():
        signed = Report.get_by_id(report_id)
        assert signed.ai_summary["patient"]["identifier"] == "MRN-0042"
        assert signed.ai_summary["sample"]["id"] == sample_id
    token = csrf_from(client.get(f"/samples/{sample_id}/review").get_data(as_text=True))
    client.post(f"/reports/{report_id}/amend", data={"csrf_token": token, "reason": "recount"})
    technician_edits(app, client, auth, patient_id)
    draft = client.get(f"/samples/{sample_id}/report").get_data(as_text=True)
    assert "DRAFT" in draft and "MRN-9999" in draft and "changed after signing" not in draft
    old = client.get(f"/reports/{report_id}").get_data(as_text=True)  # still the signed version of record
    assert "MRN-0042" in old and "Patient details changed after signing on" in old


def test_a_version_signed_before_details_were_frozen_says_so(app, client, auth):
    _sample_id, _patient_id, report_id = sign(app, client, auth)
    with app.app_context():
        signed = Report.get_by_id(report_id)
        legacy = dict(signed.ai_summary)
        legacy.pop("patient"), legacy.pop("sample")
        Report.update(ai_summary=legacy).where(Report.id == report_id).execute()
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "signed before reports froze the patient and sample details" in page
