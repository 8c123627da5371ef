"""Red-cell radius of a frame: the ruler every size in cell finding is measured with.

The red cell is ~7.5 µm in every smear, whatever the microscope and camera,
so its radius in pixels, measured on the frame itself, turns the detector's
lengths (in red-cell radii) into pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.core.detect_params import DetectionParams
from device.core.morphology import disc, fill_holes, shrink


def nms_peaks(dist: np.ndarray, min_value: float) -> np.ndarray:
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
    small, f = shrink(rgb, params.rbc_work_size)
    side = max(small.shape[:2])
    k = max(1.0, side * 0.004)
    stained_small = cv2.resize(stained, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
    stained_small = cv2.dilate(stained_small, disc(3 * k))
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    cellness = cv2.addWeighted(255 - gray, 0.5, hsv[..., 1], 0.5, 0)
    cellness = cv2.GaussianBlur(cellness, (0, 0), 1.0)
    values = cellness[stained_small == 0]
    if values.size < 100:
        return fallback
    t, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    cells = (cellness > t).astype(np.uint8)
    cells = cv2.morphologyEx(cells, cv2.MORPH_CLOSE, disc(k))
    cells = cv2.morphologyEx(cells, cv2.MORPH_OPEN, disc(k))
    if not cells.any() or cells.all():
        return fallback
    # No zero border on purpose: a red cell cut by the frame edge is taken to
    # continue beyond it, so its inscribed disc is not underestimated.
    dist = cv2.distanceTransform(fill_holes(cells), cv2.DIST_L2, 5)
    min_r = params.rbc_min_fraction * side
    peaks = nms_peaks(dist, max(min_r, 1.5))
    if peaks.size < 3:
        return fallback
    bins = np.arange(np.log(max(min_r, 1.5)), np.log(params.rbc_max_fraction * side) + 0.08, 0.08)
    hist, _ = np.histogram(np.log(peaks), bins=bins, weights=peaks)
    hist = np.convolve(hist, [1, 2, 3, 2, 1], "same")
    i = int(np.argmax(hist))
    radius = float(np.exp((bins[i] + bins[i + 1]) / 2)) / f
    lo, hi = params.rbc_min_fraction * side_full, params.rbc_max_fraction * side_full
    return float(np.clip(radius, lo, hi))

