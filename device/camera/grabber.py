"""FrameGrabber: one thread that keeps the newest camera frame for any number of live viewers.

Like picamera2's frame-server example, the newest frame sits behind a
``threading.Condition`` that viewers wait on. Reads are capped at ``max_fps``;
the JPEG for the live view (downscaled to ``max_width``) is encoded at most
once per new frame, on first demand, so ten viewers cost what one does. A
missing or lost camera becomes a status line and a retry with back-off;
``status`` also reports a camera that stopped delivering without an error
(a hung driver).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from device.camera.backends import Camera, CameraError
from device.errors import AllscopeError

log = logging.getLogger(__name__)


class FrameGrabber:
    def __init__(self, camera: Camera, max_fps: float = 5.0, max_width: int = 960, jpeg_quality: int = 80,
                 stale_after_s: float = 5.0, backoff_s: tuple[float, float] = (1.0, 30.0)):
        self.camera = camera
        self.interval = 1.0 / max_fps
        self.max_width = max_width
        self.jpeg_quality = jpeg_quality
        self.stale_after_s = stale_after_s
        self.backoff_s = backoff_s
        self._condition = threading.Condition()
        self._camera_lock = threading.Lock()  # one caller of the camera at a time: live reads and stills
        self._encode_lock = threading.Lock()
        self._stop = threading.Event()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._frame_at = 0.0
        self._jpeg: tuple[int, bytes] | None = None
        self._opened = False
        self._problem = "starting"
        self._thread = threading.Thread(target=self._run, name="allscope-frame-grabber", daemon=True)

    # --- thread ------------------------------------------------------------------------------------------
    def start(self) -> "FrameGrabber":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._condition:
            self._condition.notify_all()  # wake viewers so their streams end
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._close_camera()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if not self._opened:
                    with self._camera_lock:
                        self.camera.open()
                        self._opened = True
                    log.info("camera %s opened", self.camera.name)
                with self._camera_lock:
                    frame = self.camera.read()
                self._publish(frame)
                delay = self.backoff_s[0]
            except Exception as error:  # noqa: BLE001 - any camera failure: report, close, retry later
                message = str(error) if isinstance(error, AllscopeError) else f"{type(error).__name__}: {error}"
                message = " ".join(message.split())[:200]
                lost = self._opened
                self._close_camera()
                self._problem = f"{'camera lost' if lost else 'camera unavailable'}: {message}; retrying in {delay:.0f} s"
                log.warning("%s", self._problem)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])
                continue
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _close_camera(self) -> None:
        with self._camera_lock:
            if self._opened:
                self._opened = False
                try:
                    self.camera.close()
                except Exception:  # noqa: BLE001 - closing a lost device may fail; it is gone either way
                    log.debug("camera close failed", exc_info=True)

    def _publish(self, frame: np.ndarray) -> None:
        with self._condition:
            self._frame = frame
            self._seq += 1
            self._frame_at = time.monotonic()
            self._problem = ""
            self._condition.notify_all()

    # --- viewers -----------------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """"ok", or one line saying why there is no live picture."""
        if self._stop.is_set():
            return "camera stopped"
        if self._problem:
            return self._problem
        age = time.monotonic() - self._frame_at
        if age > self.stale_after_s:
            return f"camera lost: no frame for {age:.0f} s"
        return "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def latest(self) -> tuple[int, np.ndarray | None]:
        """(sequence number, newest frame); the frame is shared: do not modify it."""
        with self._condition:
            return self._seq, self._frame

    def wait_for_frame(self, after_seq: int, timeout: float = 2.0) -> int:
        """Block until a frame newer than ``after_seq`` exists (or timeout / stop); returns the newest seq."""
        with self._condition:
            self._condition.wait_for(lambda: self._seq > after_seq or self._stop.is_set(), timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes] | None:
        """(seq, JPEG bytes) of the newest frame, downscaled; None before the first frame or when not ok."""
        if not self.ok:
            return None
        seq, frame = self.latest()
        if frame is None:
            return None
        with self._encode_lock:
            if self._jpeg is None or self._jpeg[0] != seq:
                self._jpeg = (seq, encode_jpeg(frame, self.max_width, self.jpeg_quality))
            return self._jpeg

    def capture_still(self, timeout: float = 10.0) -> tuple[np.ndarray, dict]:
        """A full-resolution still and its metadata; CameraError when the camera is not delivering."""
        if not self._opened or self._problem:
            raise CameraError(self.status if self.status != "ok" else "camera is not ready yet")
        if not self._camera_lock.acquire(timeout=timeout):
            raise CameraError("camera busy: try again")
        try:
            frame, meta = self.camera.capture_still()
        except CameraError:
            raise
        except Exception as error:  # noqa: BLE001 - a driver's own error (device gone mid-still): one line
            message = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            log.warning("still capture failed: %s", message)
            raise CameraError(f"the camera failed during the still ({message}); check its cable and try again") \
                from None
        finally:
            self._camera_lock.release()
        return frame, dict(meta)


def encode_jpeg(rgb: np.ndarray, max_width: int, quality: int = 80) -> bytes:
    import cv2

    height, width = rgb.shape[:2]
    if width > max_width:
        rgb = cv2.resize(rgb, (max_width, max(1, round(height * max_width / width))), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CameraError("could not encode the live frame")
    return buffer.tobytes()
