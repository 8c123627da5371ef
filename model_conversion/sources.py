"""Cell loaders for the collections beyond ALL-IDB2, C-NMC and PBC, and the source grouping.

* ALL-IDB1 frames: one cell per blast centroid (``ImNNN_Y.xyc``) and, as
  normal cells, the ``other/`` centres that cell finding confirms as a white
  cell (the list also holds platelets, which are not white cells), plus every
  whole cell found in a frame without blasts (``_0``: a healthy smear).
* BCCD frames: every box called WBC (normal white cells).
* wbc-segmentation (Jiangxi Tecom, CellaVision blog): single-cell crops with
  an expert nucleus/cytoplasm mask (normal white cells).

Frame cells record their centre, cell size and the frame's red-cell radius
so that a preparation can cut a field of fixed physical size; the split
group is the frame. Crop-only collections get the documented per-source
red-cell radius of ``model_conversion.scales``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from model_conversion.data import BLAST, NORMAL, Sample, _read_labels, load_all_idb2, load_cnmc, load_pbc
from model_conversion.scales import SOURCE_RBC_RADIUS_PX

# Leave-one-source-out units: ALL-IDB2's crops were cut from ALL-IDB1 frames,
# so both collections are one source.
SOURCE_GROUPS = {
    "all-idb": ("all-idb1", "all-idb2"),
    "pbc": ("pbc-normal",),
    "bccd": ("bccd",),
    "tecom": ("tecom",),
    "cellavision-blog": ("cellavision-blog",),
    "c-nmc": ("c-nmc-2019",),
}
SOURCE_OF = {collection: source for source, collections in SOURCE_GROUPS.items() for collection in collections}

# ALL-IDB1 Im093_0 and Im108_0 are the same frame.
_ALL_IDB1_DUPLICATES = {"Im108_0": "Im093_0"}


def load_wbc_segmentation(data: Path, lab: str) -> list[Sample]:
    """Normal white cells of one wbc-segmentation laboratory ('tecom' or 'cellavision-blog'), with masks."""
    folder = Path(data) / "wbc-segmentation" / lab
    return [Sample(folder / row["file"], NORMAL, lab, None, row["label"], f"{lab}:{row['file']}",
                   rbc_radius=SOURCE_RBC_RADIUS_PX.get(lab), mask=folder / row["mask"])
            for row in _read_labels(folder)]


def load_bccd_cells(data: Path) -> list[Sample]:
    """Every WBC box of every BCCD frame; the frame is the group."""
    from device.core.imageio import load_image
    from model_conversion.eval_detection import read_voc_boxes
    from model_conversion.scales import frame_rbc_radius

    folder = Path(data) / "bccd"
    annotations = sorted((folder / "Annotations").glob("*.xml"))
    if not annotations:
        raise FileNotFoundError(f"{folder / 'Annotations'}: no BCCD annotations found")

    def frame_cells() -> list[dict]:
        rows = []
        for xml_path in annotations:
            image = folder / "JPEGImages" / f"{xml_path.stem}.jpg"
            boxes = read_voc_boxes(xml_path)
            if not boxes or not image.is_file():
                continue
            r = frame_rbc_radius(load_image(image))
            for x0, y0, x1, y1 in boxes:
                rows.append({"file": image.name, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2,
                             "side": max(x1 - x0, y1 - y0), "r": r, "label": NORMAL, "type": "wbc"})
        return rows

    rows = _cached("bccd", [str(a) for a in annotations], frame_cells)
    return [Sample(folder / "JPEGImages" / row["file"], row["label"], "bccd", None, row["type"],
                   f"bccd:{row['file']}", (row["x"], row["y"]), row["side"], row["r"]) for row in rows]


def load_all_idb1_cells(data: Path) -> list[Sample]:
    """Blasts at the ALL-IDB1 centroids and normal white cells confirmed by cell finding (see module doc)."""
    folder = Path(data) / "all-idb1"
    frames = sorted(folder.glob("Im*.jpg"))
    if not frames:
        raise FileNotFoundError(f"{folder}: no ALL-IDB1 frames (Im*.jpg) found")
    rows = _cached("all-idb1", [str(f) for f in frames], lambda: _all_idb1_rows(folder, frames))
    samples = []
    for row in rows:
        stem = row["file"].rsplit(".", 1)[0]
        group = "all-idb1:" + _ALL_IDB1_DUPLICATES.get(stem, stem)
        side = row["side"] if row["side"] > 0 else None
        samples.append(Sample(folder / row["file"], row["label"], "all-idb1", None, row["type"], group,
                              (row["x"], row["y"]), side, row["r"]))
    return samples


def _all_idb1_rows(folder: Path, frames: list[Path]) -> list[dict]:
    from device.core.detect import find_cells
    from device.core.imageio import load_image
    from model_conversion.eval_detection import MATCH_FACTOR, read_points
    from model_conversion.scales import frame_rbc_radius

    rows = []
    for path in frames:
        rgb = load_image(path)
        cells = find_cells(rgb)
        r = frame_rbc_radius(rgb)
        widths = [max(c.w, c.h) for c in cells]
        radius = MATCH_FACTOR * float(np.median(widths)) if widths else 0.0
        blasts = read_points(path.with_suffix(".xyc"))
        others = read_points(folder / "other" / path.with_suffix(".xyc").name)
        blast_cell = _match(blasts, cells, radius, set())
        for j, (px, py) in enumerate(blasts):
            cell = cells[blast_cell[j]] if j in blast_cell else None
            rows.append(_row(path, cell, px, py, r, BLAST, "blast"))
        other_cell = _match(others, cells, radius, set(blast_cell.values()))
        for i in sorted(other_cell.values()):
            rows.append(_row(path, cells[i], cells[i].x, cells[i].y, r, NORMAL, "other-listed"))
        if path.stem.endswith("_0"):
            listed = set(other_cell.values())
            for i, cell in enumerate(cells):
                if i not in listed and not cell.touches_edge:
                    rows.append(_row(path, cell, cell.x, cell.y, r, NORMAL, "found-in-healthy-frame"))
    return rows


def _match(points, cells, radius: float, taken: set[int]) -> dict[int, int]:
    """Point index -> cell index, one-to-one, nearest pairs first (the rule of eval_detection.match_points)."""
    pairs = []
    for j, (px, py) in enumerate(points):
        for i, c in enumerate(cells):
            d = float(np.hypot(c.x - px, c.y - py))
            if i not in taken and (d <= radius or (abs(px - c.x) <= c.w / 2 and abs(py - c.y) <= c.h / 2)):
                pairs.append((d, j, i))
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, j, i in sorted(pairs):
        if j not in matched and i not in used:
            matched[j] = i
            used.add(i)
    return matched


def _row(path: Path, cell, x: float, y: float, r: float, label: int, cell_type: str) -> dict:
    side = float(max(cell.w, cell.h)) if cell is not None else 0.0
    cx, cy = (float(cell.x), float(cell.y)) if cell is not None else (float(x), float(y))
    return {"file": path.name, "x": cx, "y": cy, "side": side, "r": float(r), "label": label, "type": cell_type}


def _cached(name: str, keys: list[str], compute) -> list[dict]:
    """Rows computed once per (file list, loader version), kept in the cache folder."""
    from model_conversion.prepare import default_cache_dir

    digest = hashlib.sha256(("sources-v1|" + "\n".join(keys)).encode()).hexdigest()[:16]
    path = default_cache_dir() / "sources" / f"{name}_{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    rows = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)
    return rows


def with_source_scale(samples: list[Sample]) -> list[Sample]:
    """Fill in the documented red-cell radius of crop-only collections."""
    return [s if s.rbc_radius is not None or s.source not in SOURCE_RBC_RADIUS_PX
            else dataclasses.replace(s, rbc_radius=SOURCE_RBC_RADIUS_PX[s.source]) for s in samples]


def load_all_sources(data: Path) -> list[Sample]:
    """Every labelled cell of every collection in the shared data, each with its scale."""
    data = Path(data)
    samples = (load_all_idb2(data / "all-idb2") + load_all_idb1_cells(data) + load_pbc(data / "pbc-normal")
               + load_bccd_cells(data) + load_wbc_segmentation(data, "tecom")
               + load_wbc_segmentation(data, "cellavision-blog") + load_cnmc(data / "c-nmc-2019"))
    return with_source_scale(samples)
