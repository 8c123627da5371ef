"""The inference watchdog: a hung delegate fails its capture with one line, the worker restarts and goes on.

An Edge TPU that stops answering cannot exist here, so the boundary is substituted: the worker's
classifier loader returns the real shipped CPU classifier behind a predict() that blocks until the
test releases it (as a hung driver call would). Everything else is real: the AnalysisWorker, SQLite,
the demo frame, the admin status page.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import Auth

from device.core.imageio import load_image
from device.inference.classifier import CellClassifier
from device.inference.delegates import DelegateConfig
from device.resources import DEFAULT_MODEL
from device.services.jobs import AnalysisWorker, encode_png
from device.services.watchdog import Watchdog
from device.store.records import AuditEvent, Capture, Cell, Patient, Sample

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"


@pytest.fixture(scope="module")
def real_classifier():
    return CellClassifier.load(DEFAULT_MODEL, DelegateConfig())


@pytest.fixture(scope="module")
def demo_png():
    return encode_png(load_image(DEMO / "BloodImage_00000.jpg"))


class HangingClassifier:
    """The real classifier, reporting ``backend``, whose predict() blocks while ``hang`` (a hung delegate)."""

    def __init__(self, real, backend: str, hang: bool, release: threading.Event, stuck: list):
        self._real, self._backend, self._hang, self._release, self._stuck = real, backend, hang, release, stuck

    def __getattr__(self, name):
        return getattr(self._real, name)

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def fallback_reason(self):
        return None

    def predict(self, images):
        if self._hang:
            self._stuck.append(threading.current_thread())
            self._release.wait(60)
        return self._real.predict(images)


class Loader:
    """The worker's classifier loader: records each load's delegate kind; ``hangs(kind, n)`` decides."""

    def __init__(self, real, hangs):
        self.real, self.hangs = real, hangs
        self.kinds: list[str] = []
        self.release = threading.Event()
        self.stuck: list[threading.Thread] = []

    def __call__(self, path, delegate):
        assert Path(path) == DEFAULT_MODEL
        self.kinds.append(delegate.kind)
        backend = "edgetpu:usb" if delegate.kind == "edgetpu" else self.real.backend
        return HangingClassifier(self.real, backend, self.hangs(delegate.kind, len(self.kinds)), self.release,
                                 self.stuck)


def _capture(data, png: bytes) -> Capture:
    relative, digest = data.store_image(png)
    patient = Patient.get_or_none(Patient.identifier == "P-W") or Patient.create(identifier="P-W", name="Wd Test")
    return Capture.create(sample=Sample.create(patient=patient), image_path=relative, sha256=digest,
                          source="upload", status="queued")


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_hung_inference_fails_its_capture_the_worker_restarts_and_the_status_page_shows_it(
        app, client, real_classifier, demo_png):
    data = app.appliance.data
    loader = Loader(real_classifier, hangs=lambda kind, n: n == 1)  # only the first loaded classifier hangs
    worker = AnalysisWorker(data, DEFAULT_MODEL, watchdog_seconds=1.0, loader=loader).start()
    app.appliance.worker = worker
    try:
        hung, good = _capture(data, demo_png), _capture(data, demo_png)
        started = time.monotonic()
        worker.enqueue(hung.id)
        worker.enqueue(good.id)
        assert worker.wait_idle(30)
        assert time.monotonic() - started < 15  # the deadline (1 s) ended the hang, not the test's bound

        hung, good = Capture.get_by_id(hung.id), Capture.get_by_id(good.id)
        assert hung.status == "failed" and "\n" not in hung.error
        assert "did not finish within 1 s" in hung.error and "run the analysis again" in hung.error
        assert good.status == "done" and good.cell_count > 0, good.error
        assert loader.kinds == ["cpu", "cpu"]  # the hung classifier was discarded and the model reloaded
        assert worker.alive and worker.watchdog_restarts == 1
        assert f"capture #{hung.id}" in worker.watchdog_problem
        assert worker.latency_ms is not None and 0 < worker.latency_ms < 5000
        assert worker.backend == real_classifier.backend

        # the stuck call finally returns: its thread ends and writes nothing
        assert len(loader.stuck) == 1
        version = hung.version
        loader.release.set()
        loader.stuck[0].join(30)
        assert not loader.stuck[0].is_alive()
        after = Capture.get_by_id(hung.id)
        assert (after.status, after.version, after.error) == ("failed", version, hung.error)
        assert Cell.select().where(Cell.capture == hung.id).count() == 0
        assert AuditEvent.select().where(AuditEvent.action == "analyse_failed",
                                         AuditEvent.entity_id == str(hung.id)).count() == 1

        assert Auth(client).login("admin").status_code == 302
        page = client.get("/admin/status").get_data(as_text=True)
        assert "Inference watchdog" in page and "1 restart (deadline 1 s per frame)" in page
        assert f"capture #{hung.id}" in page
        assert "Measured latency" in page and "ms per cell (median of the last 1 frames)" in page
        assert real_classifier.backend in page
    finally:
        loader.release.set()
        worker.stop()


def test_an_accelerator_that_keeps_hanging_is_replaced_by_the_cpu(app, real_classifier, demo_png):
    data = app.appliance.data
    loader = Loader(real_classifier, hangs=lambda kind, n: kind == "edgetpu")
    worker = AnalysisWorker(data, DEFAULT_MODEL, delegate=DelegateConfig(kind="edgetpu", num_threads=2),
                            watchdog_seconds=0.5, loader=loader).start()
    try:
        captures = [_capture(data, demo_png) for _ in range(3)]
        for capture in captures:
            worker.enqueue(capture.id)
        assert worker.wait_idle(30)
        states = [Capture.get_by_id(c.id).status for c in captures]
        assert states == ["failed", "failed", "done"]
        assert "edgetpu:usb hung?" in Capture.get_by_id(captures[0].id).error
        assert loader.kinds == ["edgetpu", "edgetpu", "cpu"]
        assert worker.watchdog_restarts == 2
        assert "edgetpu delegate hung 2 times in a row; running on the CPU" in worker.fallback_reason
        assert worker.backend == real_classifier.backend
    finally:
        loader.release.set()
        worker.stop()


def test_watchdog_fires_once_for_a_late_block_and_never_for_one_in_time_or_kept_alive():
    fired = []
    watchdog = Watchdog(0.3, lambda ticket: fired.append((ticket.what, ticket.elapsed)), poll_s=0.02).start()
    try:
        with watchdog.deadline("quick") as quick:
            time.sleep(0.05)
        with watchdog.deadline("beating") as beating:
            for _ in range(8):  # 0.8 s in all, but never 0.3 s without a beat
                time.sleep(0.1)
                watchdog.beat()
        with watchdog.deadline("stuck") as stuck:
            _wait(lambda: stuck.expired, timeout=5)
            time.sleep(0.2)  # still inside: it must not fire twice
        time.sleep(0.5)      # disarmed: nothing fires after the block
    finally:
        watchdog.stop()
    assert not quick.expired and not beating.expired and stuck.expired
    assert [what for what, _ in fired] == ["stuck"] and watchdog.expiries == 1
    assert 0.3 <= fired[0][1] < 2.0


def test_watchdog_refuses_a_nonsense_deadline():
    with pytest.raises(ValueError):
        Watchdog(0, lambda ticket: None)
