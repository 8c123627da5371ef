"""Test data for the review and report tests: a patient, a sample and a capture of a real demo frame,
with cells whose crops are cut from that frame (stored through DataDir like the analysis worker does)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import cv2

from device.core.imageio import load_image
from device.store.records import Capture, Cell, Patient, Sample, db_proxy

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_FRAME = REPO_ROOT / "device" / "demo" / "BloodImage_00000.jpg"

# id order = creation order; positions inside the 640x480 demo frame
STANDARD_CELLS = [
    dict(x=100, y=100, w=60, h=60, ai_label="blast", p_blast=0.92, needs_review=False, edge=False),
    dict(x=250, y=120, w=60, h=60, ai_label="normal", p_blast=0.08, needs_review=False, edge=False),
    dict(x=400, y=200, w=70, h=70, ai_label="blast", p_blast=0.58, needs_review=True, edge=False),
    dict(x=520, y=300, w=60, h=60, ai_label="normal", p_blast=0.44, needs_review=True, edge=False),
    dict(x=10, y=240, w=40, h=60, ai_label="blast", p_blast=0.97, needs_review=False, edge=True),
    dict(x=630, y=50, w=30, h=50, ai_label="normal", p_blast=0.47, needs_review=True, edge=True),
]


def png_bytes(rgb) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buffer.tobytes()


def app_data(app):
    """The app's DataDir (its running appliance's)."""
    return app.appliance.data


SHIPPED = object()  # add_capture's default model: the shipped int8 file, as the analysis worker records it


def analysed_with(model=SHIPPED, threshold: float | None = None) -> dict:
    """The capture columns the analysis worker writes about the model file that ran (None: not recorded, as in
    captures analysed before schema v4) and the decision settings in force."""
    from device.core.decision import DecisionSettings
    from device.inference.model_info import read_model_info
    from device.resources import DEFAULT_MODEL

    if model is None:
        return {"model_identity": None, "decision": None}
    info = read_model_info(DEFAULT_MODEL if model is SHIPPED else model)
    decision = DecisionSettings.from_model(info.provenance)
    if threshold is not None:
        decision = DecisionSettings(threshold=threshold, review_low=min(decision.review_low, threshold),
                                    review_high=max(decision.review_high, threshold))
    return {"model_identity": info.identity(), "decision": decision.as_dict()}


def add_capture(app, sample_id: int, cells: list[dict], status: str = "done", flag: str = "needs_review",
                model=SHIPPED, threshold: float | None = None) -> list[int]:
    """A capture of the demo frame with ``cells``; a done one records ``model`` (a .tflite path, the shipped one
    by default, None: "not recorded") and the decision ``threshold`` (default: the model's own)."""
    recorded = analysed_with(model, threshold) if status == "done" else analysed_with(None)
    with app.app_context():
        data = app_data(app)
        rgb = load_image(DEMO_FRAME)
        height, width = rgb.shape[:2]
        relative, digest = data.store_image(png_bytes(rgb))
        ids = []
        with db_proxy.atomic():
            capture = Capture.create(sample=sample_id, image_path=relative, sha256=digest, source="upload",
                                     original_name=DEMO_FRAME.name, width=width, height=height, status=status,
                                     flag=flag if status == "done" else "",
                                     model_id=(recorded["model_identity"] or {}).get("short_id", "test-model"),
                                     quality={"usable": True, "problems": []}, created_by="tech", **recorded)
            for index, spec in enumerate(cells):
                x0, y0 = max(int(spec["x"] - spec["w"] / 2), 0), max(int(spec["y"] - spec["h"] / 2), 0)
                x1, y1 = min(int(spec["x"] + spec["w"] / 2), width), min(int(spec["y"] + spec["h"] / 2), height)
                crop_path = data.store_crop(capture.id, index, png_bytes(rgb[y0:y1, x0:x1]))
                ids.append(Cell.create(capture=capture, crop_path=crop_path, **spec).id)
        return ids


def add_sample(app, cells: list[dict] | None = None, identifier: str = "MRN-0042", name: str = "Anna Grünwald",
               status: str = "done") -> tuple[int, list[int]]:
    """(sample id, cell ids) of a new sample with one capture of the demo frame."""
    with app.app_context(), db_proxy.atomic():
        patient = Patient.get_or_none(Patient.identifier == identifier) or Patient.create(
            identifier=identifier, name=name, date_of_birth=dt.date(1961, 4, 2), sex="female",
            referring_clinician="Dr. Ōkubo", symptoms="fatigue, bruising", wbc=38.5, hemoglobin=8.9,
            platelets=41)
        sample = Sample.create(patient=patient, collected_at=dt.datetime(2026, 1, 5, 9, 30), created_by="tech")
    return sample.id, add_capture(app, sample.id, STANDARD_CELLS if cells is None else cells, status=status)


def api_headers(client, path: str = "/review") -> dict:
    """The CSRF header for JSON calls, read from a page's meta tag (as allscopeFetch does)."""
    from conftest import csrf_from

    return {"X-CSRFToken": csrf_from(client.get(path).get_data(as_text=True))}


def label(client, cell_id, value, headers):
    """Label one cell through the JSON API."""
    return client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers)


def review_flagged(client, cells, headers, second: str = "normal"):
    """Label the two flagged cells of ``add_sample``'s standard sample: the first blast, the second ``second``."""
    for cell_id, value in ((cells[2], "blast"), (cells[3], second)):
        assert label(client, cell_id, value, headers).status_code == 200
