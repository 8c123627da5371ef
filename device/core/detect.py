"""Find the white blood cells in one whole microscope frame.

Each white cell is found by its nucleus: Romanowsky stains make chromatin
purple (blue well above green, see ``cellprep.nucleus_score``), which red
cells, plasma and glass are not. Platelets are stained too but are far
smaller, so every size below is measured in red-cell radii estimated from the
frame itself: magnification differs between microscopes and cameras
(a lymphoblast nucleus is ~150 px wide in a 2592×1944 ALL-IDB1 frame and
~100 px in a 640×480 BCCD frame, i.e. 6 % vs 16 % of the frame width), while
the red cell is always ~7.5 µm and is present in every smear.

Steps, all on a downscaled working copy (longest side ``work_size``):

1. stain score, Otsu threshold (with a floor), remove specks, fill holes;
2. red-cell radius ``r`` from the unstained cells (``estimate_rbc_radius``);
3. split touching nuclei: cut each blob along the faint valleys of the stain
   score where two cells press together, then every distance-transform
   maximum that is as thick as a real nucleus and stands out from its
   neighbours (h-maxima) seeds one nucleus; the blob goes to the nearest seed;
4. merge the lobes of one segmented neutrophil nucleus: pieces close together
   whose union stays the size of one nucleus;
5. reject what is too small (platelets, debris) or too weakly stained;
6. map back to original pixels and cut a generous crop around each cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.core.cellprep import MIN_STAIN_THRESHOLD, nucleus_score, stain_threshold


@dataclass(frozen=True)
class DetectionParams:
    """Tunables of ``find_cells``.

    Lengths are in red-cell radii (``r``, estimated per frame), areas in
    red-cell areas (``A = pi r^2``), unless the name says otherwise, so one
    set of values works at any magnification.
    """

    # Longest side of the working copy in pixels; larger frames are shrunk.
    # Nuclei stay >= ~30 px wide at 1000 for the magnifications seen so far.
    work_size: int = 1000
    # Gaussian blur of the stain score, in working pixels (JPEG noise).
    blur_sigma: float = 1.0
    # Multiplier on the Otsu threshold of the stain score, and its floor.
    stain_factor: float = 1.0
    min_stain: float = MIN_STAIN_THRESHOLD
    # Longest side of the copy used for the red-cell size estimate.
    rbc_work_size: int = 400
    # Accepted red-cell radius as a fraction of the longest frame side; the
    # estimate is clipped to this range and ``rbc_fallback`` is used when no
    # red cells are found at all.
    rbc_min_fraction: float = 0.005
    rbc_max_fraction: float = 0.15
    rbc_fallback: float = 0.02
    # Opening radius that removes specks (stained red-cell rims, dust), in r.
    speck_radius: float = 0.08
    # Closing radius that bridges gaps inside one chromatin mass, in r.
    close_radius: float = 0.06
    # Stained pieces smaller than this are dropped before merging, in A.
    min_piece_area: float = 0.03
    # A blob is split only where it has >= 2 seeds each at least this thick
    # (distance to the blob edge, in r): lymphocyte and blast nuclei are
    # ~0.8-1.2 r in radius, neutrophil lobes ~0.3 r.
    split_min_core: float = 0.5
    # ... and each seed stands out above the waist joining it to a thicker
    # one by this share of its own thickness (two equal discs overlapping
    # so that the waist is < 75 % of their radius are split).
    split_min_depth: float = 0.25
    # Contact lines between touching cells: black top-hat of the stain
    # score with a disc of ``contact_width`` r, deeper than ``contact_depth``
    # x the stain threshold.
    contact_width: float = 0.3
    contact_depth: float = 0.25
    # Lobes are merged when their gap is at most ``lobe_gap`` r, the merged
    # nucleus spans at most ``max_nucleus_span`` r and at least one of the
    # two is lobe-sized (at most ``max_lobe_area`` A). Pieces split apart on
    # purpose are never merged back. Blast nuclei are 1.5-3 A, so two
    # touching blasts are never merged; BCCD neutrophil nuclei span ~4-5 r.
    lobe_gap: float = 0.5
    max_nucleus_span: float = 4.5
    max_lobe_area: float = 1.0
    # Smallest accepted nucleus (after merging), in A. Platelets are ~0.1 A
    # (giant ones up to ~0.3 A), small lymphocyte nuclei >= ~0.5 A.
    min_nucleus_area: float = 0.4
    # Mean stain score of a nucleus must reach this multiple of the threshold:
    # nuclei score ~1.8-2.5x, eosinophil granules, smudged cells and
    # many platelets less.
    min_mean_stain: float = 1.5
    # Cytoplasm margin added around the nucleus box for the cell box, in r.
    cell_margin: float = 0.35
    # Crop side = crop_scale x the larger cell box side (clipped at the edge).
    crop_scale: float = 1.8
    # A cell counts as cut by the border when its nucleus lies within this
    # distance of the frame edge (in r; a lymphocyte's cytoplasm rim is
    # ~0.2-0.3 r, so closer than that the cell is not whole).
    edge_margin: float = 0.15


@dataclass(frozen=True, eq=False)
class CellCandidate:
    """One white cell found in a frame (coordinates in original pixels).

    ``eq=False``: the crop is an array, so field-wise equality and hashing
    would be ill-defined; candidates compare by identity.
    """

    x: float  # cell centre (nucleus centroid), column
    y: float  # cell centre, row
    w: float  # cell bounding box width
    h: float  # cell bounding box height
    crop: np.ndarray  # RGB uint8 crop of the original frame centred on the cell
    touches_edge: bool  # the cell is cut by the frame border
    # uint8 0/1 mask, crop-sized: nuclei of OTHER cells found in this crop, so
    # that preparing this cell does not swallow its touching neighbours
    # (None: no other nucleus in the crop).
    neighbours: np.ndarray | None = None


# --------------------------------------------------------------------------
# helpers


def _disc(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _shrink(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Copy with longest side <= ``size`` and the scale factor used.

    Halving with INTER_AREA is several times faster than one INTER_AREA
    resize by an odd factor; the last step (factor > 0.5) is linear.
    """
    h, w = rgb.shape[:2]
    out = rgb
    while max(out.shape[:2]) >= 2 * size:
        out = cv2.resize(out, (out.shape[1] // 2, out.shape[0] // 2), interpolation=cv2.INTER_AREA)
    scale = size / max(out.shape[:2])
    if scale < 1.0:
        new = (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale)))
        out = cv2.resize(out, new, interpolation=cv2.INTER_LINEAR)
    return out, out.shape[1] / w


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _nms_peaks(dist: np.ndarray, min_value: float) -> np.ndarray:
    """Values of distance-transform maxima, each suppressing its own disc.

    Every accepted maximum stands for one inscribed disc; maxima inside an
    accepted disc belong to the same object and are skipped, so a chain of
    overlapping red cells yields about one value per cell.
    """
    local_max = cv2.dilate(dist, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero((dist >= local_max) & (dist >= min_value))
    values = dist[ys, xs]
    taken = np.zeros(dist.shape, np.uint8)
    accepted = []
    for j in np.argsort(-values):
        x, y = int(xs[j]), int(ys[j])
        if taken[y, x]:
            continue
        accepted.append(values[j])
        cv2.circle(taken, (x, y), int(round(values[j])), 1, -1)
    return np.asarray(accepted, np.float64)


def estimate_rbc_radius(rgb: np.ndarray, stained: np.ndarray, params: DetectionParams = DetectionParams()) -> float:
    """Typical red-cell radius in pixels of ``rgb`` (``stained``: nucleus mask).

    Cells (dark or saturated) are separated from the bright grey background
    by Otsu over the unstained pixels (so a large white cell cannot capture
    the threshold), pale centres are filled, and the radius is the
    length-weighted mode of inscribed-disc radii on a log scale. The mode,
    unlike a mean, ignores the large discs of red-cell clumps (gaps between
    touching cells get filled) and the thin rims of cells with open pallor.
    """
    side_full = max(rgb.shape[:2])
    fallback = params.rbc_fallback * side_full
    small, f = _shrink(rgb, params.rbc_work_size)
    side = max(small.shape[:2])
    k = max(1.0, side * 0.004)
    stained_small = cv2.resize(stained, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
    stained_small = cv2.dilate(stained_small, _disc(3 * k))
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    cellness = cv2.addWeighted(255 - gray, 0.5, hsv[..., 1], 0.5, 0)
    cellness = cv2.GaussianBlur(cellness, (0, 0), 1.0)
    values = cellness[stained_small == 0]
    if values.size < 100:
        return fallback
    t, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    cells = (cellness > t).astype(np.uint8)
    cells = cv2.morphologyEx(cells, cv2.MORPH_CLOSE, _disc(k))
    cells = cv2.morphologyEx(cells, cv2.MORPH_OPEN, _disc(k))
    if not cells.any() or cells.all():
        return fallback
    # No zero border on purpose: a red cell cut by the frame edge is taken to
    # continue beyond it, so its inscribed disc is not underestimated.
    dist = cv2.distanceTransform(_fill_holes(cells), cv2.DIST_L2, 5)
    min_r = params.rbc_min_fraction * side
    peaks = _nms_peaks(dist, max(min_r, 1.5))
    if peaks.size < 3:
        return fallback
    bins = np.arange(np.log(max(min_r, 1.5)), np.log(params.rbc_max_fraction * side) + 0.08, 0.08)
    hist, _ = np.histogram(np.log(peaks), bins=bins, weights=peaks)
    hist = np.convolve(hist, [1, 2, 3, 2, 1], "same")
    i = int(np.argmax(hist))
    radius = float(np.exp((bins[i] + bins[i + 1]) / 2)) / f
    lo, hi = params.rbc_min_fraction * side_full, params.rbc_max_fraction * side_full
    return float(np.clip(radius, lo, hi))


# --------------------------------------------------------------------------
# nucleus segmentation


def _stained_mask(score: np.ndarray, threshold: float, r: float, params: DetectionParams) -> np.ndarray:
    mask = (score > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disc(params.speck_radius * r))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disc(params.close_radius * r))
    return _fill_holes(mask)


def _cores(dist: np.ndarray, min_peak: float, min_depth: float, step: float) -> np.ndarray:
    """Label image of the cores of the maxima of ``dist`` that stand out.

    Flooding from the top (h-maxima without scikit-image): a maximum is
    born when the level first reaches it; when two flooded regions meet at a
    saddle, the lower maximum survives only if its height above the saddle
    is >= ``min_depth`` x its height, and only maxima >= ``min_peak`` count.
    A surviving maximum's core is its region just above the first saddle it
    shares with another survivor. 0 = no core; 1..n = cores; all 0 when
    fewer than two maxima survive.
    """
    seeds: list[list] = []  # [x, y, height, alive, first shared saddle]
    level = float(dist.max()) - step
    while level >= min_peak - 1e-6:
        count, labels = cv2.connectedComponents((dist >= level).astype(np.uint8), connectivity=8)
        members: dict[int, list[int]] = {}
        for k, seed in enumerate(seeds):
            if seed[3]:
                members.setdefault(int(labels[seed[1], seed[0]]), []).append(k)
        for lab in range(1, count):
            inside = members.get(lab, [])
            if not inside:
                region = np.where(labels == lab, dist, -1.0)
                y, x = np.unravel_index(int(np.argmax(region)), region.shape)
                seeds.append([int(x), int(y), float(dist[y, x]), True, None])
                continue
            highest = max(inside, key=lambda k: seeds[k][2])
            for k in inside:
                if k != highest and seeds[k][2] - level < min_depth * seeds[k][2]:
                    seeds[k][3] = False
            survivors = [k for k in inside if seeds[k][3]]
            if len(survivors) > 1:
                for k in survivors:
                    if seeds[k][4] is None:
                        seeds[k][4] = level
        level -= step
    cores = np.zeros(dist.shape, np.int32)
    if sum(seed[3] for seed in seeds) <= 1:
        return cores
    n = 0
    for x, y, _, alive, saddle in seeds:
        if not alive:
            continue
        # Survivors that never met another above min_peak are joined only
        # by a thin neck (or not at all): their core is their lowest region.
        core_level = (saddle if saddle is not None else level) + step
        _, labels = cv2.connectedComponents((dist >= core_level).astype(np.uint8), connectivity=8)
        n += 1
        cores[(labels == labels[y, x]) & (cores == 0)] = n
    return cores


def _split_component(piece: np.ndarray, cut: np.ndarray, r: float, params: DetectionParams) -> list[np.ndarray]:
    """Split one blob (a cropped 0/1 mask) into touching round nuclei.

    Seeds are distance-transform maxima thick enough to be a whole nucleus
    and separated from each other by a marked waist; every pixel of the blob
    goes to the nearest seed core. The distance transform runs on ``cut``,
    the blob minus the faint lines where two cells press against each other,
    which deepens the waist of a flat contact. Thin lobes never make seeds,
    so a lobed nucleus is left whole.
    """
    padded = cv2.copyMakeBorder(cut, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    min_core = params.split_min_core * r
    if float(dist.max()) < 2 * min_core:  # too thin to hold two nuclei side by side
        return [piece]
    cores = _cores(dist, min_core, params.split_min_depth, max(0.5, 0.05 * r))
    n = int(cores.max())
    if n <= 1:
        return [piece]
    _, nearest = cv2.distanceTransformWithLabels((cores == 0).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    # Map each zero pixel's label (pixel index order) back to its core.
    zero_ys, zero_xs = np.nonzero(cores)
    owner = np.zeros(len(zero_ys) + 1, np.int32)
    owner[1:] = cores[zero_ys, zero_xs]
    assigned = owner[nearest]
    parts = [((assigned == k) & (piece > 0)).astype(np.uint8) for k in range(1, n + 1)]
    return [p for p in parts if p.any()] or [piece]


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
    valleys = cv2.morphologyEx(score, cv2.MORPH_BLACKHAT, _disc(params.contact_width * r))
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
        cut = _fill_holes(blob & (1 - lines[y:y + h, x:x + w]))
        for part in _split_component(blob, cut, r, params):
            ys, xs = np.nonzero(part)
            px0, py0 = int(xs.min()), int(ys.min())
            sub = part[py0:int(ys.max()) + 1, px0:int(xs.max()) + 1]
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


# --------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class _Nucleus:
    """One accepted nucleus in working pixels."""

    cx: float
    cy: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int
    label: int = 0  # its value in the label map returned beside it


def _nuclei(score: np.ndarray, threshold: float, r: float, params: DetectionParams
            ) -> tuple[list[_Nucleus], np.ndarray]:
    """Accepted nuclei, and a working-size label map (0 = none, n = the nucleus with label n)."""
    mask = _stained_mask(score, threshold, r, params)
    pieces = _pieces(mask, _contact_lines(score, threshold, r, params), r, params)
    groups = _merge_lobes(pieces, mask.shape, r, params)
    area_unit = np.pi * r * r
    found: list[_Nucleus] = []
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
        found.append(_Nucleus(sx / area, sy / area, (x0, y0, x1, y1), area, label))
    return found, label_map


def _neighbour_mask(label_map: np.ndarray, own: int, window: tuple[int, int, int, int],
                    scale: tuple[float, float], out_shape: tuple[int, int]) -> np.ndarray | None:
    """Other nuclei inside a crop window (original pixels), as a crop-sized 0/1 mask; None when there are none."""
    c0, r0, c1, r1 = window
    sx, sy = scale
    wc0, wr0 = int(np.floor(c0 * sx)), int(np.floor(r0 * sy))
    wc1, wr1 = max(wc0 + 1, int(np.ceil(c1 * sx))), max(wr0 + 1, int(np.ceil(r1 * sy)))
    labels = label_map[wr0:wr1, wc0:wc1]
    others = ((labels > 0) & (labels != own)).astype(np.uint8)
    if not others.any():
        return None
    return cv2.resize(others, (out_shape[1], out_shape[0]), interpolation=cv2.INTER_NEAREST)


def _candidate(rgb: np.ndarray, nucleus: _Nucleus, r: float, params: DetectionParams,
               work_shape: tuple[int, int], label_map: np.ndarray | None = None) -> CellCandidate:
    """Map a nucleus from working to original pixels and cut its crop."""
    height, width = rgb.shape[:2]
    sx, sy = work_shape[1] / width, work_shape[0] / height
    x0, y0, x1, y1 = nucleus.box
    margin = max(1.0, params.edge_margin * r)
    touches = x0 <= margin or y0 <= margin or x1 >= work_shape[1] - margin or y1 >= work_shape[0] - margin
    pad = params.cell_margin * r
    # Cell box in original pixels, clipped to the frame.
    bx0 = max(0.0, (x0 - pad) / sx)
    by0 = max(0.0, (y0 - pad) / sy)
    bx1 = min(float(width), (x1 + pad) / sx)
    by1 = min(float(height), (y1 + pad) / sy)
    cx = (nucleus.cx + 0.5) / sx - 0.5
    cy = (nucleus.cy + 0.5) / sy - 0.5
    side = params.crop_scale * max(bx1 - bx0, by1 - by0)
    half = side / 2.0
    c0, c1 = int(max(0, round(cx - half))), int(min(width, round(cx + half)))
    r0, r1 = int(max(0, round(cy - half))), int(min(height, round(cy + half)))
    crop = np.ascontiguousarray(rgb[r0:r1, c0:c1])
    neighbours = None
    if label_map is not None:
        neighbours = _neighbour_mask(label_map, nucleus.label, (c0, r0, c1, r1), (sx, sy), crop.shape[:2])
    return CellCandidate(x=float(cx), y=float(cy), w=float(bx1 - bx0), h=float(by1 - by0), crop=crop,
                         touches_edge=bool(touches), neighbours=neighbours)


def find_cells(rgb: np.ndarray, params: DetectionParams = DetectionParams()) -> list[CellCandidate]:
    """White cells in one RGB uint8 frame, sorted top to bottom, left to right.

    Coordinates and crops refer to the original frame, whatever the working
    scale. Red cells and platelets are not reported.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("find_cells expects an RGB image of shape (H, W, 3)")
    if rgb.dtype != np.uint8:
        raise ValueError("find_cells expects a uint8 image")
    small, _ = _shrink(rgb, params.work_size)
    score = nucleus_score(small)
    if params.blur_sigma > 0:
        score = cv2.GaussianBlur(score, (0, 0), params.blur_sigma)
    threshold = max(stain_threshold(score) * params.stain_factor, params.min_stain)
    stained = (score > threshold).astype(np.uint8)
    r = estimate_rbc_radius(small, stained, params)
    nuclei, label_map = _nuclei(score, threshold, r, params)
    cells = [_candidate(rgb, n, r, params, small.shape[:2], label_map) for n in nuclei]
    cells.sort(key=lambda c: (c.y, c.x))
    return cells
