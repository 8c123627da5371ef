"""Camera backends and the live-view FrameGrabber."""

from __future__ import annotations

import itertools
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from device.camera.backends import Camera, CameraError, OpenCVCamera, ReplayCamera, make_camera
from device.camera.grabber import FrameGrabber
from device.errors import AllscopeError

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_replay_loops_over_the_demo_frames_and_reports_metadata():
    camera = make_camera("replay", None)
    camera.hold_s = 0  # next file on every read
    camera.open()
    names = sorted(p.name for p in DEMO.glob("*.jpg"))
    seen = []
    for _ in range(len(names) + 1):
        frame = camera.read()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        seen.append(camera.capture_still()[1]["file"])
    assert seen[:len(names)] == names and seen[-1] == names[0]  # looped
    still, meta = camera.capture_still()  # a second still of the same field: the stage moved on
    assert meta == {"backend": "replay", "file": names[1], "frame_index": 1}
    assert still.shape[2] == 3
    camera.close()


def test_replay_stills_cycle_through_the_folder_never_the_same_twice_in_a_row():
    """Intake refuses a frame the sample already holds: two stills in a row must differ (issue 14)."""
    camera = ReplayCamera(DEMO, hold_s=3600)  # the live view holds one field for an hour
    camera.open()
    names = sorted(p.name for p in DEMO.glob("*.jpg"))
    camera.read()
    files = [camera.capture_still()[1]["file"] for _ in range(2 * len(names))]
    assert all(a != b for a, b in itertools.pairwise(files)), files
    assert files[:len(names)] == names and files[len(names):] == names  # the whole folder, then again
    camera.close()


def test_replay_of_a_single_file_folder_still_answers(tmp_path):
    import shutil

    shutil.copy(min(DEMO.glob("*.jpg")), tmp_path / "only.jpg")
    camera = ReplayCamera(tmp_path, hold_s=3600)
    camera.open()
    assert camera.capture_still()[1]["file"] == camera.capture_still()[1]["file"] == "only.jpg"


def test_replay_holds_a_field_like_a_microscope(tmp_path):
    camera = ReplayCamera(DEMO, hold_s=60)
    camera.open()
    first = camera.read()
    assert camera.read() is first


def test_replay_of_an_empty_folder_is_one_line(tmp_path):
    with pytest.raises(CameraError, match=r"^replay camera: no image files in .*$"):
        make_camera("replay", str(tmp_path)).open()


def test_opencv_missing_device_is_one_line_camera_error():
    camera = make_camera("opencv", "/dev/video-does-not-exist")
    with pytest.raises(CameraError) as info:
        camera.open()
    message = str(info.value)
    assert isinstance(info.value, AllscopeError) and "\n" not in message
    assert message.startswith("opencv camera: cannot open device '/dev/video-does-not-exist'")


def test_opencv_source_parsing():
    assert OpenCVCamera("2").source == 2 and OpenCVCamera(None).source == 0
    assert OpenCVCamera("jetson").is_pipeline and "nvarguscamerasrc" in OpenCVCamera("jetson").source
    assert not OpenCVCamera("/dev/video0").is_pipeline


def test_picamera2_absent_is_one_line_camera_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import boundary: as on a machine without it
    with pytest.raises(CameraError, match=r"^picamera2 is not installed: .*apt install python3-picamera2"):
        make_camera("picamera2").open()


def test_picamera2_path_turns_bgr_arrays_and_libcamera_metadata_into_rgb_and_plain_names(monkeypatch):
    """The Pi path against a stand-in for the picamera2 module (the only boundary mocked)."""
    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[..., 0] = 200  # blue in "RGB888" memory order
    calls = []

    class Request:
        def make_array(self, name):
            return bgr

        def get_metadata(self):
            return {"ExposureTime": 1200, "AnalogueGain": 1.5, "ColourGains": (1.9, 1.4), "Other": 1}

        def release(self):
            calls.append("release")

    class FakePicamera2:
        def __init__(self, num):
            calls.append(("init", num))

        def create_preview_configuration(self, main):
            return {"preview": main}

        def create_still_configuration(self, main):
            return {"still": main}

        def configure(self, config):
            calls.append(("configure", config))

        def start(self):
            calls.append("start")

        def capture_array(self, name):
            return bgr

        def switch_mode_and_capture_request(self, config):
            calls.append(("still", config))
            return Request()

        def stop(self):
            calls.append("stop")

        def close(self):
            calls.append("close")

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    camera = make_camera("picamera2", "1")
    camera.open()
    assert camera.read()[0, 0].tolist() == [0, 0, 200]
    still, meta = camera.capture_still()
    assert still[0, 0].tolist() == [0, 0, 200]
    assert meta == {"backend": "picamera2", "exposure_us": 1200, "analogue_gain": 1.5,
                    "white_balance_gains": [1.9, 1.4]}
    camera.close()
    assert calls[0] == ("init", 1) and "release" in calls and calls[-2:] == ["stop", "close"]


