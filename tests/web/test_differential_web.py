"""Counts with a denominator through the web UI and the API: class labels, the differential, "accept the remaining
AI labels", the sign-off minimum (409 naming the reason) and its override reason on the report (HTML, PDF, FHIR),
the capture page's progress line, the admin settings, and the sync payloads that carry all of it."""

from __future__ import annotations

import io
import json
import re

import pypdf
import pytest
from conftest import csrf_from
from review_data import add_sample, api_headers, label, review_flagged

from device.store.records import AuditEvent, Cell, Report

MINIMUM_100 = {"target_white_cells": 200, "min_white_cells": 100}


@pytest.fixture
def minimum_100(app):
    """The built-in target and minimum, saved as an admin would (the test database lowers the minimum to 0 for
    the other tests, whose samples hold a few cells)."""
    from device.services.actor import Actor

    with app.app_context():
        app.appliance.save_settings(MINIMUM_100, Actor("admin", ""))
    assert app.appliance.settings.min_white_cells == 100


def test_a_class_label_through_the_api_answers_the_differential_and_the_progress(app, client, auth, minimum_100):
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    response = label(client, cells[1], "monocyte", headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["cell"]["reviewer_label"] == "monocyte" and body["cell"]["label_source"] == "reviewer"
    counts = body["counts"]
    assert counts["differential_by_label"]["monocyte"] == {"label": "monocyte", "name": "Monocytes", "count": 1,
                                                           "percentage": 25.0}
    assert counts["progress"]["text"] == "4 of 200 white cells counted"
    assert "4 white cells counted; at least 100 needed to sign, or give an override reason." in body["sign_blockers"]
    refused = label(client, cells[1], "platelet", headers)
    assert refused.status_code == 400 and "eosinophil" in refused.get_json()["error"]
    # "normal" and "blast" keep working, "normal" meaning a normal cell whose class is not given
    assert label(client, cells[1], "normal", headers).get_json()["counts"]["differential_by_label"]["normal"][
        "count"] == 2
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    assert 'id="differential"' in page and "4 of 200 white cells counted" in page
    assert 'name="label" value="eosinophil"' in page  # one button per class in the enlarged cell
    assert 'Accept the remaining AI labels (<span data-count="accept_remaining">1</span>)' in page


def test_accepting_the_remaining_ai_labels_through_the_api_and_the_page(app, client, auth):
    sample_id, _ = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    response = client.post(f"/api/samples/{sample_id}/accept-ai-labels", json={}, headers=headers)
    assert response.status_code == 200 and response.get_json()["accepted"] == 2
    review = response.get_json()["counts"]["review"]
    assert (review["accepted"], review["not_reviewed"]) == (2, 2)
    assert client.post(f"/api/samples/{sample_id}/accept-ai-labels", json={}, headers=headers).get_json()[
        "accepted"] == 0
    assert client.post("/api/samples/9999/accept-ai-labels", json={}, headers=headers).status_code == 404
    assert client.post(f"/api/samples/{sample_id}/accept-ai-labels", json={}).status_code in (400, 403)  # no CSRF
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    assert "blast (AI accepted)" in page and "2 accepted as the AI labelled them by path" in page
    # the page's form: the no-JavaScript path
    other_id, _ = add_sample(app, identifier="MRN-0099")
    token = csrf_from(client.get(f"/samples/{other_id}/review").get_data(as_text=True))
    done = client.post(f"/samples/{other_id}/accept-ai-labels", data={"csrf_token": token}, follow_redirects=True)
    assert done.status_code == 200 and "Accepted the AI&#39;s label of 2 cell(s)" in done.get_data(as_text=True)
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "accept_ai").count() == 2
    # a technician may not
    auth.logout()
    auth.login("tech")
    assert client.post(f"/api/samples/{sample_id}/accept-ai-labels", json={},
                       headers=api_headers(client, "/")).status_code == 403


