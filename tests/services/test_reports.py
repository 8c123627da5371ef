"""Reports: counting rules, the report page, the PDF and the FHIR export, with real crops and the shipped model card."""

from __future__ import annotations

import hashlib
import json

import pytest
from review_data import REPO_ROOT, add_sample, api_headers

from device.services import reporting
from device.services.report_model import model_identity
from device.services.report_pdf import find_unicode_font, fold_latin1, render_report_pdf
from device.store.records import AuditEvent, Report


def sign_sample(client, auth, app, identifier="MRN-0042", name="Anna Grünwald"):
    """A signed report: flagged cells reviewed through the API, then signed. Returns (sample id, cells, report id)."""
    sample_id, cells = add_sample(app, identifier=identifier, name=name)
    auth.login("path")
    headers = api_headers(client)
    for cell_id, value in ((cells[2], "blast"), (cells[3], "normal")):
        assert client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers).status_code == 200
    response = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts present (50 %)."},
                           headers=headers)
    assert response.status_code == 200, response.get_json()
    return sample_id, cells, response.get_json()["report"]["id"]


def test_blast_percentage_is_over_the_counted_white_cells_other_included_unusable_and_edge_excluded():
    def cell(final, edge=False, ai="normal"):
        return {"final_label": final, "ai_label": ai, "edge": edge, "needs_review": False,
                "reviewer_label": None if final == ai else final}

    cells = ([cell("blast", ai="blast")] * 3 + [cell("normal")] * 5 + [cell("other")] * 4 + [cell("unusable")] * 2
             + [cell("blast", edge=True, ai="blast")] * 6)
    counts = reporting.count_cells(cells)
    assert counts["blast_count"] == 3 and counts["evaluable_cells"] == 12
    assert counts["blast_percentage"] == 25.0  # 3 / (3 + 5 + 4): "other" is a white cell; not 3 / 14 nor 9 / 20
    assert counts["counted_cells"] == 14 and counts["edge_cells"] == 6 and counts["overridden"] == 6
    assert reporting.count_cells([cell("other")])["blast_percentage"] == 0.0
    assert reporting.count_cells([cell("unusable")])["blast_percentage"] is None


def test_sample_summary_uses_the_final_label(app, client, auth):
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    client.post(f"/api/cells/{cells[0]}/label", json={"label": "unusable"}, headers=headers)  # AI said blast
    client.post(f"/api/cells/{cells[2]}/label", json={"label": "other"}, headers=headers)     # AI said blast
    with app.app_context():
        from device.store.records import Sample

        summary = reporting.sample_summary(Sample.get_by_id(sample_id))
    assert summary["blast_count"] == 0 and summary["ai_blast_count"] == 2
    assert summary["evaluable_cells"] == 3 and summary["blast_percentage"] == 0.0  # 2 normal + 1 other
    assert {k: v for k, v in summary["by_label"].items() if v} == {"normal": 2, "other": 1, "unusable": 1}
    assert summary["unreviewed"] == 1 and summary["captures"][0]["flag"] == "needs_review"


def test_model_identity_comes_from_the_card_and_the_shipped_int8_file():
    identity = model_identity()
    card = json.loads((REPO_ROOT / "models" / "model_card.json").read_text())
    shipped = REPO_ROOT / "models" / "allscope_blast_int8.tflite"
    assert identity["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert identity["input_size"] == card["provenance"]["input_size"] == 128
    for key in ("sensitivity", "specificity", "precision", "roc_auc"):
        assert identity["validation"][key] == card["cell_level"]["int8"][key]
    assert "c-nmc-2019" in identity["training_data"]


def test_draft_report_page_shows_the_banner_and_is_audited(app, client, auth):
    sample_id, _ = add_sample(app)
    auth.login("path")
    token = auth.csrf(f"/samples/{sample_id}/review")
    client.post(f"/samples/{sample_id}/report/draft", data={"csrf_token": token, "conclusion": "Looks reactive."})
    auth.logout()
    auth.login("tech")  # technicians read reports
    page = client.get(f"/samples/{sample_id}/report")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "DRAFT — not signed" in text and "Looks reactive." in text and "Anna Grünwald" in text
    assert "Decision support only" in text and "fhir.json" not in text
    with app.app_context():
        view = AuditEvent.get(AuditEvent.action == "view", AuditEvent.entity == "report")
        assert view.username == "tech"
    assert client.get(f"/reports/{Report.select().first().id}/fhir.json").status_code == 409


def test_no_report_yet_and_admin_refused(app, client, auth):
    sample_id, _ = add_sample(app)
    auth.login("tech")
    missing = client.get(f"/samples/{sample_id}/report")
    assert missing.status_code == 404 and "No report has been started" in missing.get_data(as_text=True)
    auth.logout()
    auth.login("admin")
    assert client.get(f"/samples/{sample_id}/report").status_code == 403


def test_signed_report_page_shows_signer_model_and_counts(app, client, auth):
    sample_id, _, report_id = sign_sample(client, auth, app)
    page = client.get(f"/samples/{sample_id}/report").get_data(as_text=True)
    identity = model_identity()
    assert "DRAFT" not in page and 'class="badge signed"' in page
    assert "Signed by <bdi>path</bdi>" in page and "50.0 %" in page and "2 of 4 white cells counted" in page
    card = json.loads((REPO_ROOT / "models" / "model_card.json").read_text())["cell_level"]["int8"]
    assert identity["short_id"] in page and f"sensitivity {card['sensitivity']}" in page
    assert f"ROC AUC {card['roc_auc']}" in page
    assert page.count('class="rtile') == 6
    assert "style=" not in page


def test_pdf_is_a_real_pdf_with_identity_disclaimer_and_crops(app, client, auth):
    sample_id, cells, report_id = sign_sample(client, auth, app, identifier="MRN/07 ü")
    response = client.get(f"/reports/{report_id}.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF")
    assert response.headers["Content-Disposition"] == 'attachment; filename="allscope-report-MRN_07-s1-v1.pdf"'
    assert response.data.count(b"/Subtype /Image") == len(cells) + 1  # every crop in the grid, and the frame
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.detail == "pdf").count() == 1
        content = reporting.report_content(Report.get_by_id(report_id))
        data = app.appliance.data
        # core font, uncompressed: the text can be read straight from the bytes
        raw = render_report_pdf(content, lambda c: data.absolute(c["crop_path"]), unicode_font=None, compress=False)
    assert b"Patient MRN/07 \xfc" in raw  # Latin-1 in the core font
    assert b"Decision support only: every result must be reviewed by a qualified professional" in raw
    assert raw.count(b"Decision support only") >= 2  # footer on every page plus the section
    assert b"Anna Gr\xfcnwald" in raw and b"Signed by" in raw


