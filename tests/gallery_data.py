"""A large sample for the review gallery and the PDF size tests: real ALL-IDB1 frames (2592x1944 and
1712x1368 JPEG from the shared data), stored like the analysis worker stores them (lossless PNG frame, one
PNG crop per cell cut with the worker's own crop box), with cells at the annotated blast and other centres,
then on a grid when a frame has fewer annotations than the cells asked for."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from review_data import analysed_with

from device.core.imageio import load_image
from device.services.job_store import encode_png, store_crops
from device.store.records import Capture, Cell, Patient, Sample, db_proxy

# frames with the most annotated centres first (blasts in Im0NN_1.xyc, others in other/Im0NN_1.xyc)
FRAMES = ("Im053_1.jpg", "Im005_1.jpg", "Im052_1.jpg", "Im006_1.jpg", "Im015_1.jpg", "Im048_1.jpg", "Im049_1.jpg")


def _centres(path: Path) -> list[tuple[float, float]]:
    if not path.is_file():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(float(row[0]), float(row[1])) for row in rows if len(row) >= 2]


def frame_cells(frame: Path, width: int, height: int, count: int, rng: random.Random) -> list[dict]:
    """``count`` cells of one frame: annotated centres first, then a grid; about one cell diameter wide."""
    size = round(width / 12)
    blasts = _centres(frame.with_suffix(".xyc"))
    others = _centres(frame.parent / "other" / frame.with_suffix(".xyc").name)
    spots = [(x, y, True) for x, y in blasts] + [(x, y, False) for x, y in others]
    step = size * 1.2
    grid = [(size / 2 + i * step, size / 2 + j * step, False)
            for j in range(int(height // step)) for i in range(int(width // step))]
    rng.shuffle(grid)
    cells = []
    for x, y, blast in (spots + grid)[:count]:
        p_blast = rng.uniform(0.55, 0.99) if blast else rng.uniform(0.01, 0.6)
        edge = x - size / 2 < 0 or y - size / 2 < 0 or x + size / 2 > width or y + size / 2 > height
        cells.append({"x": x, "y": y, "w": size, "h": size, "ai_label": "blast" if p_blast >= 0.5 else "normal",
                      "p_blast": round(p_blast, 4), "needs_review": 0.35 <= p_blast <= 0.7, "edge": edge})
    return cells


def add_real_frames_sample(app, shared_data: Path, frames: int, cells: int, identifier: str = "MRN-0200",
                           seed: int = 14) -> tuple[int, list[int]]:
    """(sample id, cell ids): a sample with ``frames`` real ALL-IDB1 frames and ``cells`` cells over them."""
    folder = shared_data / "all-idb1"
    names = [folder / name for name in FRAMES[:frames] if (folder / name).is_file()]
    if len(names) < frames:
        pytest.skip(f"ALL-IDB1 frames missing in {folder}")
    rng = random.Random(seed)
    data = app.appliance.data
    ids: list[int] = []
    with app.app_context():
        with db_proxy.atomic():
            patient = Patient.get_or_none(Patient.identifier == identifier) or Patient.create(
                identifier=identifier, name="Bea Okafor", date_of_birth=dt.date(1987, 11, 3), sex="female",
                referring_clinician="Dr. Lindqvist", symptoms="fever, pallor", wbc=61.2, hemoglobin=7.4,
                platelets=28)
            sample = Sample.create(patient=patient, collected_at=dt.datetime(2026, 2, 9, 8, 15), created_by="tech")
        for index, frame in enumerate(names):
            rgb = load_image(frame)
            height, width = rgb.shape[:2]
            share = cells // frames + (1 if index < cells % frames else 0)
            specs = frame_cells(frame, width, height, share, rng)
            relative, digest = data.store_image(encode_png(rgb))
            with db_proxy.atomic():
                capture = Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload",
                                         original_name=frame.name, width=width, height=height, status="done",
                                         flag="needs_review", model_id="test-model",
                                         quality={"usable": True, "problems": []}, created_by="tech",
                                         **analysed_with())
                crops = store_crops(data, capture.id, rgb, [SimpleNamespace(**s) for s in specs])
                ids += [Cell.create(capture=capture, crop_path=path, **spec).id for spec, path in zip(specs, crops)]
    return sample.id, ids
