"""AnalysisWorker with the real shipped model, real demo frames and a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.core.imageio import load_image
from device.resources import DEFAULT_MODEL
from device.services.jobs import AnalysisWorker, crop_box, encode_png
from device.store.datadir import DataDir
from device.store.records import AuditEvent, Capture, Cell, Patient, Sample, open_database

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"


@pytest.fixture
def data(tmp_path):
    data = DataDir.resolve(tmp_path / "var")
    database = open_database(data.database)
    yield data
    database.close()


@pytest.fixture(scope="module")
def demo_png():
    return encode_png(load_image(DEMO / "BloodImage_00000.jpg"))


def _capture(data: DataDir, png: bytes, status: str = "queued") -> Capture:
    relative, digest = data.store_image(png)
    patient = Patient.get_or_none(Patient.identifier == "P-1") or Patient.create(identifier="P-1", name="Test Patient")
    sample = Sample.create(patient=patient)
    return Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload", status=status)


def _run(data: DataDir, *capture_ids: int, model=DEFAULT_MODEL) -> AnalysisWorker:
    worker = AnalysisWorker(data, model).start()
    for capture_id in capture_ids:
        worker.enqueue(capture_id)
    assert worker.wait_idle(60)
    return worker


def test_real_frame_is_analysed_with_cells_crops_and_consistent_counts(data, demo_png):
    capture = _capture(data, demo_png)
    worker = _run(data, capture.id)
    try:
        capture = Capture.get_by_id(capture.id)
        assert capture.status == "done", capture.error
        assert capture.version == 3  # queued -> analysing -> done
        cells = list(Cell.select().where(Cell.capture == capture.id).order_by(Cell.id))
        assert cells, "the demo frame holds white cells"
        counted = [c for c in cells if not c.edge]
        assert capture.cell_count == len(counted)
        assert capture.blast_count == sum(1 for c in counted if c.ai_label == "blast")
        assert capture.review_count == sum(1 for c in counted if c.needs_review)
        assert capture.flag in ("blasts_seen", "no_blasts_seen", "needs_review")
        assert len(capture.model_id) == 12 and capture.analysed_at is not None
        assert capture.quality["usable"] is True and capture.timings_ms["total"] > 0
        for cell in cells:
            crop = load_image(data.absolute(cell.crop_path))
            assert crop.shape[0] >= cell.h and crop.shape[1] >= min(cell.w, 1)
            assert 0.0 <= cell.p_blast <= 1.0
        event = AuditEvent.get(AuditEvent.action == "analyse", AuditEvent.entity_id == str(capture.id))
        assert event.after["cell_count"] == capture.cell_count
        assert worker.stage(capture.id) is None  # finished: the row says done
    finally:
        worker.stop()
    assert not worker.alive


def test_corrupt_stored_image_fails_with_one_line_and_the_worker_goes_on(data, demo_png):
    bad = _capture(data, b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    good = _capture(data, demo_png)
    worker = _run(data, bad.id, good.id)
    try:
        bad = Capture.get_by_id(bad.id)
        assert bad.status == "failed"
        assert bad.error.startswith("stored image unreadable:") and "\n" not in bad.error
        assert str(data.root) not in bad.error  # no device paths on the page
        assert Cell.select().where(Cell.capture == bad.id).count() == 0
        assert worker.alive
        assert Capture.get_by_id(good.id).status == "done"
    finally:
        worker.stop()


def test_missing_model_fails_the_capture_not_the_thread(data, demo_png, tmp_path):
    capture = _capture(data, demo_png)
    worker = _run(data, capture.id, model=tmp_path / "no-such-model.tflite")
    try:
        capture = Capture.get_by_id(capture.id)
        assert capture.status == "failed"
        assert "model file not found" in capture.error and "\n" not in capture.error
        assert worker.alive
    finally:
        worker.stop()


def test_crash_left_analysing_capture_is_rerun_cleanly_on_start(data, demo_png):
    capture = _capture(data, demo_png, status="analysing")
    for i in range(3):  # partial cells that a (hypothetical) earlier crash left behind
        Cell.create(capture=capture, x=1, y=1, w=1, h=1, ai_label="blast", p_blast=0.9, crop_path=f"crops/x/{i}")
    queued = _capture(data, demo_png)
    worker = _run(data)  # nothing enqueued by hand: recovery finds both
    try:
        for row_id in (capture.id, queued.id):
            row = Capture.get_by_id(row_id)
            assert row.status == "done", row.error
            cells = list(Cell.select().where(Cell.capture == row_id))
            assert all(c.crop_path.startswith(f"crops/{row_id}/") for c in cells)
        assert Cell.select().where(Cell.capture == capture.id).count() == \
            Cell.select().where(Cell.capture == queued.id).count()  # same frame, same cells: no leftovers
    finally:
        worker.stop()


def test_stop_with_a_queue_leaves_unstarted_captures_queued(data, demo_png):
    worker = AnalysisWorker(data, DEFAULT_MODEL)  # never started: stop must not hang
    worker.enqueue(_capture(data, demo_png).id)
    worker.stop()
    assert Capture.get().status == "queued"


@pytest.mark.parametrize("box, expected", [
    ((50, 50, 20, 20), (35, 35, 65, 65)),     # 25 % of the box on each side
    ((2, 3, 20, 20), (0, 0, 17, 18)),          # clipped at the top-left corner
    ((99, 79, 20, 10), (84, 71, 100, 80)),     # clipped at the bottom-right
])
def test_crop_box_margin_and_clipping(box, expected):
    assert crop_box(*box, width=100, height=80) == expected


def test_decision_override_applies_from_the_next_job_and_none_restores_the_models(data, demo_png):
    from device.core.decision import DecisionSettings

    first = _capture(data, demo_png)
    worker = _run(data, first.id)
    try:
        worker.set_decision(DecisionSettings(threshold=0.0, review_low=0.0, review_high=0.0))  # everything a blast
        second = _capture(data, demo_png)
        worker.enqueue(second.id)
        assert worker.wait_idle(60)
        labels = {c.ai_label for c in Cell.select().where(Cell.capture == second.id)}
        assert labels == {"blast"} and Capture.get_by_id(second.id).flag == "blasts_seen"
        worker.set_decision(None)
        third = _capture(data, demo_png)
        worker.enqueue(third.id)
        assert worker.wait_idle(60)
        as_model = [(c.ai_label, c.needs_review) for c in Cell.select().where(Cell.capture == first.id).order_by(Cell.id)]
        again = [(c.ai_label, c.needs_review) for c in Cell.select().where(Cell.capture == third.id).order_by(Cell.id)]
        assert again == as_model
    finally:
        worker.stop()
