"""Hostile files through every door: `allscope analyze` and `allscope classify`, the upload page and the API.

The corpus (tests/hostile_corpus.py) holds refused files (truncated, corrupted, empty, decompression bombs,
text/HTML/SVG/PDF named as images, GIF) and valid odd ones (palette, CMYK, 16-bit, float, alpha, wrong
extension). Refused: one clear line each, a non-zero exit or a 4xx JSON, no traceback, and nothing stored —
no Capture row, no image file, no temp file. Valid: stored, decoded to the right pixels and analysed, the
exact conversions with the same result as the demo frame itself. Hostile upload names never become paths.
"""

from __future__ import annotations

import html
import io
import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, csrf_from
from figures import report
from hostile_corpus import BASE_FILE, TRAVERSAL_NAMES, base_rgb, build_corpus, distinct_variant

from device.core.imageio import load_image, load_image_bytes
from device.errors import ImageLoadError
from device.store.records import AuditEvent, Capture, Patient, Sample
from webui.forms.captures import display_name

# C libraries may print their own diagnostic to fd 2 before Pillow turns the failure into an exception
# (libtiff: "ZIPDecode: Decoding error at scanline 136, incorrect data check."); Python cannot silence it.
LIBTIFF_NOISE = re.compile(r"^(\w+Decode|TIFF\w+|_TIFF\w+|tempfile\.tif): .+$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    return directory, build_corpus(directory)


def _refused(corpus):
    return [s for s in corpus[1] if s.refused]


def _accepted(corpus):
    return [s for s in corpus[1] if not s.refused]


# --- the loader itself: conversions and the memory a bomb costs ---------------------------------------------

def test_loader_refuses_each_hostile_file_with_its_reason_and_converts_each_valid_one(corpus):
    directory, specimens = corpus
    for specimen in specimens:
        path = directory / specimen.name
        if specimen.refused:
            with pytest.raises(ImageLoadError) as info:
                load_image(path)
            message = str(info.value)
            assert message.startswith(f"{path}: ") and "\n" not in message, message
            assert re.search(specimen.reason, info.value.reason), (specimen.what, message)
        else:
            rgb = load_image(path)
            assert rgb.dtype == np.uint8 and rgb.shape == specimen.expected.shape, specimen.what
            difference = np.abs(rgb.astype(np.int16) - specimen.expected.astype(np.int16)).mean()
            assert difference <= specimen.tolerance, (specimen.what, difference)
    report("hostile files tried through the loader", len(specimens))


def test_decompression_bombs_are_refused_without_allocating_their_pixels(corpus):
    """A decoded 60 000² RGB bomb needs 10.8 GB: the process peak must not move by more than a few MB."""
    directory, specimens = corpus
    bombs = [s for s in specimens if s.name.startswith("bomb-")]
    assert len(bombs) >= 5 and all(len(s.data) < 64 * 1024 for s in bombs)  # headers, and one real JPEG
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for bomb in bombs:
        with pytest.raises(ImageLoadError, match="image too large"):
            load_image(directory / bomb.name)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, f"peak memory grew by {grown_mb:.0f} MB while refusing bombs"
    report("decompression bombs refused (claiming up to 3.6 GP, none decoded)", len(bombs))


# --- the command line -----------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)


def _check_cli_errors(result: subprocess.CompletedProcess, directory: Path, refused) -> int:
    """One 'allscope: PATH: reason' line per refused file, nothing else but C-library noise; returns the noise."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    ours = [line for line in lines if line.startswith("allscope: ")]
    noise = [line for line in lines if not line.startswith("allscope: ")]
    assert all(LIBTIFF_NOISE.match(line) for line in noise), noise
    assert len(noise) <= sum(s.name.endswith((".tif", ".tiff")) for s in refused), noise
    assert len(ours) == len(refused), "\n".join(ours)
    for specimen in refused:
        prefix = f"allscope: {directory / specimen.name}: "
        mine = [line for line in ours if line.startswith(prefix)]
        assert len(mine) == 1, (specimen.name, ours)
        assert re.search(specimen.reason, mine[0][len(prefix):]), (specimen.what, mine[0])
    return len(noise)


def test_cli_analyze_reports_each_bad_file_in_one_line_and_still_analyses_the_good_ones(corpus):
    directory, specimens = corpus
    refused, accepted = _refused(corpus), _accepted(corpus)
    result = _cli("analyze", *[str(directory / s.name) for s in specimens])
    noise = _check_cli_errors(result, directory, refused)
    analysed = [line for line in result.stdout.splitlines() if re.search(r": \w+( \(.*\))?: \d+ white cells", line)]
    assert len(analysed) == len(accepted), result.stdout
    for specimen in accepted:
        assert sum(line.startswith(f"{directory / specimen.name}: ") for line in analysed) == 1, specimen.name
    assert result.stdout.rstrip().endswith("does not make a diagnosis.")
    report("hostile files tried through allscope analyze", len(specimens))
    report("C-library diagnostic lines on stderr (libtiff)", noise)


def test_cli_analyze_json_gives_the_demo_frames_result_for_every_exact_conversion(corpus):
    directory, specimens = corpus
    accepted = _accepted(corpus)
    result = _cli("analyze", "--json", str(BASE_FILE), *[str(directory / s.name) for s in specimens])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    results = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert set(results) == {BASE_FILE.name} | {s.name for s in accepted}

    def essence(r):
        return {k: r[k] for k in ("width", "height", "cells", "cell_count", "blast_count", "flag", "quality")}

    reference = essence(results[BASE_FILE.name])
    assert reference["cell_count"] > 0
    exact = [s for s in accepted if s.same_as_base]
    assert len(exact) >= 6
    for specimen in exact:
        assert essence(results[specimen.name]) == reference, specimen.what
    for specimen in accepted:
        assert (results[specimen.name]["width"], results[specimen.name]["height"]) == (640, 480)


def test_cli_classify_reports_each_bad_file_in_one_line_and_classifies_the_good_ones(corpus):
    directory, specimens = corpus
    refused, accepted = _refused(corpus), _accepted(corpus)
    result = _cli("classify", *[str(directory / s.name) for s in specimens])
    _check_cli_errors(result, directory, refused)
    classified = re.findall(r"^(.+): (blast|normal) p_blast=(\d\.\d{3})", result.stdout, re.M)
    assert sorted(Path(path).name for path, _label, _p in classified) == sorted(s.name for s in accepted)
    report("hostile files tried through allscope classify", len(specimens))


def test_cli_with_only_bad_files_exits_non_zero_and_prints_no_disclaimer(corpus):
    directory, _specimens = corpus
    refused = _refused(corpus)
    result = _cli("analyze", *[str(directory / s.name) for s in refused])
    _check_cli_errors(result, directory, refused)
    assert "white cells" not in result.stdout and "diagnosis" not in result.stdout


# --- the upload page and the API --------------------------------------------------------------------------

def _sample(app, identifier: str = "H-200") -> int:
    with app.app_context():
        patient = Patient.get_or_none(Patient.identifier == identifier) or \
            Patient.create(identifier=identifier, name="Ada Example")
        return Sample.create(patient=patient, created_by="tech").id


def _files_of(data_dir: Path) -> set[str]:
    """Every file of the data directory but the database's own (it changes with each audited page view)."""
    return {str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
            if p.is_file() and not p.name.startswith("allscope.db")}


def _page_upload(client, sample_id: int, files: list[tuple[bytes, str]]):
    token = csrf_from(client.get(f"/samples/{sample_id}/capture").get_data(as_text=True))
    return client.post(f"/samples/{sample_id}/upload", content_type="multipart/form-data", follow_redirects=True,
                       data={"csrf_token": token, "images": [(io.BytesIO(d), n) for d, n in files]})


def _api_upload(client, sample_id: int, files: list[tuple[bytes, str]]):
    token = csrf_from(client.get(f"/samples/{sample_id}/capture").get_data(as_text=True))
    return client.post(f"/api/samples/{sample_id}/captures", headers={"X-CSRFToken": token},
                       content_type="multipart/form-data",
                       data={"files": [(io.BytesIO(d), n) for d, n in files]})


def _assert_nothing_stored(app, before: set[str]):
    data_dir = app.appliance.data.root
    after = _files_of(data_dir)
    assert after == before, sorted(after ^ before)
    assert not [p for p in data_dir.rglob("*") if p.name.endswith(".tmp")]
    with app.app_context():
        assert Capture.select().count() == 0
        assert AuditEvent.select().where(AuditEvent.entity == "capture").count() == 0


def test_upload_page_refuses_each_hostile_file_in_one_line_and_stores_nothing(app, client, auth, corpus):
    refused = _refused(corpus)
    sample_id = _sample(app)
    auth.login("tech")
    before = _files_of(app.appliance.data.root)
    for specimen in refused:
        response = _page_upload(client, sample_id, [(specimen.data, specimen.name)])
        page = response.get_data(as_text=True)
        assert response.status_code == 200, specimen.what
        assert "Traceback" not in page and "Stored " not in page
        flashes = [html.unescape(m) for m in re.findall(r'<p class="flash flash-error"[^>]*>(.*?)</p>', page, re.S)]
        assert len(flashes) == 1 and "\n" not in flashes[0], (specimen.what, flashes)
        assert flashes[0].startswith(f"{specimen.name}: "), (specimen.what, flashes)
        assert re.search(specimen.reason, flashes[0][len(specimen.name) + 2:]), (specimen.what, flashes[0])
    _assert_nothing_stored(app, before)
    # All at once: one line for each, and still nothing stored.
    page = _page_upload(client, sample_id, [(s.data, s.name) for s in refused]).get_data(as_text=True)
    flashes = [html.unescape(m) for m in re.findall(r'<p class="flash flash-error"[^>]*>(.*?)</p>', page, re.S)]
    assert [f.split(": ", 1)[0] for f in flashes] == [s.name for s in refused]
    _assert_nothing_stored(app, before)
    report("hostile files tried through the upload page", 2 * len(refused))


def test_api_refuses_each_hostile_file_with_a_4xx_json_line_and_stores_nothing(app, client, auth, corpus):
    refused = _refused(corpus)
    sample_id = _sample(app)
    auth.login("path")
    before = _files_of(app.appliance.data.root)
    for specimen in refused:
        response = _api_upload(client, sample_id, [(specimen.data, specimen.name)])
        assert response.status_code == 415 and response.is_json, (specimen.what, response.status_code)
        body = response.get_json()
        error = body["error"]
        assert error.startswith(f"{specimen.name}: ") and "\n" not in error, error
        assert re.search(specimen.reason, error[len(specimen.name) + 2:]), (specimen.what, error)
        assert body["files"] == [{"name": specimen.name, "error": error}]
    batch = _api_upload(client, sample_id, [(s.data, s.name) for s in refused])
    assert batch.status_code == 415
    assert batch.get_json()["error"] == f"no file was stored ({len(refused)} refused)"
    assert [f["name"] for f in batch.get_json()["files"]] == [s.name for s in refused]
    _assert_nothing_stored(app, before)
    report("hostile files tried through the API", 2 * len(refused))


def test_an_upload_over_the_size_limit_is_a_413_line_and_stores_nothing(app, client, auth):
    sample_id = _sample(app)
    auth.login("tech")
    before = _files_of(app.appliance.data.root)
    token = csrf_from(client.get(f"/samples/{sample_id}/capture").get_data(as_text=True))
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    big = distinct_variant(base_rgb(), 1) + b"\x00" * (2 * 1024 * 1024)
    response = client.post(f"/api/samples/{sample_id}/captures", headers={"X-CSRFToken": token},
                           content_type="multipart/form-data", data={"files": [(io.BytesIO(big), "big.png")]})
    assert response.status_code == 413 and "\n" not in response.get_json()["error"]
    assert "too large" in response.get_json()["error"]
    page = client.post(f"/samples/{sample_id}/upload", content_type="multipart/form-data",
                       data={"csrf_token": token, "images": [(io.BytesIO(big), "big.png")]})
    assert page.status_code == 413 and "Traceback" not in page.get_data(as_text=True)
    _assert_nothing_stored(app, before)


@pytest.fixture
def worker_app(app):
    """The app with a real analysis worker on the shipped model (no camera)."""
    from device.resources import DEFAULT_MODEL
    from device.services.jobs import AnalysisWorker

    worker = AnalysisWorker(app.appliance.data, DEFAULT_MODEL, watchdog_seconds=None).start()
    app.appliance.worker = worker  # stopped with the appliance when the test ends
    return app


def test_valid_odd_formats_are_stored_decoded_right_and_analysed_through_page_and_api(worker_app, client, auth,
                                                                                      corpus):
    app = worker_app
    accepted = _accepted(corpus)
    auth.login("tech")
    uploaded = {}  # capture id -> specimen
    for channel in ("page", "api"):
        for specimen in accepted:
            sample_id = _sample(app, f"H-{channel}-{specimen.name}")  # one sample each: equal pixels are duplicates
            if channel == "page":
                page = _page_upload(client, sample_id, [(specimen.data, specimen.name)]).get_data(as_text=True)
                assert "Stored 1 image: analysis queued." in page, (specimen.what, html.unescape(page)[-2000:])
                with app.app_context():
                    capture_id = Capture.get(Capture.sample == sample_id).id
            else:
                response = _api_upload(client, sample_id, [(specimen.data, specimen.name)])
                assert response.status_code == 201, (specimen.what, response.get_json())
                capture_id = response.get_json()["captures"][0]
            uploaded[capture_id] = specimen
    assert app.appliance.worker.wait_idle(240)
    data = app.appliance.data
    reference = None
    with app.app_context():
        for capture_id, specimen in uploaded.items():
            capture = Capture.get_by_id(capture_id)
            assert capture.status == "done", (specimen.what, capture.error)
            assert capture.original_name == specimen.name and (capture.width, capture.height) == (640, 480)
            stored = load_image_bytes(data.read_bytes(capture.image_path), "stored")
            assert np.array_equal(stored, load_image_bytes(specimen.data, specimen.name)), specimen.what
            difference = np.abs(stored.astype(np.int16) - specimen.expected.astype(np.int16)).mean()
            assert difference <= specimen.tolerance, (specimen.what, difference)
            if specimen.same_as_base:
                counts = (capture.cell_count, capture.blast_count, capture.flag)
                reference = reference or counts
                assert counts == reference, specimen.what
    assert reference is not None and reference[0] > 0
    report("valid odd-format files stored and analysed (page + API)", len(uploaded))


def test_hostile_upload_names_never_become_paths(app, client, auth, tmp_path):
    base = base_rgb()
    sample_id = _sample(app)
    auth.login("tech")
    data_dir = app.appliance.data.root
    outside_before = {p for p in tmp_path.rglob("*") if data_dir not in p.parents and p != data_dir}
    tried = 0
    for number, name in enumerate(TRAVERSAL_NAMES):
        content = distinct_variant(base, number)
        shown = display_name(name)
        if number % 2:
            response = _api_upload(client, sample_id, [(content, name)])
            assert response.status_code == 201, (name, response.get_json())
            assert response.get_json()["files"][0]["name"] == shown
        else:
            page = _page_upload(client, sample_id, [(content, name)]).get_data(as_text=True)
            assert "Stored 1 image" in page, name
            assert "<script>alert" not in page
        tried += 1
        with app.app_context():
            capture = Capture.select().order_by(Capture.id.desc()).get()
        assert capture.original_name == shown
        assert len(shown) <= 200 and not re.search(r"[/\\\x00-\x1f]|\.\.", shown), shown
        assert re.fullmatch(r"images/[0-9a-f]{2}/[0-9a-f]{64}\.png", capture.image_path)
        assert data_dir.joinpath(capture.image_path).is_file()
    with app.app_context():
        assert Capture.select().count() == len(TRAVERSAL_NAMES)
    stored = sorted(p for p in _files_of(data_dir) if p.startswith("images/"))
    assert len(stored) == len(TRAVERSAL_NAMES)
    assert {p for p in tmp_path.rglob("*") if data_dir not in p.parents and p != data_dir} == outside_before
    for name in TRAVERSAL_NAMES:  # no file under the name's last part next to the code, in the data dir or /tmp
        last = re.split(r"[/\\]", name)[-1]
        if last in ("", ".", "..") or "\x00" in last or len(last) > 255:
            continue
        for folder in (REPO_ROOT, data_dir, data_dir / "images", Path("/tmp"), Path("/etc")):
            assert not (folder / last).exists(), folder / last
    listing = client.get(f"/samples/{sample_id}/capture").get_data(as_text=True)
    assert "<script>alert" not in listing and "\x00" not in listing
    report("path-traversal and hostile upload names tried", tried)
