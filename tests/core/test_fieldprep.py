"""Fixed-physical-field preparation: size survives, the scale comes from the frame, device = training."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from device.core.fieldprep import (
    CROP_DEFAULT_RADII,
    FIELD_ID,
    FIELD_RADII,
    crop_scale,
    frame_rbc_radius,
    preparation_for,
    prepare_field,
    square_window,
)
from device.core.imageio import load_image


def _rows(folder):
    with open(folder / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _smear(r: int = 14, cells=((100, 100, 1.4), (260, 100, 2.6))) -> np.ndarray:
    """Pale smear with pink red cells of radius r and purple nuclei of given radius (in r)."""
    rng = np.random.default_rng(0)
    img = np.full((220, 380, 3), (228, 222, 226), np.uint8)
    for _ in range(60):
        x, y = int(rng.integers(0, 380)), int(rng.integers(0, 220))
        cv2.circle(img, (x, y), r, (210, 140, 160), -1)
    for x, y, k in cells:
        cv2.circle(img, (x, y), int(k * r), (95, 45, 140), -1)
    return img


def _stained_share(prepared: np.ndarray) -> float:
    rgb = prepared.astype(int)
    return float(((rgb[..., 2] - rgb[..., 1]) > 60).mean())


def test_field_keeps_true_size():
    """A nucleus 2.6 r across stays ~(2.6/1.4)^2 times the area of one 1.4 r across (cellprep fills both)."""
    img = _smear()
    small = _stained_share(prepare_field(img, 100, 100, 14, 96))
    large = _stained_share(prepare_field(img, 260, 100, 14, 96))
    assert 2.5 < large / small < 4.5
    # Same cell, camera at twice the magnification: same picture at the doubled radius.
    zoomed = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    twice = _stained_share(prepare_field(zoomed, 200, 200, 28, 96))
    assert abs(twice - small) < 0.02


def test_window_repeats_the_edge_and_checks_input():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    window = square_window(img, 0, 0, 10)
    assert window.shape == (10, 10, 3)
    np.testing.assert_array_equal(window[0, 0], img[0, 0])  # replicated corner
    np.testing.assert_array_equal(window[5:, 5:], img[:5, :5])
    with pytest.raises(ValueError):
        prepare_field(img, 5, 5, 0.0, 32)


def test_frame_scale_matches_the_documented_crop_scale_of_the_same_lab(shared_data):
    """ALL-IDB1 frames (2592x1944) and ALL-IDB2 crops come from one microscope: red cells ~37.5 px."""
    frame = load_image(shared_data / "all-idb1" / "Im001_1.jpg")
    r = frame_rbc_radius(frame)
    assert 30 < r < 47, r
    rows = _rows(shared_data / "all-idb2")[::26]
    scales = [crop_scale(load_image(shared_data / "all-idb2" / row["file"])) for row in rows]
    assert sum(s.method == "crop-estimate" for s in scales) >= len(scales) // 2
    assert 30 < float(np.median([s.rbc_radius_px for s in scales])) < 45


def test_crop_without_red_cells_falls_back_to_the_documented_default(shared_data):
    folder = shared_data / "c-nmc-2019"
    crop = load_image(folder / _rows(folder)[0]["file"])  # a segmented cell on black: no red cell
    scale = crop_scale(crop)
    if scale.method == "crop-estimate":  # the estimate may only be used when plausible
        assert max(crop.shape[:2]) / 12 <= scale.rbc_radius_px <= max(crop.shape[:2]) / 5
    else:
        assert scale.rbc_radius_px == pytest.approx(max(crop.shape[:2]) / CROP_DEFAULT_RADII)
    assert scale.to_dict()["field_px"] == pytest.approx(FIELD_RADII * scale.rbc_radius_px, abs=0.1)


def test_training_view_is_the_device_function(shared_data):
    """model_conversion.views 'field' must be byte-identical to what the device computes."""
    from model_conversion.data import BLAST, Sample
    from model_conversion.views import prepare

    path = shared_data / "all-idb1" / "Im001_1.jpg"
    frame = load_image(path)
    sample = Sample(path, BLAST, "all-idb1", None, "blast", "g", centre=(1200.0, 900.0), rbc_radius=36.0)
    np.testing.assert_array_equal(prepare("field", frame, sample, 64), prepare_field(frame, 1200, 900, 36.0, 64))


def test_model_metadata_chooses_the_preparation():
    assert preparation_for({}) == "cellprep"  # models from before issue 12
    assert preparation_for({"preprocessing": "cellprep-v2"}) == "cellprep"
    assert preparation_for({"preprocessing": FIELD_ID}) == "field"
    with pytest.raises(ValueError, match="field-v9"):
        preparation_for({"preprocessing": "field-v9"})


class _Recorder:
    """Stands in for CellClassifier: records what it is fed."""

    def __init__(self, provenance, size=48):
        self.info = SimpleNamespace(provenance=provenance, path="stub.tflite")
        self.input_size = size
        self.batches = []

    def predict(self, batch):
        self.batches.append(batch)
        return np.full(len(batch), 0.1, np.float32)


def test_analyzer_prepares_fields_for_a_field_model_and_reports_the_scale(shared_data):
    from device.core.analysis import Analyzer
    from device.core.quality import QualityThresholds

    frame = load_image(shared_data / "bccd" / "JPEGImages" / "BloodImage_00000.jpg")
    field_model = _Recorder({"preprocessing": FIELD_ID, "field_radii": 7.0})
    result = Analyzer(field_model, quality=QualityThresholds()).analyze_frame(frame)
    report = result.to_dict()
    if result.flag == "unusable_image":
        pytest.skip("quality gate refused the BCCD frame (another colleague's module)")
    assert report["scale"]["preprocessing"] == FIELD_ID and report["scale"]["method"] == "frame-estimate"
    r = report["scale"]["rbc_radius_px"]
    assert r == pytest.approx(frame_rbc_radius(frame), abs=0.01)
    assert 10 < r < 60  # BCCD 640x480: red cells ~25-40 px across
    batch = field_model.batches[0]
    c = result.cells[0]
    np.testing.assert_array_equal(batch[0], prepare_field(frame, c.x, c.y, frame_rbc_radius(frame), 48))

    old_model = _Recorder({"preprocessing": "cellprep-v2"})
    old = Analyzer(old_model).analyze_frame(frame).to_dict()
    assert old["scale"]["method"] == "cell-fills-input" and old["scale"]["rbc_radius_px"] is None
    # cellprep blackens the background: most corners are black; the field keeps the smear.
    assert (old_model.batches[0][:, 0, 0].max(axis=1) == 0).mean() > 0.5
    assert (batch[:, 0, 0].max(axis=1) == 0).mean() < 0.1


def test_unknown_preparation_is_a_model_load_error():
    from device.core.analysis import Analyzer
    from device.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="stub.tflite"):
        Analyzer(_Recorder({"preprocessing": "something-new"}))
