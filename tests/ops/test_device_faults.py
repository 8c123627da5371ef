"""Device faults: the disk fills during capture, the camera is unplugged mid-capture, the model file is corrupt.

Real parts throughout: the web app on a real (tiny) tmpfs data directory, the
real FrameGrabber over a camera that fails at the Camera interface the way a
USB camera does, and a real ``allscope serve`` process started with a damaged
copy of the shipped model. Waits poll with a deadline; nothing asserts a time.
"""

from __future__ import annotations

import errno
import hashlib
import io
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, Auth, csrf_from
from fault_helpers import frame_png, small_tmpfs, wait_for
from figures import report

DEMO = sorted((REPO_ROOT / "device" / "demo").glob("*.jpg"))


def one_line_error(response) -> str:
    """The user-facing error line of a refused request (JSON error or the error page's message)."""
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    if response.mimetype == "application/json":
        message = response.get_json()["error"]
    else:
        found = re.search(r'<p class="error-message">(.*?)</p>', text, re.S) or \
            re.search(r'class="flash flash-error"[^>]*>(.*?)<', text, re.S)
        assert found, text[:400]
        message = found.group(1)
    assert "\n" not in message.strip() and len(message) < 300
    return message


def clinical_setup(app) -> int:
    """A patient with one sample; returns the sample id."""
    from device.store.records import Patient, Sample

    with app.app_context():
        return Sample.create(patient=Patient.create(identifier="P-FAULT", name="Fault Test")).id


