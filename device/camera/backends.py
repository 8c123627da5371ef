"""The microscope camera: one small interface, three backends, and a live-view frame grabber.

    camera = make_camera("replay" | "opencv" | "picamera2", source)
    grabber = FrameGrabber(camera); grabber.start()
    grabber.jpeg()            # newest live frame, downscaled, encoded once per frame
    grabber.capture_still()   # full-resolution RGB + metadata, between live reads
    grabber.stop()

Backends import their libraries lazily, so a Pi without OpenCV's V4L support
or a laptop without picamera2 can still run the others; an absent library or
device is one :class:`CameraError` line. The grabber opens the camera in its
own thread and retries with back-off when it is missing or lost, so the web UI
keeps working (uploads, review) while the status line says what is wrong.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from device.config.choices import CAMERA_KINDS
from device.errors import AllscopeError
from device.resources import DEMO_FRAMES

log = logging.getLogger(__name__)

__all__ = ["Camera", "CameraError", "OpenCVCamera", "Picamera2Camera", "ReplayCamera",
           "jetson_pipeline", "make_camera", "picamera2_metadata"]


class CameraError(AllscopeError):
    """The camera backend or device is absent, busy or stopped delivering frames."""


class Camera:
    """A camera: ``open()``, ``read()`` (live RGB uint8), ``capture_still()`` -> (RGB, metadata), ``close()``."""

    name = "camera"

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray:
        raise NotImplementedError

    def capture_still(self) -> tuple[np.ndarray, dict]:
        return self.read(), {"backend": self.name}

    def close(self) -> None:
        pass


class ReplayCamera(Camera):
    """Plays a folder of image files in a loop: demos, tests and benches without a microscope.

    A real microscope shows one field until the stage moves, so each file is
    held for ``hold_s`` seconds (0: the next file on every read); a still is
    the frame being shown, and the stage then "moves": a still taken while the
    field of the previous still is still shown takes the next file instead, so
    two stills in a row are never the same frame (intake refuses a frame the
    sample already has as a duplicate) while the folder holds two files or more.
    """

    name = "replay"

    def __init__(self, folder: str | Path | None = None, hold_s: float = 3.0):
        self.folder = Path(folder) if folder else DEMO_FRAMES
        self.hold_s = hold_s
        self._files: list[Path] = []
        self._cache: dict[Path, np.ndarray] = {}
        self._index = -1
        self._shown_at = 0.0
        self._last_still = -1

    def open(self) -> None:
        from device.core.imageio import iter_image_files

        if not self.folder.is_dir():
            raise CameraError(f"replay camera: folder {self.folder} does not exist")
        self._files = list(iter_image_files(self.folder))
        if not self._files:
            raise CameraError(f"replay camera: no image files in {self.folder}")
        self._index, self._shown_at, self._last_still = -1, 0.0, -1

    def _current(self) -> tuple[Path, np.ndarray]:
        from device.core.imageio import load_image

        if not self._files:
            raise CameraError("replay camera is not open")
        path = self._files[self._index]
        if path not in self._cache:
            frame = load_image(path)  # ImageLoadError is an AllscopeError: the grabber reports it
            frame.flags.writeable = False
            self._cache[path] = frame
        return path, self._cache[path]

    def _advance(self) -> None:
        self._index = (self._index + 1) % max(len(self._files), 1)
        self._shown_at = time.monotonic()

    def read(self) -> np.ndarray:
        if self._index < 0 or time.monotonic() - self._shown_at >= self.hold_s:
            self._advance()
        return self._current()[1]

    def capture_still(self) -> tuple[np.ndarray, dict]:
        if self._index < 0:
            self.read()
        elif self._index == self._last_still and len(self._files) > 1:
            self._advance()  # the stage moved: the next field, not the one stored a moment ago
        path, frame = self._current()
        self._last_still = self._index
        return frame, {"backend": self.name, "file": path.name, "frame_index": self._index}

    def close(self) -> None:
        self._files, self._cache, self._index, self._last_still = [], {}, -1, -1


def jetson_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30) -> str:
    """A GStreamer pipeline for a CSI camera on a Jetson (``nvarguscamerasrc``) ending in BGR for OpenCV."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            f"appsink drop=true max-buffers=1")


