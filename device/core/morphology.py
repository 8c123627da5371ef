"""Small image helpers shared by the cell-finding modules: discs, shrinking, hole filling."""

from __future__ import annotations

import cv2
import numpy as np


def disc(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def shrink(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
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


def fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled

