"""Taking frames in: camera stills and uploads become stored PNGs, Capture rows and queued analyses.

Shared by the pages (``webui/pages/capture.py``) and the JSON API
(``webui/api/captures.py``) so both follow the same rules: every upload is
decoded by ``device.core.imageio`` (a hostile or unreadable file is one line and
nothing is stored for it), the decoded RGB is stored losslessly as PNG by
content hash (file first, via a temp name and rename), then the row and its
audit event are written in one transaction, and only then is the analysis
queued. The same image twice for one sample is refused: it would be counted
twice in the report.
"""

from __future__ import annotations

import hashlib

import numpy as np
from flask import current_app, request, url_for
from flask_login import current_user
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from device.core.imageio import load_image_bytes
from device.errors import AllscopeError, ImageLoadError
from device.services.jobs import encode_png
from device.store.records import Capture, Sample, audit, db_proxy, row_dict


class IntakeError(AllscopeError):
    """A frame that was not stored, with the one line to show for it."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


def worker():
    return current_app.extensions.get("allscope_worker")


def grabber():
    return current_app.extensions.get("allscope_grabber")


def camera_status() -> str:
    found = grabber()
    if found is None:
        return current_app.extensions.get("allscope_camera_problem") or "no camera is running on this device"
    return found.status


def store_frame(sample: Sample, rgb: np.ndarray, source: str, original_name: str = "",
                camera_meta: dict | None = None) -> Capture:
    """Store one decoded frame for a sample and queue its analysis; IntakeError (409) for a duplicate."""
    png = encode_png(rgb)
    digest = hashlib.sha256(png).hexdigest()
    earlier = Capture.get_or_none((Capture.sample == sample.id) & (Capture.sha256 == digest))
    if earlier is not None:
        if source == "camera":
            raise IntakeError(f"This frame is identical to capture #{earlier.id} of this sample: move to a new field", 409)
        raise IntakeError(f"{original_name}: the same image is already capture #{earlier.id} of this sample", 409)
    data = current_app.extensions["allscope_data"]
    relative, digest = data.store_image(png)
    height, width = rgb.shape[:2]
    with db_proxy.atomic():
        capture = Capture.create(sample=sample.id, image_path=relative, sha256=digest, source=source,
                                 original_name=original_name, width=width, height=height,
                                 camera_meta=camera_meta, status="queued", created_by=current_user.username)
        audit("create", "capture", capture.id, username=current_user.username, address=request.remote_addr or "",
              after={"sample": sample.id, "source": source, "sha256": digest, "original_name": original_name,
                     "width": width, "height": height})
    running = worker()
    if running is not None:
        running.enqueue(capture.id)
    return capture


def store_upload(sample: Sample, upload: FileStorage) -> Capture:
    """Decode and store one uploaded file; IntakeError with a one-line reason when it is not a usable image."""
    name = display_name(upload.filename)
    data = upload.read()
    try:
        rgb = load_image_bytes(data, name)
    except ImageLoadError as error:
        raise IntakeError(str(error), 415) from None
    return store_frame(sample, rgb, "upload", original_name=name)


def store_uploads(sample: Sample, uploads: list[FileStorage]) -> tuple[list[Capture], list[tuple[str, str, int]]]:
    """Each file on its own: (stored captures, [(name, one-line error, status)]) — one bad file stops no other."""
    stored, failed = [], []
    for upload in uploads:
        try:
            stored.append(store_upload(sample, upload))
        except IntakeError as error:
            failed.append((display_name(upload.filename), str(error), error.status))
    return stored, failed


def chosen_files(files: list[FileStorage] | None) -> list[FileStorage]:
    """The files a user really chose (a form sent without a file holds one empty part)."""
    return [f for f in (files or []) if isinstance(f, FileStorage) and (f.filename or f.content_length)]


def store_still(sample: Sample) -> Capture:
    """A full-resolution still from the running camera; IntakeError (503) when there is none."""
    from device.camera.backends import CameraError

    found = grabber()
    if found is None:
        raise IntakeError(f"Cannot capture: {camera_status()}", 503)
    try:
        rgb, meta = found.capture_still()
    except CameraError as error:
        raise IntakeError(f"Cannot capture: {error}", 503) from None
    return store_frame(sample, rgb, "camera", camera_meta=meta)


def display_name(filename: str | None) -> str:
    """The uploaded name, sanitised; shown to users only, never used as a path."""
    return secure_filename(filename or "")[:200] or "upload"


def stage_of(capture: Capture) -> str:
    if capture.status == "done":
        return "done"
    if capture.status == "failed":
        return f"failed: {capture.error}" if capture.error else "failed"
    running = worker()
    if running is None:
        return f"{capture.status} (analysis is not running on this device)"
    return running.stage(capture.id) or capture.status


def capture_summary(capture: Capture) -> dict:
    """What the pages and the API show of a capture (no file paths)."""
    out = row_dict(capture, exclude=("image_path", "timings_ms"))
    out["sample_id"] = out.pop("sample")
    out["stage"] = stage_of(capture)
    out["image_url"] = url_for("capture.capture_image", capture_id=capture.id)
    out["thumb_url"] = url_for("capture.capture_image", capture_id=capture.id, w=320)
    return out


def poll_summary(capture: Capture) -> dict:
    keys = ("id", "status", "flag", "cell_count", "blast_count", "review_count", "error")
    return {**{k: getattr(capture, k) for k in keys}, "stage": stage_of(capture)}


def cell_dict(cell) -> dict:
    return {"id": cell.id, "x": cell.x, "y": cell.y, "w": cell.w, "h": cell.h, "ai_label": cell.ai_label,
            "p_blast": round(cell.p_blast, 4), "needs_review": cell.needs_review, "edge": cell.edge,
            "reviewer_label": cell.reviewer_label,
            "crop_url": url_for("capture.cell_crop", cell_id=cell.id) if cell.crop_path else None}
