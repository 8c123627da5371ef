"""Turn any crop around one white blood cell into the canonical model input.

The same function runs in training (on ALL-IDB2, C-NMC and PBC crops) and on
the device (on crops cut around each nucleus found in a frame), so that the
model sees one kind of picture whatever the source:

1. find the stained nucleus nearest the centre (May-Grünwald-Giemsa / Wright
   stains make chromatin purple: blue well above green);
2. grow it into a cell mask (nucleus plus surrounding cytoplasm, never into
   the bright smear background or the red cells around): ``cellprep-v3``
   the whole cell (``cellmask``), ``cellprep-v2`` nucleus plus bluish
   cytoplasm (what the paper's network was trained on; see PREPROCESSING_ID);
3. blank everything outside the mask to black, so that neither a smear
   background nor C-NMC's black background can become a cue;
4. crop the cell's bounding square and resize it so the cell fills the input
   (magnification differs between microscopes);
5. Reinhard stain normalisation on the cell's own pixels in Lab space, so
   stain intensity and hue differences between laboratories shrink.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.core.cellmask import grow_cell

# Target Lab statistics (OpenCV 8-bit Lab scale) for the cell's pixels: a
# typical MGG-stained lymphoblast. Fixed, so device and training agree.
TARGET_LAB_MEAN = (95.0, 155.0, 95.0)
TARGET_LAB_STD = (35.0, 12.0, 14.0)

# Identifies this preprocessing; stored in the model so a device refuses a
# model trained with a different one. "cellprep-v2" masks the cell as the
# paper's network (models/paper) was trained on: nucleus plus bluish
# cytoplasm, pale or pink cytoplasm lost. "cellprep-v3" is the same
# preparation on the whole-cell mask of ``cellmask.grow_cell`` (issue 12:
# mask IoU 0.86 against expert masks on two unseen laboratories, 0.52-0.65
# for v2); a network must be trained on it to use it.
PREPROCESSING_ID = "cellprep-v2"
WHOLE_CELL_ID = "cellprep-v3"
PREPROCESSING_IDS = (PREPROCESSING_ID, WHOLE_CELL_ID)

# Minimum nucleus score (blue minus green, 0-255) to count as stained at all.
MIN_STAIN_THRESHOLD = 18.0


@dataclass(frozen=True)
class PreparedCell:
    image: np.ndarray  # size x size x 3 uint8, RGB, background black
    mask_fraction: float  # share of the crop covered by the cell mask
    found_nucleus: bool  # False when no stained nucleus was found


def nucleus_score(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel stain score: blue minus green, clipped to 0..255 (uint8).

    Chromatin stained by Romanowsky stains (MGG, Wright, Giemsa) absorbs
    green strongly and transmits blue; red cells, plasma and glass do not.
    """
    rgb16 = rgb.astype(np.int16)
    score = rgb16[..., 2] - rgb16[..., 1]
    return np.clip(score, 0, 255).astype(np.uint8)


def stain_threshold(score: np.ndarray) -> float:
    """Otsu threshold of the stain score, never below MIN_STAIN_THRESHOLD."""
    otsu, _ = cv2.threshold(score, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return max(float(otsu), MIN_STAIN_THRESHOLD)


def _central_component(mask: np.ndarray) -> np.ndarray | None:
    """The connected component nearest the crop centre, large ones preferred."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    h, w = mask.shape
    centre = np.array([w / 2.0, h / 2.0])
    diag = float(np.hypot(w, h))
    min_area = 0.002 * h * w
    best, best_cost = None, None
    for i in range(1, count):
        area = stats[i, cv2.CC_STAT_AREA]
        if area < min_area:
            continue
        distance = float(np.linalg.norm(centroids[i] - centre)) / diag
        cost = distance - 0.5 * np.sqrt(area / (h * w))
        if best_cost is None or cost < best_cost:
            best, best_cost = i, cost
    if best is None:
        return None
    return (labels == best).astype(np.uint8)


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a 0/1 mask by a disc of ``radius`` (distance transform: cost independent of radius)."""
    distance = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 3)
    return (distance <= radius).astype(np.uint8)


