"""What the capture pages and the capture API share: the files a user chose, and captures as JSON with URLs.

The rules of storing a frame are ``device/services/intake.py``'s; this module
only turns uploads into (display name, bytes) and rows into what a page or a
client sees.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import url_for
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from device.core.quality import advice
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


NO_CELLS_ADVICE = "No white cells found in this field: move the slide to a field with white cells."


def frame_advice(capture: Capture) -> tuple[list[str], list[str]]:
    """(the quality gate's problems, one line of advice each) of an analysed frame; the advice for a usable
    frame in which no white cell was found is to move the slide."""
    problems = list((capture.quality or {}).get("problems") or []) if isinstance(capture.quality, dict) else []
    lines = advice(problems)
    if not lines and capture.status == "done" and capture.flag == "no_cells_found":
        lines = [NO_CELLS_ADVICE]
    return problems, lines


def capture_summary(capture: Capture, worker) -> dict:
    """What the pages and the API show of a capture (no file paths)."""
    out = row_dict(capture, exclude=("image_path", "timings_ms"))
    out["sample_id"] = out.pop("sample")
    out["stage"] = stage_of(capture, worker)
    out["problems"], out["advice"] = frame_advice(capture)
    out["image_url"] = url_for("capture.capture_image", capture_id=capture.id)
    out["thumb_url"] = url_for("capture.capture_image", capture_id=capture.id, w=320)
    return out


def poll_summary(capture: Capture, worker) -> dict:
    keys = ("id", "status", "flag", "cell_count", "blast_count", "review_count", "error")
    problems, lines = frame_advice(capture)
    return {**{k: getattr(capture, k) for k in keys}, "stage": stage_of(capture, worker), "problems": problems,
            "advice": lines}


def cell_dict(cell) -> dict:
    return {"id": cell.id, "x": cell.x, "y": cell.y, "w": cell.w, "h": cell.h, "ai_label": cell.ai_label,
            "p_blast": round(cell.p_blast, 4), "needs_review": cell.needs_review, "edge": cell.edge,
            "reviewer_label": cell.reviewer_label,
            "crop_url": url_for("capture.cell_crop", cell_id=cell.id) if cell.crop_path else None}
