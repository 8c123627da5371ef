"""Issue 14 (technician's view): the quality gate's reason and what to do on the capture page, discarding a bad
frame (kept, audited, counted nowhere, refused once signed), read-only results for technicians, and no
"Report" button before a report exists."""

from __future__ import annotations

from conftest import csrf_from
from review_data import STANDARD_CELLS, add_capture, add_sample, api_headers

from device.core.quality import ADVICE
from device.services import reporting
from device.store.records import AuditEvent, Capture, Sample, db_proxy


def _mark_unusable(app, capture_id: int, problems: list[str]) -> None:
    with app.app_context(), db_proxy.atomic():
        Capture.update(flag="unusable_image", cell_count=0, blast_count=0, review_count=0,
                       quality={"usable": False, "problems": problems}).where(Capture.id == capture_id).execute()


def _capture_ids(app, sample_id: int) -> list[int]:
    with app.app_context():
        return [c.id for c in Capture.select().where(Capture.sample == sample_id).order_by(Capture.id)]


def test_capture_page_shows_the_reason_and_what_to_do(app, client, auth):
    sample_id, _ = add_sample(app)
    add_capture(app, sample_id, [])
    blurred, empty = _capture_ids(app, sample_id)
    _mark_unusable(app, blurred, ["blurred"])
    _mark_unusable(app, empty, ["empty field"])
    auth.login("tech")
    html = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert "Unusable: blurred" in html and ADVICE["blurred"] in html
    assert "Unusable: empty field" in html and ADVICE["empty field"] in html and "move the slide" in html
    poll = client.get(f"/api/captures/{empty}/poll").get_json()
    assert poll["problems"] == ["empty field"] and poll["advice"] == [ADVICE["empty field"]]
    # the pathologist's page says the same (one wording, device/core/quality.py)
    with app.app_context():
        problems = reporting.sample_summary(Sample.get_by_id(sample_id))["quality_problems"]
    assert any(ADVICE["blurred"] in line and "(blurred)" in line for line in problems), problems


def test_a_technician_discards_a_bad_frame_kept_audited_and_counted_nowhere(app, client, auth):
    sample_id, _ = add_sample(app)
    add_capture(app, sample_id, STANDARD_CELLS[:2])  # a second frame: one blast, one normal
    first, second = _capture_ids(app, sample_id)
    with app.app_context():
        before = reporting.sample_summary(Sample.get_by_id(sample_id))
    assert before["captures_total"] == 2
    auth.login("tech")
    page = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert f'action="/captures/{second}/discard"' in page
    response = client.post(f"/captures/{second}/discard", data={"csrf_token": csrf_from(page), "reason": "blurred"},
                           follow_redirects=True)
    html = response.get_data(as_text=True)
    assert f"Frame #{second} discarded" in html and 'data-status="discarded"' in html
    with app.app_context():
        capture = Capture.get_by_id(second)
        assert capture.status == "discarded"  # the row, its image and cells are kept
        assert capture.cells.count() == 2
        event = AuditEvent.get((AuditEvent.action == "discard") & (AuditEvent.entity_id == str(second)))
        assert event.username == "tech" and event.before == {"status": "done"} and event.detail == "blurred"
        after = reporting.sample_summary(Sample.get_by_id(sample_id))
        queue = {row["sample"].id: row["summary"] for row in reporting.review_queue()}
    assert after["captures_total"] == 1 and [c["id"] for c in after["captures"]] == [first]
    assert after["counted_cells"] == before["counted_cells"] - 2
    assert queue[sample_id]["captures_total"] == 1 and queue[sample_id]["counted_cells"] == after["counted_cells"]
    again = client.post(f"/api/captures/{second}/discard", json={}, headers=api_headers(client, "/"))
    assert again.status_code == 409 and "discarded already" in again.get_json()["error"]


def test_a_frame_of_a_signed_report_cannot_be_discarded(app, client, auth):
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    for cell_id, value in ((cells[2], "blast"), (cells[3], "normal")):
        client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers)
    signed = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts."}, headers=headers)
    assert signed.status_code == 200
    (capture_id,) = _capture_ids(app, sample_id)
    assert f"/captures/{capture_id}/discard" not in client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    refused = client.post(f"/api/captures/{capture_id}/discard", json={"reason": "x"}, headers=api_headers(client, "/"))
    assert refused.status_code == 409 and "signed" in refused.get_json()["error"]
    # an amendment is open: the frame stays part of the signed version
    report_id = signed.get_json()["report"]["id"]
    token = csrf_from(client.get(f"/samples/{sample_id}/review").get_data(as_text=True))
    amend = client.post(f"/reports/{report_id}/amend", data={"csrf_token": token, "reason": "recount"})
    assert amend.status_code == 302
    refused = client.post(f"/api/captures/{capture_id}/discard", json={}, headers=api_headers(client, "/"))
    assert refused.status_code == 409 and "signed report version" in refused.get_json()["error"]
    with app.app_context():
        assert Capture.get_by_id(capture_id).status == "done"


def test_a_frame_being_analysed_is_not_discarded(app, client, auth):
    sample_id, _ = add_sample(app, status="queued")
    (capture_id,) = _capture_ids(app, sample_id)
    auth.login("tech")
    refused = client.post(f"/api/captures/{capture_id}/discard", json={}, headers=api_headers(client, "/"))
    assert refused.status_code == 409 and "wait until its analysis ends" in refused.get_json()["error"]


def test_technicians_read_results_without_review_controls(app, client, auth):
    sample_id, cells = add_sample(app)
    auth.login("tech")
    sample_page = client.get(f"/samples/{sample_id}").get_data(as_text=True)
    assert f'href="/samples/{sample_id}/results"' in sample_page
    assert f'href="/samples/{sample_id}/report"' not in sample_page  # no report yet: no "Report" button
    response = client.get(f"/samples/{sample_id}/results")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.count("<rect data-box=") == len(cells)  # every cell outlined on its frame
    assert all(f'id="cell-{cell_id}"' in html for cell_id in cells)
    assert "awaiting review" in html and "Sign report" not in html and "label-form" not in html
    assert 'name="label"' not in html and "/review" not in html.split("<main>")[1]
    with app.app_context():
        assert AuditEvent.select().where((AuditEvent.action == "view") & (AuditEvent.detail == "results")).count() == 1


def test_the_report_button_appears_once_a_report_exists(app, client, auth):
    sample_id, _ = add_sample(app)
    auth.login("path")
    token = csrf_from(client.get(f"/samples/{sample_id}/review").get_data(as_text=True))
    assert client.post(f"/samples/{sample_id}/report/draft", data={"csrf_token": token, "conclusion": "so far"}
                       ).status_code == 302
    html = client.get(f"/samples/{sample_id}").get_data(as_text=True)
    assert f'href="/samples/{sample_id}/report"' in html


def test_a_discarded_frame_uploaded_again_is_refused_with_the_reason(app, client, auth):
    import io

    from review_data import DEMO_FRAME

    sample_id, _ = add_sample(app)
    (capture_id,) = _capture_ids(app, sample_id)
    auth.login("tech")
    headers = api_headers(client, "/")
    assert client.post(f"/api/captures/{capture_id}/discard", json={}, headers=headers).status_code == 200
    again = client.post(f"/api/samples/{sample_id}/captures", data={"files": [(io.BytesIO(DEMO_FRAME.read_bytes()),
                                                                              "again.jpg")]},
                        content_type="multipart/form-data", headers=headers)
    assert again.status_code == 409 and "which was discarded" in again.get_json()["error"]
