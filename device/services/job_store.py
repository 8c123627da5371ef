"""What an analysis job reads and writes: the stored frame, cell crops, its thumbnail, and the result rows.

The crops (JPEG q95, device/services/frame_files.py) and the thumbnail are written first (atomic), then the
cells and the capture's
result in one IMMEDIATE transaction with its audit event: a crash leaves at most orphan crop files,
never rows without files or half a result. A failure marks the capture failed with one line.
"""

from __future__ import annotations

import numpy as np

from device.core.analysis import FrameResult
from device.errors import AllscopeError, ImageLoadError
from device.services.frame_files import encode_crop, encode_thumbnail
from device.store.datadir import DataDir
from device.store.records import Capture, Cell, audit, db_proxy, utcnow

CROP_MARGIN = 0.25  # of the cell's box, each side: enough context for a reviewer to see the neighbourhood


def write_result(capture_id: int, result: FrameResult, crop_paths: list[str], timings: dict, model_id: str,
                 username: str, analysed_with: dict | None = None, kept: dict | None = None) -> None:
    """Cells, counts, quality, timings and the model that ran, in one transaction with its audit event.
    ``kept``: ``thumb_path`` and ``stored_bytes`` (frame, crops and thumbnail) from :func:`store_pictures`."""
    # IMMEDIATE: this transaction reads before it writes, and in WAL mode a deferred one whose snapshot
    # went stale (an upload committed meanwhile) fails at once with "database is locked", busy_timeout or not.
    with db_proxy.atomic("IMMEDIATE"):
        capture = Capture.get_by_id(capture_id)
        Cell.delete().where(Cell.capture == capture_id).execute()
        if result.cells:
            Cell.insert_many([
                {"capture": capture_id, "x": c.x, "y": c.y, "w": c.w, "h": c.h, "crop_path": path,
                 "ai_label": c.label, "p_blast": c.p_blast, "needs_review": c.needs_review, "edge": c.edge}
                for c, path in zip(result.cells, crop_paths)]).execute()
        after = {"status": "done", "flag": result.flag, "cell_count": result.cell_count,
                 "blast_count": result.blast_count, "review_count": result.review_count, "model_id": model_id}
        Capture.update(**after, **(analysed_with or {}), **(kept or {}), quality=result.quality, timings_ms=timings,
                       error="", analysed_at=utcnow(), version=Capture.version + 1) \
            .where(Capture.id == capture_id).execute()
        audit("analyse", "capture", capture_id, username=username, before={"status": capture.status}, after=after)


def mark_failed(capture_id: int, message: str, username: str) -> None:
    with db_proxy.atomic():
        Capture.update(status="failed", error=message, version=Capture.version + 1) \
            .where(Capture.id == capture_id).execute()
        audit("analyse_failed", "capture", capture_id, username=username, detail=message)


def interrupted_captures() -> list[int]:
    """Captures a crash left queued or analysing, oldest first: they are run again from scratch."""
    return [c.id for c in Capture.select(Capture.id).where(Capture.status.in_(("queued", "analysing")))
            .order_by(Capture.id)]


def store_crops(data: DataDir, capture_id: int, rgb: np.ndarray, cells) -> list[str]:
    return [data.store_crop(capture_id, i, encode_crop(crop_pixels(rgb, cell)), ".jpg") for i, cell in enumerate(cells)]


def store_pictures(data: DataDir, capture: Capture, rgb: np.ndarray, cells) -> tuple[list[str], dict]:
    """The crops and the thumbnail of an analysed frame: (crop paths, the capture's ``thumb_path`` and
    ``stored_bytes``: what it keeps on disk, for the disk-space guard)."""
    crops = store_crops(data, capture.id, rgb, cells)
    thumb = data.store_thumb(capture.id, encode_thumbnail(rgb))
    kept = data.stored_size(capture.image_path) + data.stored_size(thumb) + sum(map(data.stored_size, crops))
    return crops, {"thumb_path": thumb, "stored_bytes": kept}


def load_stored(data: DataDir, relative: str) -> np.ndarray:
    from device.core.imageio import load_image_bytes

    try:
        blob = data.read_bytes(relative)  # decrypted when the data is encrypted at rest
    except ValueError:
        raise ImageLoadError(relative, "stored path is outside the data directory") from None
    except FileNotFoundError:
        raise ImageLoadError(relative, "the stored image is missing") from None
    return load_image_bytes(blob, relative)


def crop_box(x: float, y: float, w: float, h: float, width: int, height: int,
             margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a cell's box (centre x, y) grown by ``margin`` each side, clipped to the frame."""
    half_w, half_h = w * (0.5 + margin), h * (0.5 + margin)
    x0, y0 = max(0, int(np.floor(x - half_w))), max(0, int(np.floor(y - half_h)))
    x1, y1 = min(width, int(np.ceil(x + half_w))), min(height, int(np.ceil(y + half_h)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def crop_pixels(rgb: np.ndarray, cell) -> np.ndarray:
    x0, y0, x1, y1 = crop_box(cell.x, cell.y, cell.w, cell.h, rgb.shape[1], rgb.shape[0])
    return rgb[y0:y1, x0:x1]


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise AllscopeError("could not encode an image as PNG")
    return buffer.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 frame (lossless: what is stored is what was analysed)."""
    return _png(rgb)
