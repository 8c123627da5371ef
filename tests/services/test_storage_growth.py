"""Storage growth (issue 15): uploads kept bit-exact, camera stills losslessly, JPEG crops, a thumbnail per
analysed frame, the retention policy (crash-safe, audited) and the disk-space guard. Real SQLite, real images,
the real shipped model."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.bench.still_formats import psnr
from device.core.imageio import load_image, load_image_bytes
from device.resources import DEFAULT_MODEL
from device.services.actor import Actor
from device.services.disk_guard import DiskGuard
from device.services.frame_files import kept_format, pixels_sha256
from device.services.intake import DuplicateFrame, NoRoom, store_frame, store_upload, store_uploads
from device.services.jobs import AnalysisWorker
from device.services.retention import Policy, candidates, prune, prune_capture, sweep
from device.store.datadir import DataDir
from device.store.records import AuditEvent, Capture, Cell, Patient, Report, Sample, db_proxy, open_database

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"
TECH = Actor("tech", "127.0.0.1")


@pytest.fixture
def data(tmp_path):
    data = DataDir.resolve(tmp_path / "var")
    database = open_database(data.database)
    yield data
    database.close()


@pytest.fixture
def sample(data):
    return Sample.create(patient=Patient.create(identifier="P-1", name="Test Patient"))


def _jpeg() -> bytes:
    return (DEMO / "BloodImage_00000.jpg").read_bytes()


def _as(fmt: str, rgb: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **options)
    return buffer.getvalue()


def _analyse(data: DataDir, *capture_ids: int) -> None:
    worker = AnalysisWorker(data, DEFAULT_MODEL).start()
    try:
        for capture_id in capture_ids:
            worker.enqueue(capture_id)
        assert worker.wait_idle(120)
    finally:
        worker.stop()


# --- intake --------------------------------------------------------------------------------------------------

def test_an_upload_is_kept_as_received_and_its_hash_is_the_files(data, sample):
    content = _jpeg()
    capture = store_upload(sample, "frame.jpg", content, actor=TECH, data=data, worker=None)
    capture = Capture.get_by_id(capture.id)
    assert data.read_bytes(capture.image_path) == content  # bit-exact
    assert capture.image_path.endswith(".jpg") and capture.original_format == "jpeg"
    assert capture.sha256 == hashlib.sha256(content).hexdigest() and capture.sha256 in capture.image_path
    assert capture.pixels_sha256 == pixels_sha256(load_image_bytes(content, "frame.jpg"))
    assert capture.stored_bytes == len(content)
    event = AuditEvent.get((AuditEvent.action == "create") & (AuditEvent.entity == "capture"))
    assert event.after["format"] == "jpeg" and event.after["sha256"] == capture.sha256


def test_the_same_pixels_in_another_file_are_one_image(data, sample):
    content = _jpeg()
    store_upload(sample, "frame.jpg", content, actor=TECH, data=data, worker=None)
    as_png = _as("PNG", load_image_bytes(content, "frame.jpg"))
    with pytest.raises(DuplicateFrame, match="already capture #1"):
        store_upload(sample, "frame.png", as_png, actor=TECH, data=data, worker=None)
    assert Capture.select().count() == 1


def test_a_frame_stored_before_v7_is_still_found_as_a_duplicate(data, sample):
    from device.services.jobs import encode_png

    content = _jpeg()
    relative, digest = data.store_image(encode_png(load_image_bytes(content, "old")))  # how frames were kept
    Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload")  # no pixels_sha256
    with pytest.raises(DuplicateFrame, match="already capture #1"):
        store_upload(sample, "frame.jpg", content, actor=TECH, data=data, worker=None)
    other = Sample.create(patient=sample.patient)  # another sample: no duplicate, kept as received
    assert store_upload(other, "frame.jpg", content, actor=TECH, data=data, worker=None).original_format == "jpeg"


def test_png_tiff_and_webp_uploads_are_kept_a_bmp_is_encoded_losslessly(data, sample):
    rgb = load_image(DEMO / "BloodImage_00010.jpg")
    files = {"f.png": _as("PNG", rgb), "f.tif": _as("TIFF", rgb, compression="tiff_lzw"),
             "f.webp": _as("WEBP", rgb, lossless=True)}
    for index, (name, content) in enumerate(files.items()):
        changed = rgb.copy()
        changed[0, 0] = (index, 0, 0)  # distinct pixels: not duplicates
        content = _as({"png": "PNG", "tif": "TIFF", "webp": "WEBP"}[name[2:]], changed,
                      **({"lossless": True} if name.endswith("webp") else {}))
        capture = store_upload(sample, name, content, actor=TECH, data=data, worker=None)
        assert data.read_bytes(capture.image_path) == content, name
        assert kept_format(content) == capture.original_format
    bmp = _as("BMP", rgb)
    capture = store_upload(sample, "f.bmp", bmp, actor=TECH, data=data, worker=None)
    stored = data.read_bytes(capture.image_path)
    assert capture.original_format == "webp" and capture.image_path.endswith(".webp") and len(stored) < len(bmp)
    assert np.array_equal(load_image_bytes(stored, "stored"), rgb)  # lossless: what is analysed is the upload


def test_a_camera_still_is_jpeg_q90_444_by_default_or_webp_lossless_as_configured(data, sample):
    from PIL import JpegImagePlugin

    rgb = load_image(DEMO / "BloodImage_00022.jpg")
    still = store_frame(sample, rgb, "camera", actor=TECH, data=data, worker=None, camera_meta={"exposure": 1})
    stored = data.read_bytes(still.image_path)
    assert still.original_format == "jpeg" and stored[:3] == b"\xff\xd8\xff"
    reference = io.BytesIO()
    Image.fromarray(rgb).save(reference, "JPEG", quality=90, subsampling=0)
    with Image.open(io.BytesIO(stored)) as kept_image, Image.open(reference) as q90:
        assert JpegImagePlugin.get_sampling(kept_image) == 0  # 4:4:4: the stain's colour at full resolution
        assert kept_image.quantization == q90.quantization  # quality 90 (storage.still_format = "jpeg90")
    assert psnr(rgb, load_image_bytes(stored, "still")) > 40
    other = rgb.copy()
    other[0, 0] = 0
    lossless = store_frame(sample, other, "camera", actor=TECH, data=data, worker=None, still_format="webp-lossless")
    assert lossless.original_format == "webp"
    assert np.array_equal(load_image_bytes(data.read_bytes(lossless.image_path), "still"), other)


# --- analysis: crops and thumbnail --------------------------------------------------------------------------

def test_analysis_writes_jpeg_crops_and_a_thumbnail_and_counts_what_is_kept(data, sample):
    capture = store_upload(sample, "frame.jpg", _jpeg(), actor=TECH, data=data, worker=None)
    _analyse(data, capture.id)
    capture = Capture.get_by_id(capture.id)
    assert capture.status == "done", capture.error
    cells = list(Cell.select().where(Cell.capture == capture.id))
    assert cells and all(c.crop_path.endswith(".jpg") for c in cells)
    crop = Image.open(io.BytesIO(data.read_bytes(cells[0].crop_path)))
    assert crop.format == "JPEG" and crop.size[0] > 8
    thumb = Image.open(io.BytesIO(data.read_bytes(capture.thumb_path)))
    assert thumb.format == "JPEG" and thumb.width == min(1024, capture.width)
    assert abs(thumb.height / thumb.width - capture.height / capture.width) < 0.01
    files = [capture.image_path, capture.thumb_path] + [c.crop_path for c in cells]
    assert capture.stored_bytes == sum(data.stored_size(f) for f in files)


# --- retention ------------------------------------------------------------------------------------------------

def _acknowledge(capture_id: int) -> None:
    """What the agent does when the central's signed ack arrives (sync/agent/outbox.py remove_acked)."""
    db_proxy.execute_sql("DELETE FROM outbox WHERE entity = 'capture' AND record_id = ?", (capture_id,))


