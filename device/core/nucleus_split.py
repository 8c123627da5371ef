"""Split one stained blob into the touching round nuclei it holds (h-maxima of the distance transform)."""

from __future__ import annotations

import cv2
import numpy as np

from device.core.detect_params import DetectionParams


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
    full = dist
    # Every level flooded below, and every core level (a flooded level + step, give or take rounding), is
    # above min_peak - step: work inside the box of those pixels only. Cropping keeps the raster order of
    # the pixels, so components, their labels and argmax ties are those of the whole (issue 15: same cores).
    ys, xs = np.nonzero(full >= min_peak - 1e-6 - step)
    if ys.size == 0:
        return np.zeros(full.shape, np.int32)
    y0, x0 = int(ys.min()), int(xs.min())
    dist = np.ascontiguousarray(full[y0:int(ys.max()) + 1, x0:int(xs.max()) + 1])
    seeds: list[list] = []  # [x, y, height, alive, first shared saddle] (x, y in the box)
    level = float(full.max()) - step
    while level >= min_peak - 1e-6:
        count, labels = cv2.connectedComponents((dist >= level).view(np.uint8), connectivity=8)
        members: dict[int, list[int]] = {}
        for k, seed in enumerate(seeds):
            if seed[3]:
                members.setdefault(int(labels[seed[1], seed[0]]), []).append(k)
        for lab in range(1, count):
            inside = members.get(lab, [])
            if not inside:
                region = np.where(labels == lab, dist, np.float32(-1.0))
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
    cores = np.zeros(full.shape, np.int32)
    if sum(seed[3] for seed in seeds) <= 1:
        return cores
    box = cores[y0:y0 + dist.shape[0], x0:x0 + dist.shape[1]]  # every core level is >= min_peak: inside it
    n = 0
    for x, y, _, alive, saddle in seeds:
        if not alive:
            continue
        # Survivors that never met another above min_peak are joined only
        # by a thin neck (or not at all): their core is their lowest region.
        core_level = (saddle if saddle is not None else level) + step
        _, labels = cv2.connectedComponents((dist >= core_level).view(np.uint8), connectivity=8)
        n += 1
        box[(labels == labels[y, x]) & (box == 0)] = n
    return cores


def split_component(piece: np.ndarray, cut: np.ndarray, r: float, params: DetectionParams) -> list[np.ndarray]:
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

