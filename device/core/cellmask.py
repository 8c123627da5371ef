"""Grow a white cell's nucleus into the whole cell (nucleus + cytoplasm), from the cell's own colours.

Used by ``cellprep.segment_cell``. Pale or pink cytoplasm (neutrophils,
monocytes) is neither stained like chromatin nor blue, so no fixed colour
rule finds it in every laboratory; but within one crop it differs from what
surrounds the cell. Steps, on a copy whose longest side is at most
``WORK_SIZE`` px (the cost stays about constant whatever the crop size):

1. optical density (OD) per channel against the crop's own glass (the median
   colour of its brightest tenth): stain and light intensity become
   absorbance, and the glass is ~0 whatever its tint;
2. a Gaussian colour model (OD space) of the **cytoplasm** from the thin
   ring just outside the nucleus (``RING`` x the nucleus's equivalent
   radius), and one of **what lies beyond the cell** (stained pixels farther
   than ``OUTER`` radii from the nucleus: red cells, neighbours, debris);
3. ring pixels that are typical of the outside (within ``PURIFY`` of its
   model: red cells pressed against a cell with scant cytoplasm) are dropped
   from the cytoplasm sample;
4. a pixel joins the cell when it absorbs (OD sum above ``MIN_OD``), lies
   within ``MAX_GROW`` nucleus radii of the nucleus, and its colour is closer
   (Gaussian log-likelihood) to the cytoplasm than to the outside model;
5. an opening cuts thin bridges; the component holding the nucleus, holes
   filled, is the cell; a star check around the nucleus cuts back narrow
   bulges (red cells the growth leaked into).

Crops cut out on black (C-NMC) have no glass: their reference is white and
black pixels never join the cell. Parameters were chosen on a seeded half of
the Tecom and CellaVision-blog images (their expert masks), the other half
held out (``model_conversion/maskiou.py``, ``CROSS_SOURCE.md``).
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_SIZE = 96
RING = 0.35  # cytoplasm sample: ring width, in nucleus equivalent radii
OUTER = 1.2  # outside sample: farther than this from the nucleus, in radii
MAX_GROW = 1.5  # the cell reaches at most this far beyond the nucleus, in radii
MIN_OD = 0.25  # OD sum (3 channels) below which a pixel is glass
MAX_DISTANCE = 3.5  # Mahalanobis distance to the cytoplasm model still accepted
PURIFY = 1.0  # ring pixels within this Mahalanobis distance of the outside model are not cytoplasm
OPEN = 0.16  # opening diameter, in nucleus radii
RAYS = 64  # star check: rays from the nucleus's centre
LOW = 30  # ... a ray may reach BULGE x this percentile of its quarter-turn neighbours' reach
BULGE = 1.3
GLOBAL_BULGE = 1.4  # ... and GLOBAL_BULGE x this percentile of all rays' reach
BLACK_LEVEL = 12  # grey below this: a black (pre-segmented) background
_LOG_LUT = np.log(np.arange(256, dtype=np.float32) + 1.0)


def optical_density(rgb: np.ndarray, gray: np.ndarray, black: np.ndarray) -> np.ndarray:
    """Per-channel OD (H x W x 3, float32, >= 0) against the crop's glass (white when it has none)."""
    usable = ~black
    if black.mean() > 0.1 or usable.sum() < 16:
        glass = np.full(3, 255.0, np.float32)
    else:
        histogram = np.bincount(gray[usable], minlength=256)
        level = int(np.searchsorted(np.cumsum(histogram), 0.9 * usable.sum()))
        glass = np.median(rgb[usable & (gray >= level)], axis=0).astype(np.float32)
    od = np.log(glass + 1.0)[None, None, :] - _LOG_LUT[rgb]
    return np.maximum(od, 0.0)


def _cost(pixels: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, float]:
    """Squared Mahalanobis distance of ``pixels`` (N x 3) to ``sample``'s Gaussian, and its log-determinant.

    The negative log-likelihood (x 2, up to a constant) is the sum of the two.
    """
    cov = np.cov(sample.T) + np.eye(3) * 2e-3
    diff = pixels - sample.mean(axis=0)
    return ((diff @ np.linalg.inv(cov)) * diff).sum(axis=1), float(np.linalg.slogdet(cov)[1])


