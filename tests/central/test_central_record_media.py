"""The record page of a capture shows its crops (not a raw JSON path) and only its lasting versions (issue 16)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from central_web_kit import admin, central, device_row, record_row  # noqa: F401  (shared fixtures)
from conftest import REPO_ROOT

DEMO = min((REPO_ROOT / "device" / "demo").glob("*.jpg"))


def _capture(device, version, status, cells):
    return record_row(device, "capture", 3, version, {"id": 3, "status": status, "image_path": "frames/3.jpg",
                                                      "cell_count": len(cells), "blast_count": 1, "cells": cells},
                      "KN-100")


def _received_file(central, device, name: str) -> int:
    from sync.central.models import ReceivedFile

    data = DEMO.read_bytes()
    stored = Path("files") / device.device_id / f"{hashlib.sha256(data).hexdigest()}.jpg"
    (central.central.data.root / stored).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO, central.central.data.root / stored)
    return ReceivedFile.create(device=device, sha256=hashlib.sha256(data).hexdigest(), name=name, size=len(data),
                               chunks=1, received_chunks=1, complete=True, stored_path=str(stored)).id


def test_capture_page_shows_the_crops_and_hides_transient_versions(central, admin):
    device = device_row()
    cells = [{"crop_path": "crops/3/1.jpg", "ai_label": "blast", "p_blast": 0.91},
             {"crop_path": "crops/3/2.jpg", "ai_label": "normal", "p_blast": 0.04}]
    _capture(device, 1, "queued", [])
    _capture(device, 2, "analysing", [])
    done = _capture(device, 3, "done", cells)
    file_id = _received_file(central, device, "crops/3/1.jpg")
    page = admin.get(f"/records/{done.id}").get_data(as_text=True)
    assert f'src="/files/{file_id}"' in page and "cell 1: blast, p(blast) 0.91" in page
    assert "cell 2: normal" in page and "not received" in page  # crop 2 never arrived
    assert "2 transient versions (queued, analysing) not listed." in page
    assert ">v3 done</a>" in page and ">v1 queued</a>" not in page
    assert "<details" in page and "Raw content" in page  # the JSON is still there, folded
    image = admin.get(f"/files/{file_id}")
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data == DEMO.read_bytes()
    assert "no-store" in image.headers["Cache-Control"]
    assert admin.get(f"/files/{file_id + 1}").status_code == 404


def test_a_file_outside_the_data_directory_is_never_served(central, admin):
    from sync.central.models import ReceivedFile

    device = device_row()
    row = ReceivedFile.create(device=device, sha256="ab" * 32, name="crops/x.jpg", size=1, chunks=1,
                              received_chunks=1, complete=True, stored_path="../../etc/passwd")
    assert admin.get(f"/files/{row.id}").status_code == 404
