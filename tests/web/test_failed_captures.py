"""Issue 13 item 10: a capture whose analysis failed (e.g. while the model file was corrupt) can be analysed again
(page and API, audited) instead of being re-uploaded, and sign-off lists it: signing needs it re-analysed or an
explicit acknowledgement that the report goes out without it (the report lists it either way)."""

from __future__ import annotations

from pathlib import Path

from conftest import csrf_from
from figures import report
from review_data import DEMO_FRAME, add_capture, add_sample, api_headers

from device.core.imageio import load_image
from device.services.actor import Actor
from device.services.frame_files import pixels_sha256
from device.services.intake import DuplicateFrame, NotFailed, reanalyse, store_upload
from device.store.records import AuditEvent, Capture, Sample

FAILURE = "model file is corrupt: sha256 does not match"


def with_failed_capture(app) -> tuple[int, list[int], int]:
    """(sample id, cell ids of its good capture, id of its failed capture)."""
    sample_id, cells = add_sample(app)
    add_capture(app, sample_id, [], status="failed")
    with app.app_context():
        failed = Capture.select().where(Capture.sample == sample_id, Capture.status == "failed").get()
        Capture.update(error=FAILURE, sha256="f" * 64).where(Capture.id == failed.id).execute()
        return sample_id, cells, failed.id


class FakeQueue:
    def __init__(self):
        self.queued: list[int] = []

    def enqueue(self, capture_id: int) -> None:
        self.queued.append(capture_id)


def test_api_reanalyses_a_failed_capture_and_audits_it(app, client, auth):
    sample_id, _cells, failed_id = with_failed_capture(app)
    auth.login("tech")
    response = client.post(f"/api/captures/{failed_id}/reanalyse", headers=api_headers(client, "/"))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["capture"]["status"] == "queued"
    with app.app_context():
        capture = Capture.get_by_id(failed_id)
        assert capture.status == "queued" and capture.error == "" and capture.version == 2
        event = AuditEvent.get(AuditEvent.action == "reanalyse")
        assert event.entity_id == str(failed_id) and event.username == "tech"
        assert event.before == {"status": "failed", "error": FAILURE} and event.after == {"status": "queued"}
    again = client.post(f"/api/captures/{failed_id}/reanalyse", headers=api_headers(client, "/"))
    assert again.status_code == 409 and "only a capture whose analysis failed" in again.get_json()["error"]
    report("failed captures re-analysed (page, API, worker queue)", 1)


def test_reanalysis_queues_the_capture_on_the_worker_and_refuses_a_done_one(app):
    sample_id, _cells, failed_id = with_failed_capture(app)
    queue = FakeQueue()
    actor = Actor(username="tech", address="127.0.0.1")
    with app.app_context():
        assert reanalyse(Capture.get_by_id(failed_id), actor=actor, worker=queue).status == "queued"
        assert queue.queued == [failed_id]
        done = Capture.select().where(Capture.sample == sample_id, Capture.status == "done").get()
        try:
            reanalyse(done, actor=actor, worker=queue)
        except NotFailed as error:
            assert str(error) == f"Capture #{done.id} is done: only a capture whose analysis failed can be re-analysed"
        else:
            raise AssertionError("a done capture was queued again")
    assert queue.queued == [failed_id]
    report("failed captures re-analysed (page, API, worker queue)", 1)


def test_capture_page_offers_reanalysis_and_the_duplicate_upload_points_to_it(app, client, auth):
    sample_id, _cells, failed_id = with_failed_capture(app)
    with app.app_context():  # the failed capture is of the demo frame itself: re-uploading it is a duplicate
        demo = Capture.select().where(Capture.sample == sample_id, Capture.status == "done").get()
        Capture.update(sha256="d" * 64, pixels_sha256="d" * 64).where(Capture.id == demo.id).execute()
        digest = pixels_sha256(load_image(DEMO_FRAME))  # duplicates are found by their pixels (issue 15)
        Capture.update(pixels_sha256=digest).where(Capture.id == failed_id).execute()
        try:
            store_upload(Sample.get_by_id(sample_id), "again.jpg", Path(DEMO_FRAME).read_bytes(),
                         actor=Actor(username="tech"), data=app.appliance.data, worker=None)
        except DuplicateFrame as error:
            assert str(error) == (f"again.jpg: the same image is already capture #{failed_id} of this sample, "
                                  "whose analysis failed: re-analyse that capture instead")
        else:
            raise AssertionError("the duplicate was stored")
    auth.login("tech")
    page = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert f'action="/captures/{failed_id}/reanalyse"' in page
    response = client.post(f"/captures/{failed_id}/reanalyse", data={"csrf_token": csrf_from(page)},
                           follow_redirects=True)
    assert f"Capture #{failed_id}: analysis queued again." in response.get_data(as_text=True)
    with app.app_context():
        assert Capture.get_by_id(failed_id).status == "queued"
    report("failed captures re-analysed (page, API, worker queue)", 1)


def test_sign_off_lists_failed_captures_and_needs_an_acknowledgement(app, client, auth):
    sample_id, cells, _failed_id = with_failed_capture(app)
    auth.login("path")
    headers = api_headers(client)
    for cell_id, value in ((cells[2], "blast"), (cells[3], "normal")):
        client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers)
    review = client.get(f"/api/samples/{sample_id}/review").get_json()
    line = "The analysis of frame(s) 2 failed: re-analyse them, or confirm that you sign without them."
    assert review["sign_blockers"] == [line]
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    assert 'name="acknowledge_failed"' in page and f"frame 2 ({FAILURE})" in page

    refused = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts."}, headers=headers)
    assert refused.status_code == 409 and line in refused.get_json()["error"]
    signed = client.post(f"/api/samples/{sample_id}/report/sign",
                         json={"conclusion": "Blasts.", "acknowledge_failed": True}, headers=headers)
    assert signed.status_code == 200, signed.get_json()
    report_id = signed.get_json()["report"]["id"]
    with app.app_context():
        event = AuditEvent.get(AuditEvent.action == "sign")
        assert event.detail == "signed without the failed frame(s) 2"
    shown = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert f"Capture 2: analysis failed ({FAILURE})" in shown


def test_page_sign_with_the_box_ticked_signs(app, client, auth):
    sample_id, cells, _failed_id = with_failed_capture(app)
    auth.login("path")
    headers = api_headers(client)
    for cell_id, value in ((cells[2], "blast"), (cells[3], "normal")):
        client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers)
    token = csrf_from(client.get(f"/samples/{sample_id}/review").get_data(as_text=True))
    refused = client.post(f"/samples/{sample_id}/report/sign", data={"csrf_token": token, "conclusion": "Blasts."})
    assert refused.status_code == 409 and "confirm that you sign without them" in refused.get_data(as_text=True)
    signed = client.post(f"/samples/{sample_id}/report/sign",
                         data={"csrf_token": token, "conclusion": "Blasts.", "acknowledge_failed": "y"})
    assert signed.status_code == 302