def test_sign_below_the_minimum_is_409_naming_the_reason_and_an_override_is_stored_and_printed(
        app, client, auth, minimum_100):
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    review_flagged(client, cells, headers, "lymphocyte")
    refused = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts."}, headers=headers)
    assert refused.status_code == 409
    assert refused.get_json()["error"] == ("Cannot sign yet: 4 white cells counted; at least 100 needed to sign, "
                                           "or give an override reason.")
    bad = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts.", "override_reason": 5},
                      headers=headers)
    assert bad.status_code == 400
    long = client.post(f"/api/samples/{sample_id}/report/sign",
                       json={"conclusion": "Blasts.", "override_reason": "x" * 501}, headers=headers)
    assert long.status_code == 400 and "override_reason: At most 500 characters" in long.get_json()["error"]
    signed = client.post(f"/api/samples/{sample_id}/report/sign",
                         json={"conclusion": "Blasts.", "override_reason": "Only one frame: the slide broke."},
                         headers=headers)
    assert signed.status_code == 200, signed.get_json()
    report = signed.get_json()["report"]
    assert report["override_reason"] == "Only one frame: the slide broke."
    line = ("Signed with 4 white cells counted (minimum 100, target 200). Override reason: Only one frame: the "
            "slide broke.")
    page = client.get(f"/reports/{report['id']}").get_data(as_text=True)
    assert line in page and 'class="override-reason"' in page
    assert "Lymphocytes" in page and "Of 4 cells (edge cells excluded): 2 labelled by path, 2 not reviewed" in page
    pdf = client.get(f"/reports/{report['id']}.pdf")
    text = " ".join("\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.data)).pages).split())
    assert "Override reason: Only one frame: the slide broke." in text
    assert "Differential (4 white cells counted)" in text and "Lymphocytes 1 25.0 %" in text
    assert "2 labelled by path, 2 not reviewed (AI label)" in text


def test_the_html_sign_form_offers_the_override_and_refuses_in_one_line(app, client, auth, minimum_100):
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    review_flagged(client, cells, headers, "lymphocyte")
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    assert 'name="override_reason"' in page and "below the minimum of 100" in page
    token = csrf_from(page)
    refused = client.post(f"/samples/{sample_id}/report/sign", data={"csrf_token": token, "conclusion": "Blasts."})
    assert refused.status_code == 409
    [message] = re.findall(r'id="page-message">([^<]*)<', refused.get_data(as_text=True))
    assert message == "Cannot sign yet: 4 white cells counted; at least 100 needed to sign, or give an override reason."
    signed = client.post(f"/samples/{sample_id}/report/sign",
                         data={"csrf_token": token, "conclusion": "Blasts.", "override_reason": "Urgent: call."})
    assert signed.status_code == 302
    with app.app_context():
        assert Report.get(Report.sample == sample_id).override_reason == "Urgent: call."


def test_fhir_has_one_observation_per_class_and_says_exactly_what_was_reviewed(app, client, auth, minimum_100):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    review_flagged(client, cells, headers, "lymphocyte")
    client.post(f"/api/samples/{sample_id}/accept-ai-labels", json={}, headers=headers)
    signed = client.post(f"/api/samples/{sample_id}/report/sign",
                         json={"conclusion": "Blasts.", "override_reason": "Research smear."}, headers=headers)
    resource = client.get(f"/reports/{signed.get_json()['report']['id']}/fhir.json").get_json()
    DiagnosticReport.model_validate(resource)
    observations = {obs["id"]: obs for obs in resource["contained"] if obs["resourceType"] == "Observation"}
    codes = {oid: obs["code"]["coding"][0]["code"] for oid, obs in observations.items()}
    assert codes["blast-percentage"] == "26446-5"
    assert {codes[f"differential-{c}"] for c in ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil",
                                                  "other")} == {"26511-6", "26478-8", "26485-3", "26450-7", "30180-4",
                                                                "51586-6"}
    assert observations["differential-normal"]["code"]["coding"][0]["system"] == "urn:allscope:observation"
    lymph = observations["differential-lymphocyte"]
    assert lymph["valueQuantity"] == {"value": 25.0, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    assert lymph["component"][0]["valueInteger"] == 1
    assert observations["blast-percentage"]["component"][0]["valueInteger"] == 2
    assert observations["white-cells-counted"]["valueInteger"] == 4
    statement = ("Of 4 cells (edge cells excluded): 2 labelled by path, 2 accepted as the AI labelled them by path, "
                 "0 not reviewed (AI label).")
    assert statement in lymph["method"]["text"] and "every result reviewed" not in json.dumps(resource)
    extensions = {e["url"]: e.get("valueString") for e in resource["extension"]}
    assert extensions["urn:allscope:fhir:review"] == statement
    assert extensions["urn:allscope:fhir:count-override"].endswith("Override reason: Research smear.")
    assert observations["white-cells-counted"]["note"][0]["text"].startswith("Signed with 4 white cells counted")
    assert len(resource["result"]) == len(observations)


def test_the_capture_page_shows_how_many_white_cells_are_counted(app, client, auth, minimum_100):
    sample_id, cells = add_sample(app)
    auth.login("tech")
    page = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert 'id="count-progress"' in page and "4 of 200 white cells counted" in page and "100 needed to sign" in page
    with app.app_context():
        Cell.update(reviewer_label="unusable").where(Cell.id == cells[0]).execute()
    assert "3 of 200 white cells counted" in client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)


def test_the_admin_sets_target_and_minimum_and_a_minimum_above_the_target_is_named(app, client, auth):
    auth.login("admin")
    page = client.get("/admin/settings").get_data(as_text=True)
    assert 'name="target_white_cells"' in page and 'name="min_white_cells"' in page
    form = {"csrf_token": csrf_from(page), "threshold": "0.5", "review_low": "0.25", "review_high": "0.75",
            "camera_kind": "replay", "camera_source": "", "model_path": "", "idle_minutes": "10",
            "max_upload_mb": "64", "target_white_cells": "100", "min_white_cells": "150"}
    refused = client.post("/admin/settings", data=form)
    assert refused.status_code == 400
    assert "Minimum white cells to sign: must not be above the target count (100)" in refused.get_data(as_text=True)
    saved = client.post("/admin/settings", data=dict(form, min_white_cells="50"))
    assert saved.status_code == 302
    assert (app.appliance.settings.target_white_cells, app.appliance.settings.min_white_cells) == (100, 50)


def test_sync_payloads_carry_the_label_source_and_the_override_reason(app, client, auth):
    from sync.agent.outbox import OutboxEntry

    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    review_flagged(client, cells, headers, "lymphocyte")
    client.post(f"/api/samples/{sample_id}/accept-ai-labels", json={}, headers=headers)
    client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "B.", "override_reason": "why"},
                headers=headers)
    with app.app_context():
        capture = (OutboxEntry.select().where(OutboxEntry.entity == "capture").order_by(OutboxEntry.id.desc())
                   .first().data())
        report = (OutboxEntry.select().where(OutboxEntry.entity == "report").order_by(OutboxEntry.id.desc())
                  .first().data())
    sources = {cell["id"]: cell["label_source"] for cell in capture["cells"]}
    assert sources[cells[0]] == "ai_accepted" and sources[cells[2]] == "reviewer" and sources[cells[4]] is None
    assert report["override_reason"] == "why" and report["status"] == "signed"