# --- disk full during capture -----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs as a data directory (unmounted afterwards); skipped where mounting is not permitted."""
    with small_tmpfs(tmp_path / "var", 3) as mount_point:
        yield mount_point


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``directory`` up to ``leave`` free bytes (0: completely)."""
    filler = directory / "filler.bin"
    with open(filler, "ab") as out:
        chunk = b"\0" * 65536
        while True:
            free = shutil.disk_usage(directory).free - leave
            if free <= 0:
                break
            try:
                out.write(chunk[:min(len(chunk), free)])
                out.flush()
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
    return filler


def stored_state_ok(app, data_dir: Path) -> list[str]:
    """Every capture row has its complete image file; no temp or half-written file anywhere."""
    from device.store.records import Capture

    problems = []
    with app.app_context():
        for capture in Capture.select():
            path = data_dir / capture.image_path
            if not path.is_file():
                problems.append(f"capture {capture.id} has no image file")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != capture.sha256:
                problems.append(f"capture {capture.id}: image file does not match its hash (half written?)")
    for path in data_dir.rglob("*"):
        if path.is_file() and (path.name.endswith(".tmp") or path.name.startswith(".")):
            problems.append(f"temp file left behind: {path.relative_to(data_dir)}")
    for path in (data_dir / "images").rglob("*.png") if (data_dir / "images").exists() else ():
        if hashlib.sha256(path.read_bytes()).hexdigest() != path.stem:
            problems.append(f"half-written image {path.name}")
    return problems


def test_disk_full_during_upload_and_capture(small_disk, users_database):
    from device.camera.backends import ReplayCamera
    from device.camera.grabber import FrameGrabber
    from device.services.disk_guard import DiskGuard
    from device.store.records import Capture
    from webui.app import create_app

    shutil.copyfile(users_database, small_disk / "allscope.db")
    app = create_app(data_dir=small_disk, start_workers=False)
    app.testing = True
    # No reserve: this is the disk running out under a write (ENOSPC) itself. The disk-space guard, which refuses
    # a capture before that (507 below storage.reserve_mb), is tested in tests/services/test_storage_cli.py.
    app.appliance.disk_guard = DiskGuard(app.appliance.data, reserve_mb=0)
    grabber = FrameGrabber(ReplayCamera(hold_s=0), max_fps=50).start()
    app.appliance.grabber = grabber
    database = app.appliance.database
    try:
        sample_id = clinical_setup(app)
        client = app.test_client()
        assert Auth(client).login("tech").status_code == 302
        token = csrf_from(client.get(f"/samples/{sample_id}/capture").get_data(as_text=True))
        headers = {"X-CSRFToken": token}
        wait_for(lambda: grabber.ok, "the replay camera")

        def api_upload(index):
            return client.post(f"/api/samples/{sample_id}/captures", headers=headers,
                               data={"files": (io.BytesIO(frame_png(index)), f"frame-{index}.png")})

        # 1. completely full: the upload page, the API and a camera still each answer with one clear line
        filler = fill(small_disk)
        refusals = []
        page = client.post(f"/samples/{sample_id}/upload",
                           data={"csrf_token": token, "images": (io.BytesIO(frame_png(1)), "a.png")})
        refusals.append(page)
        refusals.append(api_upload(2))
        refusals.append(client.post(f"/api/samples/{sample_id}/capture", headers=headers))
        for response in refusals:
            assert response.status_code == 507, response.get_data(as_text=True)[:300]
            assert "storage is full" in one_line_error(response)
        with app.app_context():
            assert Capture.select().count() == 0
        assert stored_state_ok(app, small_disk) == []
        assert client.get(f"/api/samples/{sample_id}/captures").status_code == 200  # reading still works

        # 2. nearly full, at levels around the size of one frame: each upload is all there or not there at all
        filler.unlink()
        frame_bytes = len(frame_png(3))
        levels = [0, 4096, 65536, frame_bytes // 2, frame_bytes - 4096, frame_bytes + 4096, frame_bytes + 65536,
                  frame_bytes + 262144]
        outcomes = {"stored": 0, "refused": 0}
        for n, leave in enumerate(levels):
            filler = fill(small_disk, leave)
            response = api_upload(10 + n)
            if response.status_code == 201:
                outcomes["stored"] += 1
            else:
                assert response.status_code == 507, response.get_data(as_text=True)[:300]
                assert "storage is full" in one_line_error(response)
                outcomes["refused"] += 1
            problems = stored_state_ok(app, small_disk)
            assert problems == [], f"free {leave} bytes: {problems}"
            filler.unlink()
        assert outcomes["refused"] >= 3  # the levels below one frame cannot have stored anything

        # 3. space freed: the same app keeps working, and the database is intact
        stored_before = outcomes["stored"]
        assert api_upload(99).status_code == 201
        still = client.post(f"/api/samples/{sample_id}/capture", headers=headers)
        assert still.status_code == 201, still.get_data(as_text=True)
        assert client.get(f"/samples/{sample_id}/capture").status_code == 200
        with app.app_context():
            assert Capture.select().count() == stored_before + 2
            assert database.execute_sql("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert stored_state_ok(app, small_disk) == []
        report("disk-full: fill levels tried during upload/capture", len(levels) + 1)
        report("disk-full: records checked for image + hash after the faults", stored_before + 2)
    finally:
        grabber.stop()
        database.close()


# --- camera unplugged mid-capture ------------------------------------------------------------------------------

class UnpluggableCamera:
    """A replay camera behind a USB-like plug: unplugged, reads and stills fail the way OpenCVCamera's do
    and re-opening fails until it is plugged back in. ``unplug_after(n)`` pulls the plug after n more reads."""

    name = "opencv"

    def __init__(self):
        from device.camera.backends import ReplayCamera

        self.inner = ReplayCamera(hold_s=0)
        self.plugged = threading.Event()
        self.plugged.set()
        self.reads = 0
        self._unplug_at: int | None = None
        self.raw_error_on_still = False
        self.stills = 0

    def unplug_after(self, frames: int) -> None:
        self._unplug_at = self.reads + frames

    def _check(self) -> None:
        from device.camera.backends import CameraError

        if self._unplug_at is not None and self.reads >= self._unplug_at:
            self.plugged.clear()
            self._unplug_at = None
        if not self.plugged.is_set():
            raise CameraError("opencv camera: no frame from the device (unplugged?)")

    def open(self) -> None:
        from device.camera.backends import CameraError

        if not self.plugged.is_set():
            raise CameraError("opencv camera: cannot open device 0 (is the camera connected and not in use?)")
        self.inner.open()

    def read(self) -> np.ndarray:
        self._check()
        self.reads += 1
        return self.inner.read()

    def capture_still(self):
        if self.raw_error_on_still:  # the device vanishes during the still: the driver's own error, not ours
            self.raw_error_on_still = False
            raise OSError(errno.ENODEV, "No such device")
        self._check()
        frame, meta = self.inner.capture_still()
        self.stills += 1
        frame = frame.copy()  # the replayed fields repeat; a real stage moves: make every still a new frame
        # a 16 px block, not one pixel: stills are kept as JPEG q95, which can smooth a single pixel away
        frame[:16, :16] = (self.stills * 37 % 256, self.stills // 7 * 53 % 256, 3)
        return frame, meta

    def close(self) -> None:
        self.inner.close()


def test_camera_unplugged_mid_capture_and_back(app):
    from device.camera.grabber import FrameGrabber
    from device.store.records import Capture

    camera = UnpluggableCamera()
    grabber = FrameGrabber(camera, max_fps=50, stale_after_s=5.0, backoff_s=(0.05, 0.2)).start()
    app.appliance.grabber = grabber
    sample_id = clinical_setup(app)
    tech, admin = app.test_client(), app.test_client()
    Auth(tech).login("tech")
    Auth(admin).login("admin")
    token = csrf_from(tech.get(f"/samples/{sample_id}/capture").get_data(as_text=True))
    headers = {"X-CSRFToken": token}
    stored = cycles = 0
    try:
        for cycle in range(3):
            wait_for(lambda: grabber.ok, "the camera to deliver frames")
            response = tech.post(f"/api/samples/{sample_id}/capture", headers=headers)
            assert response.status_code == 201, response.get_data(as_text=True)
            stored += 1

            # the device disappears during a still: one clear line, nothing stored, the grabber goes on
            camera.raw_error_on_still = True
            vanished = tech.post(f"/api/samples/{sample_id}/capture", headers=headers)
            assert vanished.status_code == 503, vanished.get_data(as_text=True)[:300]
            assert one_line_error(vanished).startswith("Cannot capture: ")

            # unplugged after a few more frames: the grabber notices and says so everywhere
            camera.unplug_after(3)
            wait_for(lambda: grabber.status.startswith("camera lost"), "the grabber to report the loss")
            api = tech.post(f"/api/samples/{sample_id}/capture", headers=headers)
            assert api.status_code == 503
            message = one_line_error(api)
            assert message.startswith("Cannot capture: camera") and "unplugged" in message
            page = tech.post(f"/samples/{sample_id}/capture", data={"csrf_token": token}, follow_redirects=True)
            assert page.status_code == 200 and "Cannot capture: camera" in page.get_data(as_text=True)
            assert "camera" in tech.get("/api/camera/poll").get_json()["status"]
            assert tech.get("/camera/live.jpg").status_code == 503
            status_page = admin.get("/admin/status").get_data(as_text=True)
            assert "camera lost" in status_page or "camera unavailable" in status_page

            # plugged back in: it recovers on its own, the status page says so, captures work again
            camera.plugged.set()
            wait_for(lambda: grabber.ok, "the grabber to recover")
            assert "delivering frames" in admin.get("/admin/status").get_data(as_text=True)
            assert tech.get("/camera/live.jpg").status_code == 200
            cycles += 1
        with app.app_context():
            assert Capture.select().count() == stored
            assert all(c.source == "camera" and c.status == "queued" for c in Capture.select())
        report("camera: unplug/replug cycles survived (with a driver error mid-still)", cycles)
    finally:
        grabber.stop()