def _sign(sample: Sample) -> None:
    Report.create(sample=sample, status="signed", signed_by="path", signed_at=dt.datetime(2026, 1, 1))


@pytest.fixture
def analysed(data, sample):
    capture = store_upload(sample, "frame.jpg", _jpeg(), actor=TECH, data=data, worker=None)
    _analyse(data, capture.id)
    return Capture.get_by_id(capture.id)


def test_a_frame_is_pruned_only_once_acknowledged_and_signed(data, sample, analysed):
    policy = Policy(after_ack=True)
    assert candidates(policy) == []  # still in the outbox, not signed
    _acknowledge(analysed.id)
    assert candidates(policy) == []  # acknowledged, but a pathologist may still need the whole frame
    _sign(sample)
    assert [c.id for c, _ in candidates(policy)] == [analysed.id]
    assert candidates(Policy()) == []  # no policy: nothing
    frame = data.absolute(analysed.image_path)
    dry = prune(data, policy, dry_run=True)
    assert dry.pruned and frame.exists() and Capture.get_by_id(analysed.id).frame_pruned_at is None
    result = prune(data, policy, username="cli:ops")
    assert [c for c, _ in result.pruned] == [analysed.id] and result.freed_bytes == len(_jpeg())
    assert not frame.exists()
    capture = Capture.get_by_id(analysed.id)
    assert capture.frame_pruned_at is not None and capture.sha256 == analysed.sha256  # the hash stays
    assert capture.stored_bytes == analysed.stored_bytes - len(_jpeg())
    assert data.exists(capture.thumb_path)
    assert all(data.exists(c.crop_path) for c in Cell.select().where(Cell.capture == capture.id))
    event = AuditEvent.get(AuditEvent.action == "prune_frame")
    assert event.username == "cli:ops" and event.entity_id == str(capture.id)
    assert event.before["sha256"] == capture.sha256 and "acknowledged" in event.detail
    assert candidates(policy) == [] and prune(data, policy).pruned == []  # once


