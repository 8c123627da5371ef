"""Reading the cell-finding annotations and matching them to found cells (shared by the detection evaluations).

ALL-IDB1 lists centres (``ImNNN_Y.xyc``, ``other/ImNNN_Y.xyc``), BCCD Pascal VOC boxes.
``match_points`` is the one-to-one rule of ``model_conversion.eval_detection``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from device.core.detect import CellCandidate

MATCH_FACTOR = 0.6


def read_points(path: Path) -> list[tuple[float, float]]:
    """``x y`` pairs (tab or space separated), one per line; missing file -> []."""
    if not path.is_file():
        return []
    points = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            points.append((float(parts[0]), float(parts[1])))
    return points


def read_voc_boxes(path: Path, name: str = "WBC") -> list[tuple[float, float, float, float]]:
    """(xmin, ymin, xmax, ymax) of every object called ``name``."""
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        if (obj.findtext("name") or "").strip() != name:
            continue
        box = obj.find("bndbox")
        boxes.append(tuple(float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
    return boxes


def match_points(points: list[tuple[float, float]], cells: list[CellCandidate], radius: float,
                 taken: set[int] | None = None) -> tuple[list[bool], set[int]]:
    """One-to-one matching of listed centres to detected cells.

    A centre can match a cell whose centre lies within ``radius`` or whose
    box holds it; pairs are taken nearest first and each cell serves one
    centre only, so two blasts merged into one detection count as one miss.
    Cells in ``taken`` are not available. Returns (found per point, cells used).
    """
    taken = set() if taken is None else set(taken)
    pairs = []
    for j, (px, py) in enumerate(points):
        for i, c in enumerate(cells):
            d = float(np.hypot(c.x - px, c.y - py))
            inside = abs(px - c.x) <= c.w / 2 and abs(py - c.y) <= c.h / 2
            if d <= radius or inside:
                pairs.append((d, j, i))
    pairs.sort()
    found = [False] * len(points)
    used: set[int] = set()
    for _, j, i in pairs:
        if found[j] or i in used or i in taken:
            continue
        found[j] = True
        used.add(i)
    return found, used