@pytest.mark.parametrize("font", ["dejavu", "core"])
def test_pdf_never_crashes_on_non_latin_text(app, client, auth, font):
    if font == "dejavu" and find_unicode_font() is None:
        pytest.skip("DejaVu Sans is not installed here")
    _, _, report_id = sign_sample(client, auth, app, name="Grünwald — 李小龍 “Ω”")
    with app.app_context():
        content = reporting.report_content(Report.get_by_id(report_id))
        raw = render_report_pdf(content, lambda c: None, unicode_font=True if font == "dejavu" else None)
    assert raw.startswith(b"%PDF") and b"%%EOF" in raw[-64:]
    assert fold_latin1("Grünwald — 李") == "Grünwald - ?"


def _validate(resource: dict):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    return DiagnosticReport.model_validate(resource)


def test_fhir_export_validates_and_carries_the_findings(app, client, auth):
    sample_id, _, report_id = sign_sample(client, auth, app)
    response = client.get(f"/reports/{report_id}/fhir.json")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    resource = response.get_json()
    model = _validate(resource)
    assert model.status == "final" and resource["issued"].endswith("+00:00")
    assert resource["subject"]["identifier"]["value"] == "MRN-0042"
    assert resource["effectiveDateTime"] == "2026-01-05T09:30:00+00:00"
    assert resource["performer"][0]["identifier"]["value"] == "path"
    assert resource["conclusion"] == "Blasts present (50 %)."
    assert resource["code"]["coding"][0]["system"] == "http://loinc.org" and resource["code"]["text"]
    observations = {obs["id"]: obs for obs in resource["contained"]}
    pct = observations["blast-percentage"]
    assert pct["valueQuantity"] == {"value": 50.0, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    assert pct["code"]["coding"][0]["code"] == "26446-5"
    assert observations["white-cells-counted"]["valueInteger"] == 4
    assert observations["blasts-counted"]["valueInteger"] == 2
    extensions = " ".join(e.get("valueString", "") for e in resource["extension"])
    assert "Decision support only" in extensions and model_identity()["short_id"] in extensions


def test_fhir_status_follows_amendment(app, client, auth):
    sample_id, cells, v1 = sign_sample(client, auth, app)
    headers = api_headers(client)
    client.post(f"/reports/{v1}/amend", data={"csrf_token": headers["X-CSRFToken"], "reason": "Recount."})
    with app.app_context():
        draft = Report.get(Report.version == 2)
    assert client.get(f"/reports/{draft.id}/fhir.json").status_code == 409  # drafts never leave the device
    assert "draft" in client.get(f"/reports/{draft.id}/fhir.json").get_json()["error"]
    client.post(f"/api/cells/{cells[0]}/label", json={"label": "normal"}, headers=headers)
    signed = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "One blast."}, headers=headers)
    v2 = signed.get_json()["report"]["id"]
    new = client.get(f"/reports/{v2}/fhir.json").get_json()
    old = client.get(f"/reports/{v1}/fhir.json").get_json()
    assert _validate(new).status == "amended" and _validate(old).status == "final"
    assert {o["id"]: o for o in new["contained"]}["blasts-counted"]["valueInteger"] == 1
    assert {o["id"]: o for o in old["contained"]}["blasts-counted"]["valueInteger"] == 2  # v1's own snapshot
    assert any("Superseded by version 2" == e.get("valueString") for e in old["extension"])
    page = client.get(f"/samples/{sample_id}/report").get_data(as_text=True)
    assert "version 2" in page and 'class="badge amended"' in page


def test_report_api_returns_the_snapshot_and_audits(app, client, auth):
    _, _, report_id = sign_sample(client, auth, app)
    body = client.get(f"/api/reports/{report_id}").get_json()["report"]
    assert body["status"] == "signed" and body["summary"]["blast_percentage"] == 50.0
    assert body["fhir_status"] == "final" and body["superseded_by"] is None
    assert client.get("/api/reports/999").status_code == 404
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "view", AuditEvent.detail == "api").count() == 1
