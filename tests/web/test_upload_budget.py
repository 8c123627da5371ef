"""Uploads decode under a memory budget (issue 13, item 9): a pixel limit from the largest supported camera,
a bounded number of decodes at a time, one line for a refusal. Memory is measured, not timed: peak resident
size of a subprocess that uploads a 7,000 x 8,000 PNG of a few hundred KB."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from figures import report

from device.config.schema import AllscopeConfig, parse_config
from device.core.imageio import load_image_bytes
from device.services.decode_budget import AUTO_BUDGET_MB, BYTES_PER_PIXEL, MB, DecodeBudget, default_max_pixels
from device.services.intake import DecodeBusy, UnreadableImage, store_upload
from device.store.records import Capture, Patient, Sample

TESTS = Path(__file__).resolve().parents[1]
JPEG = (REPO_ROOT / "device" / "demo" / "BloodImage_00000.jpg").read_bytes()


def png_bomb(width: int, height: int) -> bytes:
    """A valid RGB PNG of width x height grey pixels, compressed to almost nothing."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x7f" * (width * 3)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# The subprocess: a real app, a real login, one warm-up upload, then the bomb; prints peak RSS before and after.
UPLOAD_SCRIPT = r"""
import io, json, resource, sys
sys.path.insert(0, sys.argv[1])
from conftest import Auth, csrf_from
from webui.app import create_app
from device.store.records import Patient, Sample

app = create_app(data_dir=sys.argv[2], start_workers=False)
app.testing = True
client = app.test_client()
Auth(client).login("tech")
with app.app_context():
    sample = Sample.create(patient=Patient.create(identifier="H-1", name="Ada"), created_by="tech").id

def upload(content, name):
    token = csrf_from(client.get(f"/samples/{sample}/capture").get_data(as_text=True))
    return client.post(f"/samples/{sample}/upload", content_type="multipart/form-data", follow_redirects=True,
                       data={"csrf_token": token, "images": [(io.BytesIO(content), name)]}).get_data(as_text=True)

upload(open(sys.argv[3], "rb").read(), "warm-up.jpg")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
page = upload(open(sys.argv[4], "rb").read(), "bomb.png")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
app.appliance.stop()
print(json.dumps({"before_kb": before, "after_kb": after, "page": page[page.find("<main"):]}))
"""


