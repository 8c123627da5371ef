"""The pictures of a stored frame for the pages: the file as kept, a scaled JPEG, or its thumbnail once pruned.

A frame is kept as it arrived (JPEG, PNG, TIFF, WebP; device/services/frame_files.py). Pages overlay the cell
outlines in the frame's own coordinates (an SVG viewBox of its width and height), so any picture of the frame's
proportions fits under them: when the retention policy pruned the full frame (or its file is missing), the
thumbnail written at analysis time is shown instead, at the size asked for.
"""

from __future__ import annotations

import io

from flask import Response, abort, send_file

from device.errors import AllscopeError
from device.services.frame_files import mimetype
from device.store.datadir import DataDir
from device.store.records import Capture

BROWSER_TYPES = {"image/jpeg", "image/png", "image/webp"}  # a TIFF is converted for the browser


def stored_file(data: DataDir, relative: str) -> bytes:
    """A stored file's bytes (decrypted when the data is encrypted at rest); 404 when there is none."""
    if not relative:
        abort(404)
    try:
        return data.read_bytes(relative)
    except (ValueError, OSError, AllscopeError):  # outside the data directory, missing, does not decrypt
        abort(404)


def frame_source(data: DataDir, capture: Capture) -> tuple[str, bool]:
    """(relative path of the picture to show, whether it is the full frame): the thumbnail once pruned."""
    if capture.frame_pruned_at is None and data.exists(capture.image_path):
        return capture.image_path, True
    if capture.thumb_path and data.exists(capture.thumb_path):
        return capture.thumb_path, False
    abort(404)


def frame_response(data: DataDir, capture: Capture, width: int | None, widths: tuple[int, int]) -> Response:
    relative, full = frame_source(data, capture)
    blob = stored_file(data, relative)
    kind = mimetype(relative)
    if not width and kind in BROWSER_TYPES:
        name = f"capture-{capture.id}{relative[relative.rfind('.'):]}" if full else f"capture-{capture.id}-thumb.jpg"
        return send_file(io.BytesIO(blob), mimetype=kind, download_name=name)
    from PIL import Image

    width = min(max(width or capture.width or 1, widths[0]), widths[1])
    try:
        with Image.open(io.BytesIO(blob)) as image:
            image = image.convert("RGB")
            if image.width > width:
                image = image.resize((width, max(1, round(image.height * width / image.width))),
                                     Image.Resampling.BILINEAR)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=82 if width < (capture.width or 0) else 92)
    except (OSError, ValueError, Image.DecompressionBombError):
        abort(404)
    return Response(buffer.getvalue(), mimetype="image/jpeg")
