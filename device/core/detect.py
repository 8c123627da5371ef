"""Find the white blood cells in one whole microscope frame.

Each white cell is found by its nucleus: Romanowsky stains make chromatin
purple (blue well above green, see ``cellprep.nucleus_score``), which red
cells, plasma and glass are not. Platelets are stained too but are far
smaller, so every size below is measured in red-cell radii estimated from the
frame itself: magnification differs between microscopes and cameras
(a lymphoblast nucleus is ~150 px wide in a 2592×1944 ALL-IDB1 frame and
~100 px in a 640×480 BCCD frame, i.e. 6 % vs 16 % of the frame width), while
the red cell is always ~7.5 µm and is present in every smear.

Modules, each importing only those below it: ``detect`` (this one: frame in,
candidates out) -> ``nuclei`` -> ``nucleus_split``; ``rbc_radius``; all on
``detect_params`` (the tunables) and ``morphology`` (shared helpers).

Steps, all on a downscaled working copy (longest side ``work_size``):

1. stain score, Otsu threshold (with a floor), remove specks, fill holes
   (``nuclei``);
2. red-cell radius ``r`` from the unstained cells (``rbc_radius``);
3. split touching nuclei (``nucleus_split``): cut each blob along the faint valleys of the stain
   score where two cells press together, then every distance-transform
   maximum that is as thick as a real nucleus and stands out from its
   neighbours (h-maxima) seeds one nucleus; the blob goes to the nearest seed;
4. merge the lobes of one segmented neutrophil nucleus: pieces close together
   whose union stays the size of one nucleus (``nuclei``);
5. reject what is too small (platelets, debris) or too weakly stained
   (``nuclei``);
6. map back to original pixels and cut a generous crop around each cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.core.cellprep import nucleus_score, stain_threshold
from device.core.detect_params import DetectionParams
from device.core.morphology import Halvings, shrink
from device.core.nuclei import Nucleus, find_nuclei
from device.core.rbc_radius import estimate_rbc_radius
from device.core.stain import glass_colour, white_balanced

__all__ = ["CellCandidate", "DetectionParams", "estimate_rbc_radius", "find_cells"]


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
    crop: np.ndarray  # RGB uint8 crop of the original frame centred on the cell (a read-only view of it)
    touches_edge: bool  # the cell is cut by the frame border
    # uint8 0/1 mask, crop-sized: nuclei of OTHER cells found in this crop, so
    # that preparing this cell does not swallow its touching neighbours
    # (None: no other nucleus in the crop).
    neighbours: np.ndarray | None = None



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


def _candidate(rgb: np.ndarray, nucleus: Nucleus, r: float, params: DetectionParams,
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
    crop = rgb[r0:r1, c0:c1]  # a read-only view: copying every crop cost ~0.1 ms a cell for nothing
    crop.flags.writeable = False
    neighbours = None
    if label_map is not None:
        neighbours = _neighbour_mask(label_map, nucleus.label, (c0, r0, c1, r1), (sx, sy), crop.shape[:2])
    return CellCandidate(x=float(cx), y=float(cy), w=float(bx1 - bx0), h=float(by1 - by0), crop=crop,
                         touches_edge=bool(touches), neighbours=neighbours)


def _stain(small: np.ndarray, params: DetectionParams) -> tuple[np.ndarray, np.ndarray, float]:
    """Cast-free copy, smoothed stain score and threshold.

    Both are white-balanced on the glass, so colour casts cancel: the stain
    score with the glass at ``stain.GLASS_LEVEL``; the copy returned (for the
    red-cell radius, tuned on raw grey levels) at the glass's own brightness.
    """
    glass = glass_colour(small)
    balanced = white_balanced(small, glass, level=None)
    score = nucleus_score(white_balanced(small, glass))
    if params.blur_sigma > 0:
        score = cv2.GaussianBlur(score, (0, 0), params.blur_sigma)
    threshold = max(stain_threshold(score) * params.stain_factor, params.min_stain)
    return balanced, score, threshold


def find_cells(rgb: np.ndarray, params: DetectionParams = DetectionParams(),
               halvings: Halvings | None = None) -> list[CellCandidate]:
    """White cells in one RGB uint8 frame, sorted top to bottom, left to right.

    Coordinates and crops refer to the original frame, whatever the working
    scale. Red cells and platelets are not reported. ``halvings``: the
    frame's halvings (``morphology.Halvings``) when the quality gate made them.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("find_cells expects an RGB image of shape (H, W, 3)")
    if rgb.dtype != np.uint8:
        raise ValueError("find_cells expects a uint8 image")
    if halvings is not None and halvings.levels[0] is not rgb:
        halvings = None
    small, _ = shrink(rgb, params.work_size, halvings)
    balanced, score, threshold = _stain(small, params)
    r = estimate_rbc_radius(balanced, (score > threshold).astype(np.uint8), params)
    if r < params.min_work_radius and params.max_upscale > 1.0:
        # Low magnification or resolution: enlarge the working copy so a red
        # cell is min_work_radius px across, as at the magnifications the
        # lengths in r were tuned on (thin rims and gaps stay resolvable).
        factor = min(params.min_work_radius / r, params.max_upscale)
        width = small.shape[1]
        size = (max(1, round(width * factor)), max(1, round(small.shape[0] * factor)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
        balanced, score, threshold = _stain(small, params)
        r *= small.shape[1] / width
    nuclei, label_map = find_nuclei(score, threshold, r, params)
    cells = [_candidate(rgb, n, r, params, small.shape[:2], label_map) for n in nuclei]
    cells.sort(key=lambda c: (c.y, c.x))
    return cells
