"""From the stain score of a working copy to accepted nuclei.

Threshold and clean the stain mask, cut blobs along contact lines and split
touching nuclei (``nucleus_split``), merge the lobes of one segmented
nucleus, then keep what is nucleus-sized and stained enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.core.detect_params import DetectionParams
from device.core.morphology import disc, fill_holes
from device.core.nucleus_split import split_component


def _stained_mask(score: np.ndarray, threshold: float, r: float, params: DetectionParams) -> np.ndarray:
    mask = (score > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, disc(params.speck_radius * r))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disc(params.close_radius * r))
    return fill_holes(mask)



@dataclass
class _Piece:
    mask: np.ndarray  # 0/1 mask cropped to the bounding box
    x0: int
    y0: int
    parent: int  # index of the connected component it came from

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.mask.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h


def _contact_lines(score: np.ndarray, threshold: float, r: float, params: DetectionParams) -> np.ndarray:
    """Thin valleys of the stain score (black top-hat): where cells touch."""
    valleys = cv2.morphologyEx(score, cv2.MORPH_BLACKHAT, disc(params.contact_width * r))
    return (valleys > params.contact_depth * threshold).astype(np.uint8)


def _pieces(mask: np.ndarray, lines: np.ndarray, r: float, params: DetectionParams) -> list[_Piece]:
    area_unit = np.pi * r * r
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    pieces: list[_Piece] = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < params.min_piece_area * area_unit:
            continue
        blob = (labels[y:y + h, x:x + w] == i).astype(np.uint8)
        cut = fill_holes(blob & (1 - lines[y:y + h, x:x + w]))
        for part in split_component(blob, cut, r, params):
            px0, py0, pw, ph = cv2.boundingRect(part)  # of its non-zero pixels (np.nonzero: 10x slower)
            sub = part[py0:py0 + ph, px0:px0 + pw]
            pieces.append(_Piece(sub, x + px0, y + py0, i))
    return pieces


class _Groups:
    """Union-find over pieces, tracking each group's bounding box and area."""

    def __init__(self, pieces: list[_Piece]) -> None:
        self.parent = list(range(len(pieces)))
        self.box = [p.box for p in pieces]
        self.area = [p.area for p in pieces]

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union_box(self, a: int, b: int) -> tuple[int, int, int, int]:
        ba, bb = self.box[a], self.box[b]
        return min(ba[0], bb[0]), min(ba[1], bb[1]), max(ba[2], bb[2]), max(ba[3], bb[3])

    def join(self, a: int, b: int) -> None:
        self.box[a] = self.union_box(a, b)
        self.area[a] += self.area[b]
        self.parent[b] = a


def _neighbours(pieces: list[_Piece], shape: tuple[int, int], gap: float) -> list[tuple[float, int, int]]:
    """Pairs of pieces from different blobs within ``gap`` pixels, nearest first."""
    label_image = np.zeros(shape, np.int32)
    for idx, p in enumerate(pieces):
        x0, y0, x1, y1 = p.box
        view = label_image[y0:y1, x0:x1]
        view[p.mask > 0] = idx + 1
    g = int(np.ceil(gap))
    pairs: list[tuple[float, int, int]] = []
    for idx, p in enumerate(pieces):
        x0, y0, x1, y1 = p.box
        ex0, ey0 = max(0, x0 - g), max(0, y0 - g)
        ex1, ey1 = min(shape[1], x1 + g), min(shape[0], y1 + g)
        region = label_image[ey0:ey1, ex0:ex1]
        others = np.unique(region[(region > 0) & (region != idx + 1)])
        others = [int(o) - 1 for o in others if int(o) - 1 > idx and pieces[int(o) - 1].parent != p.parent]
        if not others:
            continue
        own = np.zeros(region.shape, np.uint8)
        own[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0] = p.mask
        dist = cv2.distanceTransform(1 - own, cv2.DIST_L2, 5)
        for o in others:
            d = float(dist[region == o + 1].min())
            if d <= gap:
                pairs.append((d, idx, o))
    pairs.sort()
    return pairs


def _merge_lobes(pieces: list[_Piece], shape: tuple[int, int], r: float, params: DetectionParams) -> list[list[int]]:
    """Group pieces that are the lobes of one nucleus (indices per group)."""
    area_unit = np.pi * r * r
    groups = _Groups(pieces)
    for _, a, b in _neighbours(pieces, shape, params.lobe_gap * r):
        ra, rb = groups.find(a), groups.find(b)
        if ra == rb:
            continue
        if min(groups.area[ra], groups.area[rb]) > params.max_lobe_area * area_unit:
            continue
        x0, y0, x1, y1 = groups.union_box(ra, rb)
        if max(x1 - x0, y1 - y0) > params.max_nucleus_span * r:
            continue
        groups.join(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        members.setdefault(groups.find(i), []).append(i)
    return list(members.values())



@dataclass(frozen=True)
class Nucleus:
    """One accepted nucleus in working pixels."""

    cx: float
    cy: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int
    label: int = 0  # its value in the label map returned beside it


def find_nuclei(score: np.ndarray, threshold: float, r: float, params: DetectionParams
            ) -> tuple[list[Nucleus], np.ndarray]:
    """Accepted nuclei, and a working-size label map (0 = none, n = the nucleus with label n)."""
    mask = _stained_mask(score, threshold, r, params)
    pieces = _pieces(mask, _contact_lines(score, threshold, r, params), r, params)
    groups = _merge_lobes(pieces, mask.shape, r, params)
    area_unit = np.pi * r * r
    found: list[Nucleus] = []
    label_map = np.zeros(mask.shape, np.int32)
    for members in groups:
        area = sum(pieces[i].area for i in members)
        if area < params.min_nucleus_area * area_unit:
            continue
        sx = sy = stain = 0.0
        x0 = y0 = 10**9
        x1 = y1 = -1
        for i in members:
            p = pieces[i]
            ys, xs = np.nonzero(p.mask)
            sx += float((xs + p.x0).sum())
            sy += float((ys + p.y0).sum())
            stain += float(score[ys + p.y0, xs + p.x0].sum())
            bx0, by0, bx1, by1 = p.box
            x0, y0, x1, y1 = min(x0, bx0), min(y0, by0), max(x1, bx1), max(y1, by1)
        if stain / area < params.min_mean_stain * threshold:
            continue
        label = len(found) + 1
        for i in members:
            p = pieces[i]
            h, w = p.mask.shape
            label_map[p.y0:p.y0 + h, p.x0:p.x0 + w][p.mask > 0] = label
        found.append(Nucleus(sx / area, sy / area, (x0, y0, x1, y1), area, label))
    return found, label_map