def test_after_n_days_offline_frames_are_pruned_without_an_ack(data, sample, analysed):
    policy = Policy(offline_days=30)
    assert candidates(policy) == []
    later = analysed.created_at + dt.timedelta(days=31)
    assert [(c.id, reason) for c, reason in candidates(policy, now=later)] == [(analysed.id, "older than 30 days")]
    queued = store_upload(sample, "other.jpg", (DEMO / "BloodImage_00101.jpg").read_bytes(), actor=TECH, data=data,
                          worker=None)
    assert queued.id not in [c.id for c, _ in candidates(policy, now=later + dt.timedelta(days=31))]  # not analysed


def test_a_crash_between_commit_and_delete_leaves_an_orphan_the_next_run_deletes(data, sample, analysed,
                                                                                 monkeypatch):
    from device.services import retention

    _acknowledge(analysed.id)
    _sign(sample)

    def crash(_data, _relative):
        raise SystemExit("power cut")

    monkeypatch.setattr(retention, "_delete", crash)
    with pytest.raises(SystemExit):
        prune_capture(data, analysed, "test")
    monkeypatch.undo()
    capture = Capture.get_by_id(analysed.id)
    assert capture.frame_pruned_at is not None and data.exists(capture.image_path)  # committed; the file left
    assert sweep(data) == 1 and not data.exists(capture.image_path)


def test_a_frame_file_shared_by_two_samples_goes_with_the_last(data, sample, analysed):
    other = Sample.create(patient=sample.patient)
    twin = store_upload(other, "same.jpg", _jpeg(), actor=TECH, data=data, worker=None)
    assert twin.image_path == analysed.image_path
    _acknowledge(analysed.id)
    _sign(sample)
    prune(data, Policy(after_ack=True))
    assert Capture.get_by_id(analysed.id).frame_pruned_at is not None
    assert data.exists(twin.image_path)  # the twin still needs it (it is not even analysed)


def test_a_capture_from_before_v7_gets_its_thumbnail_when_pruned(data, sample, analysed):
    Capture.update(thumb_path="").where(Capture.id == analysed.id).execute()
    data.absolute(analysed.thumb_path).unlink()
    prune_capture(data, Capture.get_by_id(analysed.id), "test")
    capture = Capture.get_by_id(analysed.id)
    assert capture.thumb_path and capture.thumb_path != ""
    assert Image.open(io.BytesIO(data.read_bytes(capture.thumb_path))).width == min(1024, capture.width)


