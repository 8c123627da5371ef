"""Issue 13 item 5: a frame added after sign-off would be analysed but never reviewed. Uploads and camera stills
to a sample whose report is signed are refused (409, with the reason) unless an amendment is open, and the
capture pages do not offer signed samples."""

from __future__ import annotations

import io
from pathlib import Path

from conftest import csrf_from
from figures import report
from review_data import add_sample, api_headers

from device.store.records import Capture, Patient, Sample

OTHER_FRAME = (Path(__file__).resolve().parents[2] / "device" / "demo" / "BloodImage_00010.jpg").read_bytes()


def signed_sample(app, client, auth) -> tuple[int, int]:
    """(sample id, report id) of a signed report; logged in as the pathologist who signed it."""
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    for cell_id, value in ((cells[2], "blast"), (cells[3], "normal")):
        client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers)
    response = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts."}, headers=headers)
    assert response.status_code == 200
    return sample_id, response.get_json()["report"]["id"]


def api_upload(client, sample_id: int):
    return client.post(f"/api/samples/{sample_id}/captures", data={"files": [(io.BytesIO(OTHER_FRAME), "late.jpg")]},
                       content_type="multipart/form-data", headers=api_headers(client, "/"))


def captures(app, sample_id: int) -> int:
    with app.app_context():
        return Capture.select().where(Capture.sample == sample_id).count()


def test_api_upload_and_still_to_a_signed_sample_are_409_with_the_reason(app, client, auth):
    sample_id, _ = signed_sample(app, client, auth)
    response = api_upload(client, sample_id)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error == ("Report version 1 of this sample is signed: a frame added now would never be reviewed. "
                     "Start an amendment to add frames.")
    still = client.post(f"/api/samples/{sample_id}/capture", headers=api_headers(client, "/"))
    assert still.status_code == 409 and still.get_json()["error"] == error
    assert captures(app, sample_id) == 1
    report("frames refused after sign-off (upload, still, page)", 2)


def test_an_open_amendment_takes_frames_again(app, client, auth):
    sample_id, report_id = signed_sample(app, client, auth)
    token = csrf_from(client.get(f"/samples/{sample_id}/review").get_data(as_text=True))
    assert client.post(f"/reports/{report_id}/amend", data={"csrf_token": token, "reason": "more fields"}
                       ).status_code == 302
    response = api_upload(client, sample_id)
    assert response.status_code == 201, response.get_json()
    assert captures(app, sample_id) == 2


def test_capture_pages_do_not_offer_a_signed_sample(app, client, auth):
    sample_id, _ = signed_sample(app, client, auth)
    with app.app_context():
        open_id = Sample.create(patient=Patient.get(Patient.identifier == "MRN-0042"), created_by="tech").id
    auth.logout()
    auth.login("tech")
    choose = client.get("/capture").get_data(as_text=True)
    assert f"/samples/{open_id}/capture" in choose and f"/samples/{sample_id}/capture" not in choose
    page = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert "is signed: a frame added now would never be reviewed" in page
    assert f"/samples/{sample_id}/upload" not in page and 'class="btn primary big capture-button"' not in page
    token = csrf_from(client.get(f"/samples/{open_id}/capture").get_data(as_text=True))
    response = client.post(f"/samples/{sample_id}/upload", content_type="multipart/form-data",
                           data={"csrf_token": token, "images": [(io.BytesIO(OTHER_FRAME), "late.jpg")]},
                           follow_redirects=True)
    assert "is signed: a frame added now would never be reviewed" in response.get_data(as_text=True)
    assert captures(app, sample_id) == 1
    report("frames refused after sign-off (upload, still, page)", 1)
