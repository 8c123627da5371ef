"""Admin pages: the status page (model, worker, camera, disk) and the audit trail (newest first, filtered, no clinical content for admin-only accounts)."""

from __future__ import annotations

import hashlib
import time

from admin_helpers import admin, events, post, user  # noqa: F401  (admin: a fixture)
from conftest import REPO_ROOT, Auth, csrf_from

from device.inference.model_info import read_model_info
from device.store.records import Capture, Patient, Sample, audit, db_proxy, utcnow

# --- status ------------------------------------------------------------------------------------------------------

def add_analysed_capture(app) -> None:
    with app.app_context(), db_proxy.atomic():
        data = app.appliance.data
        image, digest = data.store_image((REPO_ROOT / "device" / "demo" / "BloodImage_00000.jpg").read_bytes())
        patient = Patient.create(identifier="P-100", name="Status Patient")
        sample = Sample.create(patient=patient)
        Capture.create(sample=sample, image_path=image, sha256=digest, source="upload", status="done",
                       flag="no_blasts_seen", cell_count=3, blast_count=0, review_count=1,
                       timings_ms={"total": 123.4}, analysed_at=utcnow())
        Capture.create(sample=sample, image_path=image, sha256=digest, source="upload", status="queued")


def test_status_page_without_worker_or_camera(app, admin):
    add_analysed_capture(app)
    response = admin.get("/admin/status")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    size = read_model_info(REPO_ROOT / "models" / "allscope_blast_int8.tflite").provenance["input_size"]
    for text in ("allscope_blast_int8.tflite", f"{size} × {size} px", "not started (workers are off)", "Free disk space",
                 "Database check</dt><dd>ok", "not configured (a later release adds encrypted sync)",
                 "Captures done</dt><dd>1", "Captures queued</dt><dd>1", "no blasts seen", "123 ms",
                 "login"):
        assert text in page, text
    digest = hashlib.sha256((REPO_ROOT / "models" / "allscope_blast_int8.tflite").read_bytes()).hexdigest()
    assert f"sha256 {digest[:12]}" in page


def test_status_page_with_the_real_worker_and_camera(app, admin):
    from device.camera.backends import ReplayCamera
    from device.camera.grabber import FrameGrabber
    from device.services.jobs import AnalysisWorker

    data = app.appliance.data
    worker = AnalysisWorker(data, REPO_ROOT / "models" / "allscope_blast_int8.tflite").start()
    grabber = FrameGrabber(ReplayCamera()).start()
    app.appliance.worker = worker
    app.appliance.grabber = grabber
    try:
        page = admin.get("/admin/status").get_data(as_text=True)
        assert "Analysis worker</dt><dd>running" in page and "not loaded yet" in page
        worker._load_analyzer()  # what the first analysis does
        deadline = time.monotonic() + 10
        while not grabber.ok and time.monotonic() < deadline:
            time.sleep(0.05)
        page = admin.get("/admin/status").get_data(as_text=True)
        assert "Inference backend</dt><dd>" in page and "not loaded yet" not in page
        assert "Camera backend</dt><dd>replay" in page and "delivering frames" in page
        assert "Analyses waiting</dt><dd>0" in page
    finally:
        worker.stop()
        grabber.stop()
    page = admin.get("/admin/status").get_data(as_text=True)
    assert "Analysis worker</dt><dd><span class=\"ad-dot\" aria-hidden=\"true\"></span>stopped" in page
    assert "camera stopped" in page


def test_status_warns_about_a_missing_model_file(app):
    from device.config.schema import AllscopeConfig, InferenceSection
    from webui.app import create_app

    configured = create_app(AllscopeConfig(inference=InferenceSection(model="/nowhere/gone.tflite")),
                            data_dir=app.appliance.data.root, start_workers=False)
    client = configured.test_client()
    assert Auth(client).login("admin").status_code == 302
    page = client.get("/admin/status").get_data(as_text=True)
    assert "/nowhere/gone.tflite: model file not found" in page and "ad-error" in page


# --- audit trail -------------------------------------------------------------------------------------------------

def test_audit_trail_is_newest_first_filtered_and_paginated(app, client, auth):
    assert auth.login("chief").status_code == 302  # admin and pathologist: sees clinical details too
    admin = client
    with app.app_context(), db_proxy.atomic():
        for i in range(60):
            audit("view", "patient", i, username="tech", detail=f"event {i}")
    page = admin.get("/admin/audit?action=view&user=tech").get_data(as_text=True)
    assert "60 events · page 1 of 2" in page
    assert page.index("event 59") < page.index("event 58") and "event 9<" not in page
    older = admin.get("/admin/audit?action=view&user=tech&page=2").get_data(as_text=True)
    assert "event 9<" in older and "event 10<" not in older and "Newer" in older
    assert "page=2" in page and "action=view" in page.split("Older")[0].rsplit("href=", 1)[1]
    logins = admin.get("/admin/audit?action=login").get_data(as_text=True)
    assert "event 1" not in logins and ">login<" in logins
    assert admin.get("/admin/audit?page=999").status_code == 200  # clamped to the last page
    token = csrf_from(admin.get("/admin/audit").get_data(as_text=True))
    assert admin.post("/admin/audit", data={"csrf_token": token}).status_code == 405  # read-only


def test_an_admin_without_a_clinical_role_reads_no_clinical_content_in_the_audit_trail(app, client, auth):
    from device.services.actor import Actor
    from device.services.patients import create_patient, update_patient

    with app.app_context():
        patient = create_patient({"identifier": "MRN-7731", "name": "Amina Secretname", "symptoms": "night sweats",
                                  "notes": "HIV positive"}, Actor("tech", "10.0.0.7"))
        update_patient(patient, {"notes": "HIV positive, on ART"}, Actor("tech", "10.0.0.7"))
        audit("capture", "capture", 3, username="tech", detail="uploaded amina_secretname_smear.jpg")
    assert auth.login("admin").status_code == 302
    clinical_text = ("Secretname", "secretname", "MRN-7731", "night sweats", "HIV")
    for url in ("/admin/audit", "/admin/audit?entity=patient", "/admin/audit?entity=capture", "/admin/status"):
        page = client.get(url).get_data(as_text=True)
        assert not [text for text in clinical_text if text in page], url
    page = client.get("/admin/audit?entity=patient").get_data(as_text=True)
    assert "clinical details shown to clinical roles only" in page  # who, what and when remain
    assert ">tech<" in page and ">create<" in page and ">update<" in page and "10.0.0.7" in page
    assert "clinical details shown" not in client.get("/admin/audit?entity=user").get_data(as_text=True)
    auth.logout()
    assert auth.login("chief").status_code == 302  # admin and pathologist: the whole trail
    page = client.get("/admin/audit?entity=patient").get_data(as_text=True)
    assert "Amina Secretname" in page and "on ART" in page and "clinical details shown" not in page