class OpenCVCamera(Camera):
    """A USB/V4L2 camera by index or device path, or a GStreamer pipeline (``"jetson"`` for the CSI default)."""

    name = "opencv"

    def __init__(self, source: str | int | None = None):
        source = 0 if source in (None, "") else source
        if isinstance(source, str) and source.strip().isdigit():
            source = int(source)
        if source == "jetson":
            source = jetson_pipeline()
        self.source = source
        self._capture = None

    @property
    def is_pipeline(self) -> bool:
        return isinstance(self.source, str) and "!" in self.source

    def open(self) -> None:
        try:
            import cv2
        except ImportError:
            raise CameraError("opencv camera: OpenCV is not installed (pip install opencv-python-headless)") from None
        try:  # OpenCV's own warnings ("can't open camera by index") would duplicate our one line
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
        backend = cv2.CAP_GSTREAMER if self.is_pipeline else cv2.CAP_ANY
        capture = cv2.VideoCapture(self.source, backend)
        if not capture.isOpened():
            capture.release()
            what = "GStreamer pipeline" if self.is_pipeline else f"device {self.source!r}"
            raise CameraError(f"opencv camera: cannot open {what} (is the camera connected and not in use?)")
        self._capture = capture

    def read(self) -> np.ndarray:
        import cv2

        if self._capture is None:
            raise CameraError("opencv camera is not open")
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise CameraError("opencv camera: no frame from the device (unplugged?)")
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB)

    def capture_still(self) -> tuple[np.ndarray, dict]:
        import cv2

        if self._capture is not None and not self.is_pipeline:
            self._capture.grab()  # drop a frame the driver may have buffered before the button was pressed
        frame = self.read()
        meta = {"backend": self.name, "source": str(self.source)[:120]}
        for key, prop in (("exposure", cv2.CAP_PROP_EXPOSURE), ("gain", cv2.CAP_PROP_GAIN),
                          ("auto_white_balance", cv2.CAP_PROP_AUTO_WB),
                          ("white_balance_k", cv2.CAP_PROP_WB_TEMPERATURE)):
            value = self._capture.get(prop)
            if value not in (-1, 0) and np.isfinite(value):  # 0/-1: the driver does not report it
                meta[key] = float(value)
        return frame, meta

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class Picamera2Camera(Camera):
    """A Raspberry Pi camera through picamera2 (libcamera): a preview stream for the live view,
    a switch to the full-resolution still mode for a capture."""

    name = "picamera2"
    PREVIEW_SIZE = (1280, 960)

    def __init__(self, source: str | int | None = None):
        self.camera_num = int(source) if source not in (None, "") else 0
        self._camera = None
        self._still_config = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError("picamera2 is not installed: on a Raspberry Pi run 'sudo apt install python3-picamera2' "
                              "and create the virtualenv with --system-site-packages") from None
        try:
            camera = Picamera2(self.camera_num)
        except (RuntimeError, IndexError, OSError) as error:
            raise CameraError(f"picamera2: no camera {self.camera_num} ({_one_line(error)})") from None
        try:
            # "RGB888" arrays are ordered B, G, R per pixel (libcamera naming); read() reverses them.
            preview = camera.create_preview_configuration(main={"size": self.PREVIEW_SIZE, "format": "RGB888"})
            self._still_config = camera.create_still_configuration(main={"format": "RGB888"})
            camera.configure(preview)
            camera.start()
        except Exception as error:  # noqa: BLE001 - libcamera raises assorted types; one line for the user
            camera.close()
            raise CameraError(f"picamera2: cannot start camera {self.camera_num} ({_one_line(error)})") from None
        self._camera = camera

    def read(self) -> np.ndarray:
        if self._camera is None:
            raise CameraError("picamera2 camera is not open")
        try:
            return np.ascontiguousarray(self._camera.capture_array("main")[..., 2::-1])
        except Exception as error:  # noqa: BLE001
            raise CameraError(f"picamera2: no frame ({_one_line(error)})") from None

    def capture_still(self) -> tuple[np.ndarray, dict]:
        if self._camera is None:
            raise CameraError("picamera2 camera is not open")
        try:
            request = self._camera.switch_mode_and_capture_request(self._still_config)
            try:
                frame = np.ascontiguousarray(request.make_array("main")[..., 2::-1])
                raw_meta = dict(request.get_metadata())
            finally:
                request.release()
        except Exception as error:  # noqa: BLE001
            raise CameraError(f"picamera2: still capture failed ({_one_line(error)})") from None
        return frame, picamera2_metadata(raw_meta)

    def close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
            finally:
                self._camera.close()
                self._camera = None


def picamera2_metadata(raw: dict) -> dict:
    """The libcamera metadata worth keeping with a frame, under plain names."""
    meta = {"backend": Picamera2Camera.name}
    names = {"ExposureTime": "exposure_us", "AnalogueGain": "analogue_gain", "DigitalGain": "digital_gain",
             "ColourGains": "white_balance_gains", "ColourTemperature": "colour_temperature_k", "Lux": "lux",
             "FocusFoM": "focus_fom", "SensorTimestamp": "sensor_timestamp_ns"}
    for key, name in names.items():
        if key in raw:
            value = raw[key]
            meta[name] = [float(v) for v in value] if isinstance(value, (tuple, list)) else value
    return meta


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def make_camera(kind: str | None, source: str | int | None = None) -> Camera:
    """The camera for a configuration string; CameraError for an unknown kind."""
    kind = (kind or "replay").strip().lower()
    if kind == "replay":
        return ReplayCamera(source)
    if kind == "opencv":
        return OpenCVCamera(source)
    if kind == "picamera2":
        return Picamera2Camera(source)
    raise CameraError(f"unknown camera kind {kind!r} (use {', '.join(CAMERA_KINDS)})")
