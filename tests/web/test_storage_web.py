"""Storage growth in the web UI (issue 15): the upload kept bit-exact and served as such, crops as JPEG, a pruned
(or missing) frame shown from its thumbnail on every page, the disk-space guard's 507 and its warnings. Real app,
real SQLite, real demo frames, the real model where analysis runs."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
from conftest import csrf_from
from PIL import Image

from device.resources import DEFAULT_MODEL
from device.services.disk_guard import DiskGuard
from device.services.jobs import AnalysisWorker
from device.services.retention import prune_capture
from device.store.records import Capture, Cell, Patient, Sample

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"
JPEG = (DEMO / "BloodImage_00000.jpg").read_bytes()


def _sample(app) -> int:
    with app.app_context():
        return Sample.create(patient=Patient.create(identifier="H-200", name="Ada Example"), created_by="tech").id


def _api_upload(client, sample_id: int, content: bytes = JPEG, name: str = "frame.jpg"):
    token = csrf_from(client.get("/").get_data(as_text=True))
    return client.post(f"/api/samples/{sample_id}/captures", headers={"X-CSRFToken": token},
                       content_type="multipart/form-data", data={"files": [(io.BytesIO(content), name)]})


@pytest.fixture
def analysed(app, client, auth):
    """A tech's upload of a real frame, analysed by the real model: (sample id, capture id)."""
    sample_id = _sample(app)
    auth.login("tech")
    response = _api_upload(client, sample_id)
    assert response.status_code == 201, response.get_json()
    capture_id = response.get_json()["captures"][0]
    with app.app_context():
        worker = AnalysisWorker(app.appliance.data, DEFAULT_MODEL).start()
        try:
            worker.enqueue(capture_id)
            assert worker.wait_idle(120)
        finally:
            worker.stop()
        assert Capture.get_by_id(capture_id).status == "done"
    return sample_id, capture_id


def test_the_frame_comes_back_as_uploaded_and_crops_are_jpeg(app, client, analysed):
    _sample_id, capture_id = analysed
    frame = client.get(f"/captures/{capture_id}/image")
    assert frame.status_code == 200 and frame.data == JPEG and frame.mimetype == "image/jpeg"
    with app.app_context():
        capture = Capture.get_by_id(capture_id)
        cell = Cell.select().where(Cell.capture == capture_id).first()
    assert capture.sha256 == hashlib.sha256(frame.data).hexdigest()
    crop = client.get(f"/cells/{cell.id}/crop")
    assert crop.status_code == 200 and crop.mimetype == "image/jpeg" and crop.data[:3] == b"\xff\xd8\xff"
    assert f"cell-{cell.id}.jpg" in crop.headers["Content-Disposition"]


def _prune(app, capture_id: int) -> Capture:
    with app.app_context():
        prune_capture(app.appliance.data, Capture.get_by_id(capture_id), "test")
        return Capture.get_by_id(capture_id)


@pytest.mark.parametrize("how", ["pruned", "file missing"])
def test_a_pruned_or_missing_frame_is_shown_from_its_thumbnail(app, client, auth, analysed, how):
    sample_id, capture_id = analysed
    if how == "pruned":
        capture = _prune(app, capture_id)
        assert not app.appliance.data.exists(capture.image_path)
    else:  # a row whose file vanished (a crash, a card error): handled as pruned
        with app.app_context():
            capture = Capture.get_by_id(capture_id)
        app.appliance.data.absolute(capture.image_path).unlink()
    thumb = app.appliance.data.read_bytes(capture.thumb_path)
    full = client.get(f"/captures/{capture_id}/image")
    assert full.status_code == 200 and full.data == thumb and full.mimetype == "image/jpeg"
    small = client.get(f"/captures/{capture_id}/image?w=320")
    assert small.status_code == 200 and Image.open(io.BytesIO(small.data)).size == (320, 240)
    for page in (f"/samples/{sample_id}/capture", f"/samples/{sample_id}/results", f"/samples/{sample_id}"):
        response = client.get(page)
        assert response.status_code == 200, page
    auth.logout()
    auth.login("path")
    review = client.get(f"/samples/{sample_id}/review")
    assert review.status_code == 200 and f"/captures/{capture_id}/image" in review.get_data(as_text=True)


def test_the_pdf_report_of_a_pruned_frame_still_holds_its_picture(app, client, auth, analysed):
    sample_id, capture_id = analysed
    auth.logout()
    auth.login("path")
    token = csrf_from(client.get("/").get_data(as_text=True))
    signed = client.post(f"/api/samples/{sample_id}/report/sign", headers={"X-CSRFToken": token},
                         json={"conclusion": "Reviewed.", "override_reason": "one demo frame"})
    assert signed.status_code == 200, signed.get_json()
    report_id = signed.get_json()["report"]["id"]
    before = client.get(f"/reports/{report_id}.pdf").data
    _prune(app, capture_id)
    after = client.get(f"/reports/{report_id}.pdf").data
    images = re.compile(rb"/Subtype\s*/Image")
    assert len(images.findall(after)) == len(images.findall(before)) >= 2  # the frame and the crops


def test_a_capture_at_the_reserve_is_refused_with_507_and_one_line(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    app.appliance.disk_guard = DiskGuard(app.appliance.data, reserve_mb=10**9)  # no disk has that much free
    response = _api_upload(client, sample_id)
    assert response.status_code == 507
    error = response.get_json()["error"]
    assert error.startswith("Capture refused: only ") and "\n" not in error
    page = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert 'id="disk-space"' in page and "Capture refused" in page
    token = csrf_from(page)
    form = client.post(f"/samples/{sample_id}/upload", content_type="multipart/form-data", follow_redirects=True,
                       data={"csrf_token": token, "images": [(io.BytesIO(JPEG), "frame.jpg")]})
    assert form.status_code == 200 and "Capture refused" in form.get_data(as_text=True)
    with app.app_context():
        assert Capture.select().count() == 0


def test_the_status_and_capture_pages_warn_with_days_left(app, client, auth, analysed):
    sample_id, _capture_id = analysed
    app.appliance.disk_guard = DiskGuard(app.appliance.data, reserve_mb=1, warn_days=10**6)  # always "soon"
    page = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert 'id="disk-space"' in page and "days at the recent rate" in page
    auth.logout()
    auth.login("admin")
    status = client.get("/admin/status").get_data(as_text=True)
    assert "Space left" in status and "days left" in status and "captures refused below" in status
    app.appliance.disk_guard = DiskGuard(app.appliance.data, reserve_mb=1, warn_days=1)
    auth.logout()
    auth.login("tech")
    assert 'id="disk-space"' not in client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