def test_unknown_camera_kind():
    with pytest.raises(CameraError, match="unknown camera kind 'webcam'"):
        make_camera("webcam")


class FlakyCamera(Camera):
    """Delivers numbered frames; raises while ``broken`` (a boundary fake for a lost USB camera)."""

    name = "flaky"

    def __init__(self):
        self.count = 0
        self.broken = False
        self.opens = 0
        self.closes = 0

    def open(self):
        if self.broken:
            raise CameraError("flaky: device unplugged")
        self.opens += 1

    def read(self):
        if self.broken:
            raise CameraError("flaky: read failed")
        self.count += 1
        return np.full((40, 2000, 3), self.count % 256, np.uint8)

    def close(self):
        self.closes += 1


def test_grabber_keeps_the_newest_frame_and_encodes_once_per_frame():
    camera = FlakyCamera()
    grabber = FrameGrabber(camera, max_fps=50, max_width=500).start()
    try:
        seq = grabber.wait_for_frame(0, timeout=5)
        assert seq >= 1 and grabber.ok
        seq2 = grabber.wait_for_frame(seq, timeout=5)
        assert seq2 > seq
        first = grabber.jpeg()
        latest_seq, frame = grabber.latest()
        assert first[0] <= latest_seq and frame[0, 0, 0] == latest_seq % 256  # newest frame, not a queue
        import cv2

        decoded = cv2.imdecode(np.frombuffer(first[1], np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape[1] == 500  # downscaled for the live view
        with grabber._condition:  # hold new frames back: the same frame must not be encoded twice
            again = grabber.jpeg()
            assert again is grabber.jpeg()
    finally:
        grabber.stop()
    assert not grabber.running and camera.closes >= 1


def test_grabber_rate_is_bounded():
    camera = FlakyCamera()
    grabber = FrameGrabber(camera, max_fps=5).start()
    time.sleep(1.0)
    grabber.stop()
    assert 3 <= camera.count <= 7


def test_grabber_reports_camera_loss_retries_and_recovers():
    camera = FlakyCamera()
    grabber = FrameGrabber(camera, max_fps=50, backoff_s=(0.05, 0.2)).start()
    try:
        assert _wait(lambda: grabber.ok)
        camera.broken = True
        assert _wait(lambda: grabber.status.startswith("camera lost: flaky: read failed"))
        assert grabber.jpeg() is None
        with pytest.raises(CameraError, match="camera"):
            grabber.capture_still()
        assert _wait(lambda: "camera unavailable: flaky: device unplugged; retrying in" in grabber.status)
        camera.broken = False
        assert _wait(lambda: grabber.ok)
        assert camera.opens >= 2
        frame, meta = grabber.capture_still()
        assert meta == {"backend": "flaky"}
    finally:
        grabber.stop()


def test_grabber_flags_a_camera_that_hangs_without_an_error():
    class Hanging(FlakyCamera):
        def read(self):
            if self.count >= 1:
                time.sleep(0.3)
            return super().read()

    grabber = FrameGrabber(Hanging(), max_fps=50, stale_after_s=0.1).start()
    try:
        assert _wait(lambda: grabber.status.startswith("camera lost: no frame for"))
    finally:
        grabber.stop()


def test_stop_wakes_waiting_viewers():
    grabber = FrameGrabber(FlakyCamera(), max_fps=50).start()
    seq = grabber.wait_for_frame(0, timeout=5)
    grabber.stop()
    started = time.monotonic()
    grabber.wait_for_frame(seq + 10_000, timeout=5)
    assert time.monotonic() - started < 1.0 and grabber.status == "camera stopped"
