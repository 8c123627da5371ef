"""What the capture pages and the capture API share: the files a user chose, and captures as JSON with URLs.

The rules of storing a frame are ``device/services/intake.py``'s; this module
only turns uploads into (display name, bytes) and rows into what a page or a
client sees.
"""

from __future__ import annotations

from typing import Iterator

from flask import url_for
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from device.services.intake import stage_of
from device.store.records import Capture, row_dict


def chosen_files(files: list[FileStorage] | None) -> list[FileStorage]:
    """The files a user really chose (a form sent without a file holds one empty part)."""
    return [f for f in (files or []) if isinstance(f, FileStorage) and (f.filename or f.content_length)]


def display_name(filename: str | None) -> str:
    """The uploaded name, sanitised; shown to users only, never used as a path."""
    return secure_filename(filename or "")[:200] or "upload"


def upload_contents(files: list[FileStorage]) -> Iterator[tuple[str, bytes]]:
    """(display name, bytes) of each file, read one at a time (one upload in memory, not all of them)."""
    for upload in files:
        yield display_name(upload.filename), upload.read()


def capture_summary(capture: Capture, worker) -> dict:
    """What the pages and the API show of a capture (no file paths)."""
    out = row_dict(capture, exclude=("image_path", "timings_ms"))
    out["sample_id"] = out.pop("sample")
    out["stage"] = stage_of(capture, worker)
    out["image_url"] = url_for("capture.capture_image", capture_id=capture.id)
    out["thumb_url"] = url_for("capture.capture_image", capture_id=capture.id, w=320)
    return out


def poll_summary(capture: Capture, worker) -> dict:
    keys = ("id", "status", "flag", "cell_count", "blast_count", "review_count", "error")
    return {**{k: getattr(capture, k) for k in keys}, "stage": stage_of(capture, worker)}


def cell_dict(cell) -> dict:
    return {"id": cell.id, "x": cell.x, "y": cell.y, "w": cell.w, "h": cell.h, "ai_label": cell.ai_label,
            "p_blast": round(cell.p_blast, 4), "needs_review": cell.needs_review, "edge": cell.edge,
            "reviewer_label": cell.reviewer_label,
            "crop_url": url_for("capture.cell_crop", cell_id=cell.id) if cell.crop_path else None}