def segment_cell(rgb: np.ndarray, exclude: np.ndarray | None = None,
                 preprocessing: str = WHOLE_CELL_ID) -> tuple[np.ndarray, bool]:
    """Mask (uint8 0/1) of the white cell nearest the centre of ``rgb``.

    ``exclude`` (0/1, same size) marks pixels that belong to other cells, e.g.
    the touching neighbours that cell finding separated in a crowded frame;
    they never become part of this cell. Returns (mask, found_nucleus).
    Without a stained nucleus the mask is a centred disc, so the caller still
    gets a well-defined input. ``preprocessing``: the whole cell
    (``WHOLE_CELL_ID``, default) or the v2 mask (``PREPROCESSING_ID``).
    """
    h, w = rgb.shape[:2]
    score = cv2.GaussianBlur(nucleus_score(rgb), (0, 0), max(1.0, min(h, w) / 150))
    threshold = stain_threshold(score)
    stained = (score > threshold).astype(np.uint8)
    k = max(3, int(round(min(h, w) * 0.03)) | 1)
    closing = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    stained = cv2.morphologyEx(stained, cv2.MORPH_CLOSE, closing)
    if exclude is not None and exclude.any():
        # Widen the neighbours a little so the contact line between two
        # touching nuclei is cut too.
        exclude = cv2.dilate(exclude.astype(np.uint8), closing)
        stained[exclude > 0] = 0
    nucleus = _central_component(stained)
    if nucleus is None:
        mask = np.zeros((h, w), np.uint8)
        cv2.circle(mask, (w // 2, h // 2), int(min(h, w) * 0.35), 1, -1)
        return mask, False
    # Lobed nuclei (neutrophils) fall apart into pieces: take in stained
    # pieces that lie close to the main one.
    area = float(nucleus.sum())
    radius = max(2, int(round(0.25 * np.sqrt(area))))
    near = _grow(nucleus, radius)
    count, labels = cv2.connectedComponents(stained, connectivity=8)
    keep = np.zeros(count, np.uint8)
    keep[labels[(near > 0) & (stained > 0)]] = 1
    keep[0] = 0
    nucleus = keep[labels] | nucleus
    if preprocessing == PREPROCESSING_ID:
        return _v2_cell(rgb, nucleus, near, score, threshold, exclude, k), True
    # Cytoplasm: grown from the nucleus by the crop's own colours (device.core.cellmask).
    return grow_cell(rgb, nucleus, exclude), True


def _v2_cell(rgb: np.ndarray, nucleus: np.ndarray, near: np.ndarray, score: np.ndarray, threshold: float,
             exclude: np.ndarray | None, k: int) -> np.ndarray:
    """The cellprep-v2 mask: nucleus plus bluish cytoplasm within ``near`` (kept unchanged for its models)."""
    h, w = rgb.shape[:2]
    # Cytoplasm: a ring around the nucleus, excluding bright background
    # (glass/plasma) and black background (pre-segmented crops).
    # Cytoplasm of lymphocytes and blasts is blue-grey (blue at or above red);
    # red cells are pink (red above blue) and are left out.
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgb16 = rgb.astype(np.int16)
    bluish = (rgb16[..., 2] - rgb16[..., 0] >= 4) | (score > 0.5 * threshold)
    background = (gray > 225) | (gray < 12)
    if exclude is not None and exclude.any():
        background |= exclude > 0
    cytoplasm = (bluish & ~background).astype(np.uint8)
    cell = (near & cytoplasm) | nucleus
    opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    cell = cv2.morphologyEx(cell, cv2.MORPH_OPEN, opening) | nucleus
    cell = _central_component(cell) if cell.any() else None
    if cell is None:
        return nucleus
    contours, _ = cv2.findContours(cell, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(cell)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    # Drop the blurred rim, whose colours normalise badly.
    rim = max(1, int(round(min(h, w) * 0.006)))
    filled = cv2.erode(filled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1)))
    return filled if filled.any() else nucleus


def normalise_stain(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer of the masked pixels to the fixed target."""
    if int(mask.sum()) < 16:
        return rgb.copy()
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    sel = mask.astype(bool)
    out = lab.copy()
    for c in range(3):
        values = lab[..., c][sel]
        mean, std = float(values.mean()), float(values.std())
        std = max(std, 1.0)
        out[..., c] = (lab[..., c] - mean) / std * TARGET_LAB_STD[c] + TARGET_LAB_MEAN[c]
    out = np.clip(out, 0, 255).astype(np.uint8)
    result = cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
    result[~sel] = 0
    return result


def prepare_cell(rgb: np.ndarray, size: int, exclude: np.ndarray | None = None,
                 preprocessing: str = PREPROCESSING_ID) -> PreparedCell:
    """Canonical ``size``×``size`` RGB input for the classifier (see module doc).

    Segmentation runs on a copy whose longest side is at most 2.5×``size``
    (the output is ``size`` pixels anyway), and stain statistics are taken
    on the final small image: both keep the cost to a few milliseconds.
    ``exclude`` (0/1 mask of ``rgb``'s size) marks other cells' nuclei, as
    given by cell finding (``CellCandidate.neighbours``); see segment_cell.
    ``preprocessing`` picks the mask (one of ``PREPROCESSING_IDS``; the model names it).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("prepare_cell expects an RGB image of shape (H, W, 3)")
    if preprocessing not in PREPROCESSING_IDS:
        raise ValueError(f"prepare_cell: unknown preprocessing {preprocessing!r}")
    work_max = max(int(2.5 * size), 64)
    if max(rgb.shape[:2]) > work_max:
        scale = work_max / max(rgb.shape[:2])
        new_size = (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, new_size, interpolation=cv2.INTER_AREA)
        if exclude is not None:
            exclude = cv2.resize(exclude.astype(np.uint8), new_size, interpolation=cv2.INTER_NEAREST)
    if exclude is not None and exclude.shape != rgb.shape[:2]:
        raise ValueError("prepare_cell: exclude mask must have the image's height and width")
    mask, found = segment_cell(rgb, exclude, preprocessing)
    h, w = mask.shape
    bx, by, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        bx, by, bw, bh = 0, 0, w, h
    x0, x1, y0, y1 = bx, bx + bw, by, by + bh
    side = int(max(x1 - x0, y1 - y0) * 1.08) + 2
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas_mask = np.zeros((side, side), np.uint8)
    sx0, sy0 = cx - side // 2, cy - side // 2
    src_x0, src_y0 = max(sx0, 0), max(sy0, 0)
    src_x1, src_y1 = min(sx0 + side, w), min(sy0 + side, h)
    dst = (slice(src_y0 - sy0, src_y1 - sy0), slice(src_x0 - sx0, src_x1 - sx0))
    canvas[dst] = rgb[src_y0:src_y1, src_x0:src_x1]
    canvas_mask[dst] = mask[src_y0:src_y1, src_x0:src_x1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    small = cv2.resize(canvas, (size, size), interpolation=interp)
    small_mask = cv2.resize(canvas_mask, (size, size), interpolation=cv2.INTER_NEAREST)
    image = normalise_stain(small, small_mask)
    return PreparedCell(image=image, mask_fraction=float(mask.mean()), found_nucleus=found)