def test_a_png_declaring_7000_by_8000_pixels_is_refused_from_its_header_without_the_memory(tmp_path, users_database):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copyfile(users_database, data_dir / "allscope.db")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(7000, 8000))
    warm = tmp_path / "warm.jpg"
    warm.write_bytes(JPEG)
    assert bomb.stat().st_size < 400_000
    done = subprocess.run([sys.executable, "-c", UPLOAD_SCRIPT, str(TESTS), str(data_dir), str(warm), str(bomb)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    grown_mb = (result["after_kb"] - result["before_kb"]) / 1024
    report("peak MB taken by a 7000x8000 PNG upload (was ~740)", round(grown_mb))
    limit = default_max_pixels()
    assert grown_mb < 60, f"the upload grew the peak resident size by {grown_mb:.0f} MB"
    # Pillow's own check (above twice the limit) or ours names the size; either way before any pixel is decoded
    assert re.search(rf"bomb.png: image too large: (7000×8000|56,000,000) pixels exceeds the limit of {limit:,}<",
                     result["page"])


def test_the_pixel_limit_comes_from_the_largest_camera_and_the_memory_budget_from_the_machine():
    default = DecodeBudget.from_config(AllscopeConfig(), memory_bytes=2 * 1024 * MB)  # a 2 GB Pi
    assert default.max_pixels == default_max_pixels() == int(4056 * 3040 * 1.5)  # ~18.5 MP, not 60
    assert default.slots == 2  # ui.max_parallel_decodes
    assert default.memory_bytes == AUTO_BUDGET_MB * MB  # a quarter of 2 GB, at most 128 MB
    assert DecodeBudget.from_config(AllscopeConfig(), memory_bytes=256 * MB).memory_bytes == 64 * MB  # a quarter
    # 128 MB hold one 2592 x 1944 frame at 16 bytes a pixel, not two: four arriving at once go one by one
    assert 2592 * 1944 * BYTES_PER_PIXEL <= AUTO_BUDGET_MB * MB < 2 * 2592 * 1944 * BYTES_PER_PIXEL
    bigger = parse_config("[camera]\nwidth = 6000\nheight = 4000\n")
    assert DecodeBudget.from_config(bigger).max_pixels == 36_000_000  # a larger configured still size wins
    explicit = parse_config("[ui]\nmax_upload_megapixels = 5.5\ndecode_memory_mb = 1024\n"
                            "max_parallel_decodes = 8\n")
    budget = DecodeBudget.from_config(explicit)
    assert budget.max_pixels == 5_500_000 and budget.memory_bytes == 1024 * MB and budget.slots == 8
    assert "5.5 MP" in budget.describe() and "1024 MB" in budget.describe()


@pytest.fixture
def sample(app):
    with app.app_context():
        patient = Patient.create(identifier="H-100", name="Ada Example")
        yield Sample.create(patient=patient, created_by="tech")


def test_uploads_wait_for_a_decoding_slot_and_are_refused_with_one_line_when_none_frees(app, sample):
    from device.services.actor import Actor

    device = app.appliance
    budget = DecodeBudget(max_pixels=1_000_000, slots=1, wait_seconds=0.2)
    with app.app_context():
        with budget.slot("someone else's upload"):
            with pytest.raises(DecodeBusy) as refused:
                store_upload(sample, "a.jpg", JPEG, actor=Actor("tech"), data=device.data, worker=None,
                             budget=budget)
        assert str(refused.value) == ("a.jpg: the device is busy reading other images (1 at a time): "
                                      "try again in a moment")
        assert Capture.select().count() == 0
        # the slot is free again: the same upload is stored, and a larger image than the limit is one line
        store_upload(sample, "a.jpg", JPEG, actor=Actor("tech"), data=device.data, worker=None, budget=budget)
        small = DecodeBudget(max_pixels=100_000, slots=1)
        with pytest.raises(UnreadableImage, match=r"^b.jpg: image too large: (640×480|307,200) pixels exceeds the limit "
                                                  r"of 100,000$"):
            store_upload(sample, "b.jpg", JPEG, actor=Actor("tech"), data=device.data, worker=None, budget=small)


def test_concurrent_uploads_hold_at_most_the_slots(app, sample):
    """Eight threads uploading at once: never more than ``slots`` inside decode-and-store."""
    from device.services.actor import Actor

    device = app.appliance
    budget = DecodeBudget(max_pixels=1_000_000, slots=2, wait_seconds=60)
    inside, peak, lock = [0], [0], threading.Lock()
    real_load = budget.load

    def counting_load(content, name):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            threading.Event().wait(0.05)
            return real_load(content, name)
        finally:
            with lock:
                inside[0] -= 1

    budget.load = counting_load
    images = [load_image_bytes(JPEG, "x")[i:] for i in range(8)]  # eight different frames

    def one(i):
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(images[i]).save(buffer, "PNG")
        with app.app_context():
            store_upload(sample, f"{i}.png", buffer.getvalue(), actor=Actor("tech"), data=device.data, worker=None,
                         budget=budget)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with app.app_context():
        assert Capture.select().count() == 8
    assert peak[0] == 2
    report("concurrent uploads held to the decoding slots", 8)


def _distinct_pngs(count: int) -> list[bytes]:
    """``count`` different 640 x 480-ish frames (the demo frame shifted), as PNG files."""
    from PIL import Image

    rgb = load_image_bytes(JPEG, "demo")
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rgb[i:]).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def _api_upload(app, sample_id: int, name: str, content: bytes):
    """One technician's own client (logged in through the form) posting one file to the JSON API, from a
    thread of its own (as a browser's request would be served; the ``sample`` fixture's app context stays
    out of it)."""
    from conftest import Auth, csrf_from

    answer = []

    def run():
        client = app.test_client()
        Auth(client).login("tech")
        token = csrf_from(client.get(f"/samples/{sample_id}/capture").get_data(as_text=True))
        answer.append(client.post(f"/api/samples/{sample_id}/captures", headers={"X-CSRFToken": token},
                                  content_type="multipart/form-data", data={"files": [(io.BytesIO(content), name)]}))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return answer[0]


def test_four_uploads_arriving_at_once_are_decoded_within_the_memory_budget(app, sample, monkeypatch):
    """Four API uploads at the same moment, a budget that holds one such image: all four are stored, and
    never more than one image is decoded (and its bytes reserved) at a time, though four slots are free."""
    from device.services import decode_budget

    pngs = _distinct_pngs(4)
    one_image = 640 * 480 * BYTES_PER_PIXEL
    budget = DecodeBudget(max_pixels=1_000_000, slots=4, wait_seconds=120, memory_bytes=one_image + one_image // 2)
    app.appliance.decode_budget = budget
    inside, peak, reserved_peak, lock = [0], [0], [0], threading.Lock()
    real_decode = decode_budget.load_image_bytes

    def counting_decode(content, name, **limits):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            reserved_peak[0] = max(reserved_peak[0], budget._reserved)
        try:
            threading.Event().wait(0.05)  # widen the window in which a second decode could start
            return real_decode(content, name, **limits)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(decode_budget, "load_image_bytes", counting_decode)
    statuses = [None] * 4
    start = threading.Barrier(4)

    def one(i):
        start.wait()
        statuses[i] = _api_upload(app, sample.id, f"frame-{i}.png", pngs[i]).status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 4
    with app.app_context():
        assert Capture.select().where(Capture.sample == sample.id).count() == 4
    assert peak[0] == 1 and 0 < reserved_peak[0] <= budget.memory_bytes
    assert budget._reserved == 0 and budget._inside == 0  # everything given back
    report("4 concurrent API uploads stored, decoded one at a time within the budget", 4)


def test_an_upload_finding_no_room_in_the_budget_is_a_one_line_503(app, sample):
    png = _distinct_pngs(1)[0]
    budget = DecodeBudget(max_pixels=1_000_000, slots=4, wait_seconds=0.2, memory_bytes=640 * 480 * BYTES_PER_PIXEL)
    app.appliance.decode_budget = budget
    held, release = threading.Event(), threading.Event()

    def other_upload():  # another upload's decode in progress, holding the whole budget
        with budget.slot("other.png"):
            budget._reserve("other.png", 640 * 480)
            held.set()
            release.wait(60)

    other = threading.Thread(target=other_upload)
    other.start()
    try:
        assert held.wait(60)
        refused = _api_upload(app, sample.id, "late.png", png)
    finally:
        release.set()
        other.join()
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert refused.get_json()["error"] == ("late.png: the device is busy reading other images (up to 4 MB of them "
                                           "at a time): try again in a moment")
    with app.app_context():
        assert Capture.select().count() == 0
    # the budget is free again: the same upload goes through
    assert _api_upload(app, sample.id, "late.png", png).status_code == 201
