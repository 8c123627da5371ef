"""The pictures of the PDF report, as small JPEGs at their printed size.

A stored frame is the file as it arrived and a crop a JPEG q95 at the camera's resolution (before issue 15
both were lossless PNGs; a 2592x1944 frame's crop is ~250 px): embedded as it is, fpdf2 keeps every pixel,
and a 7-frame report weighed 4.7 MB (15 MB for 100 cells of 2592x1944 frames). Here each picture is scaled
to what the page prints (a 26 mm tile: 128 px, ~125 dpi; a frame: 640 px wide, drawn from its thumbnail once
the full frame is pruned) and JPEG-encoded, which fpdf2 embeds as it is (DCTDecode): ~5 kB a crop, ~60 kB a
frame.

A frame's picture carries the outline of each of its cells, coloured by the final label like the review page
(blast red, normal green, other purple, unusable grey; flagged and not yet reviewed: thick orange; edge
cells dashed).
"""

from __future__ import annotations

import io
import os

from PIL import Image, ImageDraw

CROP_PX = 128
FRAME_PX = 640
JPEG_QUALITY = 78
MAX_SOURCE_PIXELS = 40_000_000  # a stored frame is at most the upload limit; refuse anything beyond
COLOURS = {"blast": (198, 40, 40), "normal": (46, 125, 50), "other": (106, 27, 154), "unusable": (97, 97, 97)}
REVIEW = (239, 108, 0)
OTHER_CLASS = (21, 101, 192)  # a reviewer's differential class (lymphocyte, ...): counted with the normals


def _open(source) -> Image.Image | None:
    """An RGB image from bytes or a path, or None when there is none or it does not decode."""
    try:
        if isinstance(source, (bytes, bytearray)):
            image = Image.open(io.BytesIO(source))
        elif source is not None and os.path.isfile(source):
            image = Image.open(source)
        else:
            return None
        if image.width * image.height > MAX_SOURCE_PIXELS:
            return None
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def crop_jpeg(source, px: int = CROP_PX) -> bytes | None:
    """A crop (bytes or path) as a JPEG no larger than ``px`` on its longer side, or None."""
    image = _open(source)
    if image is None:
        return None
    image.thumbnail((px, px), Image.Resampling.LANCZOS)
    return _jpeg(image)


def _dashed_rect(draw: ImageDraw.ImageDraw, box, colour, width: int, dash: int = 6) -> None:
    x0, y0, x1, y1 = box
    for start, end, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True), (y0, y1, x0, False),
                                          (y0, y1, x1, False)):
        position = start
        while position < end:
            stop = min(position + dash, end)
            draw.line((position, fixed, stop, fixed) if horizontal else (fixed, position, fixed, stop),
                      fill=colour, width=width)
            position += 2 * dash


def frame_jpeg(source, cells: list[dict], px: int = FRAME_PX, frame_width: int | None = None) -> bytes | None:
    """A frame (bytes or path) scaled to ``px`` wide with the outline of each of ``cells``, as a JPEG, or None.

    ``frame_width``: the width of the frame the cells' boxes refer to, when ``source`` is a smaller picture of it
    (the thumbnail kept once the full frame is pruned, device/services/retention.py)."""
    image = _open(source)
    if image is None:
        return None
    frame_width = frame_width or image.width
    target = min(px, frame_width)
    scale = target / frame_width
    if image.width != target:
        image = image.resize((target, max(1, round(image.height * target / image.width))), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    # the open flagged cells last: drawn on top
    for cell in sorted(cells, key=lambda c: _open_flag(c)):
        box = tuple(round(v * scale) for v in (cell["x"] - cell["w"] / 2, cell["y"] - cell["h"] / 2,
                                               cell["x"] + cell["w"] / 2, cell["y"] + cell["h"] / 2))
        colour = REVIEW if _open_flag(cell) else COLOURS.get(cell["final_label"], OTHER_CLASS)
        width = 3 if _open_flag(cell) else 2
        if cell.get("edge"):
            _dashed_rect(draw, box, colour, width)
        else:
            draw.rectangle(box, outline=colour, width=width)
    return _jpeg(image)


def _open_flag(cell: dict) -> bool:
    return bool(cell.get("needs_review")) and not cell.get("edge") and cell.get("reviewer_label") is None
