"""Realistic records for the web load benchmark (``webui/bench/web.py``).

Patients with one or two samples, captures of the bundled demo frames carrying
the cells the shipped model really finds in them (analysed once), crops for
the records the clients open, signed reports for some samples, and an audit
trail. Rows are inserted directly in one transaction: fast, and no page of
the UI is exercised before the timed run.
"""

from __future__ import annotations

import random
from pathlib import Path

CLIENT_USERS = {"technician": "bench-tech", "pathologist": "bench-path", "admin": "bench-admin"}
FIRST = ("Ana", "Ben", "Chloe", "David", "Esra", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Luca")
LAST = ("Okafor", "Schmidt", "Silva", "Nguyen", "Haddad", "Kowalski", "Moreau", "Tanaka", "Rossi", "Olsen")


# --- data --------------------------------------------------------------------------------------------------

def _demo_results(model: Path) -> list[tuple[bytes, object]]:
    """(PNG bytes, FrameResult) for each bundled demo frame, analysed by the real model once."""
    from device.core.analysis import Analyzer
    from device.core.imageio import load_image
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig
    from device.resources import DEMO_FRAMES
    from device.services.jobs import encode_png

    analyzer = Analyzer(CellClassifier.load(model, DelegateConfig()))
    out = []
    for frame in sorted(DEMO_FRAMES.glob("*.jpg")):
        rgb = load_image(frame)
        out.append((encode_png(rgb), analyzer.analyze_frame(rgb, frame.name), rgb))
    return out


def seed(data_dir: Path, model: Path, patients: int, pool: int, password: str) -> dict:
    """Fill ``data_dir`` with users and records; returns id pools for the page URLs and the data's size."""
    from device.services import accounts
    from device.services.jobs import crop_box, encode_png
    from device.store.datadir import DataDir
    from device.store.records import Capture, Cell, Patient, Report, Sample, audit, db_proxy, open_database, utcnow

    data = DataDir.resolve(data_dir)
    database = open_database(data.database)
    try:
        for role, username in CLIENT_USERS.items():
            accounts.create_user(username, password, role, full_name=f"Bench {role}", actor="bench")
        frames = [(data.store_image(png), result, rgb) for png, result, rgb in _demo_results(model)]
        rng = random.Random(2025)
        ids = {"patient_id": [], "sample_id": [], "reported_sample_id": [], "report_id": [], "search": []}
        counts = {"patients": 0, "samples": 0, "captures": 0, "cells": 0, "reports": 0}
        with db_proxy.atomic():
            for number in range(1, patients + 1):
                patient = Patient.create(identifier=f"BENCH-{number:05d}",
                                         name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                                         sex=rng.choice(("female", "male", "unknown")), wbc=rng.uniform(2, 80),
                                         symptoms="fatigue, bruising" if number % 3 else "")
                audit("create", "patient", patient.id, username="bench-tech")
                counts["patients"] += 1
                in_pool = number <= pool
                for _ in range(rng.choice((1, 1, 2))):
                    sample = Sample.create(patient=patient, created_by="bench-tech", collected_at=utcnow())
                    audit("create", "sample", sample.id, username="bench-tech")
                    counts["samples"] += 1
                    for (image, digest), result, rgb in rng.sample(frames, rng.choice((1, 2, 3))):
                        capture = Capture.create(
                            sample=sample, image_path=image, sha256=digest, source="camera", status="done",
                            width=result.width, height=result.height, quality=result.quality, flag=result.flag,
                            cell_count=result.cell_count, blast_count=result.blast_count,
                            review_count=result.review_count, timings_ms=result.timings_ms,
                            model_id=model.name, created_by="bench-tech", analysed_at=utcnow())
                        counts["captures"] += 1
                        for index, cell in enumerate(result.cells):
                            crop = ""
                            if in_pool:  # only the pages the clients open show crops
                                x0, y0, x1, y1 = crop_box(cell.x, cell.y, cell.w, cell.h, result.width, result.height)
                                crop = data.store_crop(capture.id, index, encode_png(rgb[y0:y1, x0:x1]))
                            Cell.create(capture=capture, x=cell.x, y=cell.y, w=cell.w, h=cell.h, crop_path=crop,
                                        ai_label=cell.label, p_blast=cell.p_blast, needs_review=cell.needs_review,
                                        edge=cell.edge)
                            counts["cells"] += 1
                    if in_pool:
                        ids["sample_id"].append(sample.id)
                        if rng.random() < 0.4:
                            report = Report.create(sample=sample, status="signed", conclusion="No blasts seen.",
                                                   created_by="bench-path", signed_by="bench-path",
                                                   signed_at=utcnow(), ai_summary=_snapshot(sample))
                            ids["report_id"].append(report.id)
                            ids["reported_sample_id"].append(sample.id)
                            counts["reports"] += 1
                if in_pool:
                    ids["patient_id"].append(patient.id)
                    ids["search"].append(patient.name.split()[1][:4])
            # one frame waiting for analysis: the worker loads the model at start-up, as on a working device
            (image, digest), _result, _rgb = frames[0]
            Capture.create(sample=Sample.get_by_id(ids["sample_id"][0]), image_path=image, sha256=digest,
                           source="camera", status="queued", created_by="bench-tech")
        return {"ids": ids, "counts": counts}
    finally:
        database.close()


def _snapshot(sample) -> dict | None:
    try:
        from device.services.reporting import snapshot

        return snapshot(sample)
    except Exception:  # noqa: BLE001 - the reporting module is optional for the load figures
        return None