def test_the_pdf_report_still_shows_the_frame_from_the_thumbnail(data, sample, shared_data):
    from device.services import reporting
    from device.services.pdf_pictures import frame_jpeg

    original = (shared_data / "all-idb1" / "Im001_1.jpg").read_bytes()  # 1712x1368: the thumbnail is smaller
    capture = store_upload(sample, "Im001_1.jpg", original, actor=TECH, data=data, worker=None)
    _analyse(data, capture.id)
    _acknowledge(capture.id)
    _sign(sample)
    prune(data, Policy(after_ack=True))
    capture = Capture.get_by_id(capture.id)
    assert capture.frame_pruned_at is not None and not data.exists(capture.image_path)
    cells = [c for c in reporting.sample_summary(sample, include_cells=True)["cells"] if c["capture_id"] == capture.id]
    assert cells and Image.open(io.BytesIO(data.read_bytes(capture.thumb_path))).width == 1024
    from_thumb = Image.open(io.BytesIO(frame_jpeg(data.read_bytes(capture.thumb_path), cells,
                                                  frame_width=capture.width)))
    # the outlines land where they do on the full frame: the picture drawn from the frame itself is the same
    from_frame = Image.open(io.BytesIO(frame_jpeg(original, cells)))
    assert from_thumb.size == from_frame.size and from_thumb.width == 640
    difference = np.abs(np.asarray(from_frame, float) - np.asarray(from_thumb, float))
    assert difference.mean() < 4.0, difference.mean()
    wrong = Image.open(io.BytesIO(frame_jpeg(data.read_bytes(capture.thumb_path), cells)))  # boxes not scaled
    assert np.abs(np.asarray(from_frame, float) - np.asarray(wrong, float)).mean() > difference.mean()


# --- the disk-space guard -------------------------------------------------------------------------------------

def test_a_capture_is_refused_in_one_line_below_the_reserve_and_nothing_is_stored(data, sample):
    full = DiskGuard(data, reserve_mb=10**9)  # more than any disk: the reserve is never there
    with pytest.raises(NoRoom) as refused:
        store_upload(sample, "frame.jpg", _jpeg(), actor=TECH, data=data, worker=None, guard=full)
    assert "\n" not in str(refused.value) and "Capture refused" in str(refused.value)
    with pytest.raises(NoRoom):
        store_uploads(sample, [("frame.jpg", _jpeg())], actor=TECH, data=data, worker=None, guard=full)
    assert Capture.select().count() == 0 and not (data.root / "images").exists()
    assert full.state().level == "full"


def test_days_left_come_from_the_recent_rate_of_writes(data, sample):
    now = dt.datetime(2026, 3, 10, 12, 0)
    for day in range(4):  # 100 MB a day over the last four days, and one capture long ago that does not count
        Capture.create(sample=sample, image_path=f"images/x/{day}.jpg", sha256=f"{day}" * 64, source="upload",
                       stored_bytes=100 * 2**20, created_at=now - dt.timedelta(days=day + 0.5))
    Capture.create(sample=sample, image_path="images/x/old.jpg", sha256="f" * 64, source="upload",
                   stored_bytes=10**12, created_at=now - dt.timedelta(days=30))
    guard = DiskGuard(data, reserve_mb=1)
    rate = guard.bytes_per_day(now)
    assert 100 * 2**20 < rate < 120 * 2**20  # 400 MB over 3.5 days, plus the database's share
    state = guard.state(now)
    assert state.days_left == pytest.approx((guard.free_bytes() - 2**20) / rate, rel=0.01)
    warned = DiskGuard(data, reserve_mb=1, warn_days=10**6).state(now)
    assert warned.level == "warn" and "days at the recent rate" in warned.message
    assert DiskGuard(data).bytes_per_day(now + dt.timedelta(days=60)) == 0.0  # nothing recent: no estimate


def test_a_pruned_frame_is_not_asked_of_the_sync_agent_and_its_payload_says_so(data, sample, analysed):
    import json

    from sync.agent.media import file_names

    _acknowledge(analysed.id)
    _sign(sample)
    prune(data, Policy(after_ack=True))
    cursor = db_proxy.execute_sql("SELECT payload FROM outbox WHERE entity = 'capture' ORDER BY id DESC LIMIT 1")
    payload = json.loads(cursor.fetchone()[0])  # the pruning is a change of the record: it travels
    assert payload["frame_pruned_at"] and payload["sha256"] == analysed.sha256 and payload["thumb_path"]
    crops = [c["crop_path"] for c in payload["cells"]]
    assert file_names(payload, "frames") == crops  # the frame is gone: the agent does not look for it
    assert file_names(dict(payload, frame_pruned_at=None), "frames") == [analysed.image_path] + crops
