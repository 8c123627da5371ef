"""The ``storage`` section of ``allscope bench all`` (issue 15): what a frame and its crops weigh in each format.

On the bench's upload frames (ALL-IDB1 JPEG files, 2592x1944, when the shared data is there): the file as
uploaded (kept as received), the decoded frame as PNG level 1 (what was stored before issue 15), WebP lossless
(``storage.still_format = "webp-lossless"``), JPEG q95 4:4:4 and JPEG q90 4:4:4 (the default for camera stills) with
their encode times,
the thumbnail; and every cell crop the analysis cuts from them as PNG, JPEG q95 4:4:4 (what is stored) and WebP
lossless. Medians per frame and per crop. A benchmark: nothing passes or fails on these figures.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _timed(encode, rgb) -> tuple[int, float]:
    started = time.perf_counter()
    blob = encode(rgb)
    return len(blob), (time.perf_counter() - started) * 1000.0


def measure_storage(frames: list[tuple[str, bytes]], analyzer) -> dict:
    """Figures (KB, ms) for the frames [(name, file bytes)]; ``analyzer`` finds the cells whose crops are cut."""
    from device.core.imageio import load_image_bytes
    from device.services.frame_files import encode_crop, encode_still, encode_thumbnail, pillow_bytes
    from device.services.job_store import crop_pixels

    rows: dict[str, list[float]] = {}
    crops: dict[str, list[float]] = {}

    def add(table, key, value):
        table.setdefault(key, []).append(value)

    for name, content in frames:
        rgb = load_image_bytes(content, name)
        add(rows, "original_kb", len(content) / 1024)
        for key, encode in (("png1", lambda a: pillow_bytes(a, "PNG", compress_level=1)),
                            ("webp_lossless", lambda a: encode_still(a, "webp-lossless")[0]),
                            ("jpeg95", lambda a: encode_still(a, "jpeg95")[0]),
                            ("jpeg90", lambda a: encode_still(a, "jpeg90")[0])):
            size, ms = _timed(encode, rgb)
            add(rows, f"{key}_kb", size / 1024)
            add(rows, f"{key}_ms", ms)
        add(rows, "thumb_kb", len(encode_thumbnail(rgb)) / 1024)
        for cell in analyzer.analyze_frame(rgb, name).cells:
            crop = np.ascontiguousarray(crop_pixels(rgb, cell))
            add(crops, "crop_png_kb", len(pillow_bytes(crop, "PNG", compress_level=1)) / 1024)
            add(crops, "crop_jpeg95_kb", len(encode_crop(crop)) / 1024)
            webp = pillow_bytes(crop, "WEBP", lossless=True, quality=0, method=0)
            add(crops, "crop_webp_lossless_kb", len(webp) / 1024)
    return {key: statistics.median(values) for key, values in {**rows, **crops}.items()} | \
        {"crops_measured": len(crops.get("crop_png_kb", []))}