def _fill(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _star_regularised(cell: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """``cell`` cut to a star around the nucleus's centre with no narrow bulges.

    Along ``RAYS`` rays from the nucleus's centre the cell ends where the mask
    first does; a red cell leaked into shows as a bulge of the reach over a
    few rays, cut back to ``BULGE`` x the ``LOW`` percentile of the reach over
    a quarter turn around the ray (and ``GLOBAL_BULGE`` x that of all rays).
    """
    ys, xs = np.nonzero(seed)
    cy, cx = float(ys.mean()), float(xs.mean())
    h, w = cell.shape
    if not cell[round(cy), round(cx)]:
        return cell
    steps = np.arange(0, float(np.hypot(h, w)), 1.0, dtype=np.float32)
    angles = np.linspace(0, 2 * np.pi, RAYS, endpoint=False, dtype=np.float32)
    px = cx + np.cos(angles)[:, None] * steps[None, :]
    py = cy + np.sin(angles)[:, None] * steps[None, :]
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    values = np.zeros(px.shape, bool)
    values[inside] = cell[np.rint(py[inside]).astype(int), np.rint(px[inside]).astype(int)] > 0
    first_out = np.argmin(values, axis=1)
    first_out[values.all(axis=1)] = len(steps) - 1
    reach = steps[first_out]
    half = RAYS // 8
    window = np.stack([np.roll(reach, k) for k in range(-half, half + 1)])
    limit = np.minimum(reach, BULGE * np.percentile(window, LOW, axis=0))
    limit = np.minimum(limit, GLOBAL_BULGE * np.percentile(reach, LOW))
    polygon = np.stack([cx + np.cos(angles) * limit, cy + np.sin(angles) * limit], axis=1)
    star = np.zeros_like(cell)
    cv2.fillPoly(star, [np.rint(polygon).astype(np.int32)], 1)
    return (star & cell) | seed


def _holding(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` that overlap ``seed``."""
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    keep = np.zeros(count, np.uint8)
    keep[labels[(seed > 0) & (mask > 0)]] = 1
    keep[0] = 0
    return keep[labels]


def grow_cell(rgb: np.ndarray, nucleus: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Cell mask (uint8 0/1, ``rgb``'s size) grown from ``nucleus`` (0/1); ``exclude`` never joins."""
    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIZE / max(h, w))
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        seed = cv2.resize(nucleus.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        if not seed.any():
            return nucleus.astype(np.uint8)
        barrier = None if exclude is None else cv2.resize(exclude.astype(np.uint8), size,
                                                          interpolation=cv2.INTER_NEAREST)
    else:
        small, seed, barrier = rgb, nucleus.astype(np.uint8), exclude
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    black = gray < BLACK_LEVEL
    od = optical_density(small, gray, black)
    absorbs = (od.sum(axis=2) > MIN_OD) & ~black
    if barrier is not None:
        absorbs &= barrier == 0
    radius = float(np.sqrt(max(int(seed.sum()), 1) / np.pi))
    distance = cv2.distanceTransform((seed == 0).astype(np.uint8), cv2.DIST_L2, 3)
    ring = (seed == 0) & (distance <= max(1.5, RING * radius)) & absorbs
    if ring.sum() < 10:
        return nucleus.astype(np.uint8)
    reach = absorbs & (distance <= MAX_GROW * radius) & (seed == 0)
    pixels = od[reach]
    sample = od[ring]
    outside = (distance > OUTER * radius) & absorbs
    far = od[outside] if outside.sum() >= 20 else None
    if far is not None:
        # Red cells pressed against a cell with scant cytoplasm fill much of
        # the ring: ring pixels typical of the outside are not cytoplasm.
        outside_mahalanobis, _ = _cost(sample, far)
        own = outside_mahalanobis > PURIFY ** 2
        if own.sum() >= 10:
            sample = sample[own]
    mahalanobis, log_det = _cost(pixels, sample)
    join = mahalanobis < MAX_DISTANCE ** 2
    if far is not None:
        outside_mahalanobis, outside_log_det = _cost(pixels, far)
        join &= mahalanobis + log_det < outside_mahalanobis + outside_log_det
    grown = seed.copy()
    grown[reach] = join
    k = max(3, round(OPEN * radius) | 1)
    grown = cv2.morphologyEx(grown, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) | seed
    cell = _fill(_holding(grown, seed))
    cell = _star_regularised(cell, seed)
    if scale < 1.0:
        cell = (cv2.resize(cell.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
        cell |= nucleus.astype(np.uint8)
    if exclude is not None:
        cell[exclude > 0] = 0
    return cell
