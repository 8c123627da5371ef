"""Capture pages and API with the real app, real SQLite, real demo frames and (where analysis runs) the real model."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROLE_USERS, TEST_PASSWORD, Auth, csrf_from

from device.config.schema import AllscopeConfig, CameraSection
from device.core.imageio import load_image, load_image_bytes
from device.store.records import AuditEvent, Capture, Cell, Patient, Sample

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"
JPEG = (DEMO / "BloodImage_00000.jpg").read_bytes()
JPEG2 = (DEMO / "BloodImage_00010.jpg").read_bytes()


def _sample(app) -> int:
    with app.app_context():
        patient = Patient.create(identifier="H-100", name="Ada Example")
        return Sample.create(patient=patient, created_by="tech").id


def _page_token(client, sample_id: int) -> str:
    return csrf_from(client.get(f"/samples/{sample_id}/capture").get_data(as_text=True))


def _upload(client, sample_id: int, *files: tuple[bytes, str]):
    token = _page_token(client, sample_id)
    data = {"csrf_token": token, "images": [(io.BytesIO(content), name) for content, name in files]}
    return client.post(f"/samples/{sample_id}/upload", data=data, content_type="multipart/form-data",
                       follow_redirects=True)


def test_upload_of_a_real_jpeg_is_kept_as_received_and_audited(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    response = _upload(client, sample_id, (JPEG, "../../etc/Blood Image 1.jpg"))
    assert response.status_code == 200
    assert "Stored 1 image: analysis queued." in response.get_data(as_text=True)
    with app.app_context():
        capture = Capture.get()
        assert (capture.source, capture.status, capture.original_name) == ("upload", "queued", "etc_Blood_Image_1.jpg")
        stored = app.appliance.data.absolute(capture.image_path)
        assert stored.suffix == ".jpg" and stored.read_bytes() == JPEG  # the file as it arrived (issue 15)
        assert np.array_equal(load_image(stored), load_image_bytes(JPEG, "x"))  # decodes to what was analysed
        assert (capture.width, capture.height) == (640, 480) and capture.created_by == "tech"
        event = AuditEvent.get(AuditEvent.action == "create", AuditEvent.entity == "capture")
        assert event.after["sha256"] == capture.sha256 and event.after["source"] == "upload"
        assert event.after["original_name"] == "etc_Blood_Image_1.jpg" and event.username == "tech"


def test_text_file_named_png_gets_one_clear_line_and_nothing_is_stored(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    response = _upload(client, sample_id, (b"patient list\nnot an image\n", "frame.png"))
    page = response.get_data(as_text=True)
    assert "frame.png: not a readable image (the file contains text)" in page
    assert "Traceback" not in page
    with app.app_context():
        assert Capture.select().count() == 0
        assert not list((app.appliance.data.root / "images").glob("**/*.png"))


def test_several_files_at_once_bad_ones_do_not_stop_good_ones(app, client, auth):
    sample_id = _sample(app)
    auth.login("path")
    response = _upload(client, sample_id, (JPEG, "a.jpg"), (b"GIF89a" + b"\x00" * 40, "b.gif"), (JPEG2, "c.jpg"),
                       (JPEG, "a-again.jpg"))
    page = response.get_data(as_text=True)
    assert "Stored 2 images" in page
    assert "b.gif: unsupported image format GIF" in page
    assert re.search(r"a-again.jpg: the same image is already capture #\d+ of this sample", page)
    with app.app_context():
        assert sorted(c.original_name for c in Capture.select()) == ["a.jpg", "c.jpg"]


def test_upload_form_without_a_file_shows_the_message_next_to_the_field(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    response = client.post(f"/samples/{sample_id}/upload", data={"csrf_token": _page_token(client, sample_id)},
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert 'class="field-error">Choose at least one image file.' in response.get_data(as_text=True)


def test_capture_without_a_running_camera_is_one_line(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    response = client.post(f"/samples/{sample_id}/capture", data={"csrf_token": _page_token(client, sample_id)},
                           follow_redirects=True)
    assert "Cannot capture: no camera is running on this device" in response.get_data(as_text=True)
    api = client.post(f"/api/samples/{sample_id}/capture", headers={"X-CSRFToken": _page_token(client, sample_id)})
    assert api.status_code == 503 and api.get_json() == {"error": "Cannot capture: no camera is running on this device"}


def test_api_upload_per_file_results_and_errors(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    headers = {"X-CSRFToken": _page_token(client, sample_id)}
    response = client.post(f"/api/samples/{sample_id}/captures", headers=headers, content_type="multipart/form-data",
                           data={"files": [(io.BytesIO(JPEG), "one.jpg"), (io.BytesIO(b"<html>x</html>"), "two.png")]})
    assert response.status_code == 201
    body = response.get_json()
    assert len(body["captures"]) == 1
    assert body["files"][1] == {"name": "two.png", "error": "two.png: not a readable image (the file is an HTML "
                                                             "page, e.g. a saved error page)"}
    bad = client.post(f"/api/samples/{sample_id}/captures", headers=headers, content_type="multipart/form-data",
                      data={"files": [(io.BytesIO(JPEG[: len(JPEG) // 2]), "cut.jpg")]})
    assert bad.status_code == 415 and bad.get_json()["error"] == "cut.jpg: image truncated or corrupt"
    duplicate = client.post(f"/api/samples/{sample_id}/captures", headers=headers, content_type="multipart/form-data",
                            data={"files": [(io.BytesIO(JPEG), "one.jpg")]})
    assert duplicate.status_code == 409
    empty = client.post(f"/api/samples/{sample_id}/captures", headers=headers, data={})
    assert empty.status_code == 400 and "error" in empty.get_json()
    assert client.post("/api/samples/999/captures", headers=headers).status_code == 404
    no_csrf = client.post(f"/api/samples/{sample_id}/captures", content_type="multipart/form-data",
                          data={"files": [(io.BytesIO(JPEG2), "x.jpg")]})
    assert no_csrf.status_code == 400 and "error" in no_csrf.get_json()


def test_api_read_and_poll(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    _upload(client, sample_id, (JPEG, "one.jpg"))
    with app.app_context():
        capture_id = Capture.get().id
    poll = client.get(f"/api/captures/{capture_id}/poll").get_json()
    assert poll["status"] == "queued" and poll["stage"] == "queued (analysis is not running on this device)"
    assert set(poll) == {"id", "status", "stage", "flag", "cell_count", "blast_count", "review_count", "error",
                             "problems", "advice"}
    detail = client.get(f"/api/captures/{capture_id}").get_json()
    assert detail["cells"] == [] and detail["sample_id"] == sample_id and "image_path" not in detail
    listing = client.get(f"/api/samples/{sample_id}/captures").get_json()
    assert [c["id"] for c in listing["captures"]] == [capture_id]
    assert client.get("/api/captures/999/poll").status_code == 404


def test_polling_does_not_keep_an_idle_session_alive(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    _upload(client, sample_id, (JPEG, "one.jpg"))
    with client.session_transaction() as session:
        session["last_seen"] = before = time.time() - 100
    assert client.get("/api/captures/1/poll").status_code == 200
    assert client.get("/api/camera/poll").get_json() == {"status": "no camera is running on this device",
                                                         "ok": False, "running": False}
    with client.session_transaction() as session:
        assert session["last_seen"] == before


def test_images_thumbnails_and_path_traversal(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    _upload(client, sample_id, (JPEG, "one.jpg"))
    full = client.get("/captures/1/image")
    assert full.status_code == 200 and full.mimetype == "image/jpeg" and full.data == JPEG
    thumb = client.get("/captures/1/image?w=200")
    assert thumb.mimetype == "image/jpeg" and load_image_bytes(thumb.data, "t").shape == (150, 200, 3)
    with app.app_context():
        Capture.update(image_path="../../../etc/passwd").execute()
    assert client.get("/captures/1/image").status_code == 404
    assert client.get("/cells/1/crop").status_code == 404


def test_capture_pages_list_samples_and_audit_the_view(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    choose = client.get("/capture").get_data(as_text=True)
    assert "H-100" in choose and "Ada Example" in choose and f"/samples/{sample_id}/capture" in choose
    page = client.get(f"/samples/{sample_id}/capture")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Upload" in html and "Capture" in html
    assert "<script>" not in html and "style=" not in html and " onclick" not in html  # strict CSP
    assert client.get("/samples/999/capture").status_code == 404
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "view", AuditEvent.entity == "sample",
                                         AuditEvent.entity_id == str(sample_id)).count() == 1


PAGES = ("/capture", "/samples/1/capture", "/captures/1/image", "/cells/1/crop", "/camera/live.jpg", "/camera/live.mjpg")
API = (("post", "/api/samples/1/captures"), ("post", "/api/samples/1/capture"), ("get", "/api/samples/1/captures"),
       ("get", "/api/captures/1"), ("get", "/api/captures/1/poll"), ("get", "/api/camera/poll"))


def test_roles_admin_only_is_refused_and_anonymous_must_log_in(app, client, auth):
    _sample(app)
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    for method, path in API:
        if method == "get":
            assert client.get(path).get_json() == {"error": "log in first"}, path
    auth.login("admin")
    headers = {"X-CSRFToken": csrf_from(client.get("/login").get_data(as_text=True))}
    for path in PAGES:
        assert client.get(path).status_code == 403, path
    for method, path in API:
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 403, path
        assert response.get_json() == {"error": "Your role does not allow this page or action."}


# --- with the background services running: replay camera over the demo frames and the real model -------------

@pytest.fixture
def live_app(tmp_path):
    from webui.app import create_app

    application = create_app(AllscopeConfig(camera=CameraSection(backend="replay")), data_dir=tmp_path / "var",
                             start_workers=True)
    application.testing = True
    with application.app_context():
        from device.services import accounts

        for username, roles in ROLE_USERS.items():
            accounts.create_user(username, TEST_PASSWORD, roles, actor="test")
    yield application
    application.appliance.stop()
    assert not application.appliance.worker.alive
    assert not application.appliance.grabber.running


def _wait_status(client, capture_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    stages = []
    while time.monotonic() < deadline:
        body = client.get(f"/api/captures/{capture_id}/poll").get_json()
        stages.append(body["stage"])
        if body["status"] in ("done", "failed"):
            return body, stages
        time.sleep(0.05)
    raise AssertionError(f"capture {capture_id} still {stages[-1]!r}")


def test_camera_still_is_stored_analysed_and_served(live_app):
    client = live_app.test_client()
    auth = Auth(client)
    sample_id = _sample(live_app)
    auth.login("tech")
    live_app.appliance.camera.hold_s = 3600  # the microscope stays on one field
    grabber = live_app.appliance.grabber
    grabber.wait_for_frame(0, timeout=10)
    assert client.get("/api/camera/poll").get_json()["ok"] is True
    response = client.post(f"/samples/{sample_id}/capture", data={"csrf_token": _page_token(client, sample_id)},
                           follow_redirects=True)
    assert "analysis queued" in response.get_data(as_text=True)
    with live_app.app_context():
        capture = Capture.get()
        assert capture.source == "camera" and capture.camera_meta["backend"] == "replay"
        assert capture.camera_meta["file"].endswith(".jpg")
    body, stages = _wait_status(client, capture.id)
    assert body["status"] == "done", body
    assert all(re.fullmatch(r"queued|analysing: (loading the model|finding cells)|classifying \d+ cells|saving results"
                            r"|done", stage) for stage in stages), stages
    # issue 14: the replay camera moves on to the next file for the next still, so a second still in a row is
    # stored (it used to be the same frame, refused as a duplicate)
    again = client.post(f"/api/samples/{sample_id}/capture", headers={"X-CSRFToken": _page_token(client, sample_id)})
    assert again.status_code == 201, again.get_json()
    assert again.get_json()["capture"]["camera_meta"]["file"] != capture.camera_meta["file"]
    detail = client.get(f"/api/captures/{capture.id}").get_json()
    assert detail["cell_count"] == sum(1 for c in detail["cells"] if not c["edge"]) > 0
    assert {"id", "x", "y", "w", "h", "ai_label", "p_blast", "needs_review", "edge", "reviewer_label"} <= \
        set(detail["cells"][0])
    crop = client.get(detail["cells"][0]["crop_url"])
    assert crop.status_code == 200 and load_image_bytes(crop.data, "crop").ndim == 3
    with live_app.app_context():
        assert Cell.select().where(Cell.capture == capture.id).count() == len(detail["cells"])


def test_camera_setting_change_restarts_the_grabber_and_a_bad_device_is_a_status_line(live_app):
    from device.services.settings import DeviceSettings

    client = live_app.test_client()
    Auth(client).login("tech")
    old = live_app.appliance.grabber
    assert live_app.appliance.apply(DeviceSettings(camera_kind="opencv", camera_source="/dev/video-gone"),
                                    {"camera_kind", "camera_source"}) == ""
    assert not old.running and live_app.appliance.camera.name == "opencv"
    deadline = time.monotonic() + 10
    while "retrying" not in client.get("/api/camera/poll").get_json()["status"] and time.monotonic() < deadline:
        time.sleep(0.05)
    body = client.get("/api/camera/poll").get_json()
    assert body["ok"] is False and body["status"].startswith(
        "camera unavailable: opencv camera: cannot open device '/dev/video-gone'")


def test_live_jpeg_and_mjpeg_stream_ends_when_the_client_goes(live_app):
    client = live_app.test_client()
    Auth(client).login("path")
    live_app.appliance.grabber.wait_for_frame(0, timeout=10)
    still = client.get("/camera/live.jpg")
    assert still.status_code == 200 and load_image_bytes(still.data, "live").shape[1] <= 960
    stream = client.get("/camera/live.mjpg", buffered=False)
    assert stream.mimetype == "multipart/x-mixed-replace"
    parts = stream.response
    first = next(iter(parts))
    assert first.startswith(b"--frame\r\nContent-Type: image/jpeg\r\n")
    jpeg = first.split(b"\r\n\r\n", 1)[1][:-2]
    assert load_image_bytes(jpeg, "part").ndim == 3
    stream.close()  # the client went away: the generator is closed
    with pytest.raises(StopIteration):
        next(iter(parts))
