"""Stain measured against the frame's own background, so the colour of the light does not matter.

Romanowsky stains make chromatin purple: it absorbs green and passes blue
(``cellprep.nucleus_score``: blue minus green). Under a green, blue or yellow
light, or with a camera's white balance off, the glass itself has blue above
or below green and that score shifts for every pixel. Dividing each channel by
the glass colour (the background between the cells, which transmits all the
light) removes the cast before scoring: a von Kries white balance on the
frame's own white. Used by the quality gate (``quality``) and cell finding
(``detect``).
"""

from __future__ import annotations

import cv2
import numpy as np

from device.core.cellprep import nucleus_score

# The glass is mapped to this grey level: headroom below 255 so stained
# objects that pass a little more blue than the glass (JPEG, noise) do not clip.
GLASS_LEVEL = 235.0
# Share of the brightest (non-black) pixels taken as glass.
GLASS_SHARE = 0.2
# Pixels darker than this gray level are the black surround of an eyepiece
# camera's round field of view, not glass.
BLACK_LEVEL = 16
# Largest per-channel gain: a nearly black channel is not amplified into noise.
MAX_GAIN = 8.0


def glass_colour(rgb: np.ndarray, gray: np.ndarray | None = None) -> np.ndarray:
    """Per-channel median (float64 R, G, B) of the brightest GLASS_SHARE of the non-black pixels.

    In a smear the brightest fifth is glass or plasma between the cells (red
    cells cover at most ~80 % even in the thick part). All zeros when the
    frame is black.
    """
    if gray is None:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Histograms instead of sorting: a few milliseconds less on a 640-px copy.
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    hist[:BLACK_LEVEL] = 0
    total = hist.sum()
    if total == 0:
        return np.zeros(3, np.float64)
    from_top = np.cumsum(hist[::-1])
    cut = 255 - int(np.searchsorted(from_top, GLASS_SHARE * total))
    bright = (gray >= cut).view(np.uint8)
    return np.array([_hist_median(rgb, c, bright) for c in range(3)], np.float64)


def _hist_median(rgb: np.ndarray, channel: int, mask: np.ndarray) -> float:
    hist = cv2.calcHist([rgb], [channel], mask, [256], [0, 256]).ravel()
    return float(np.searchsorted(np.cumsum(hist), hist.sum() / 2.0))


def white_balanced(rgb: np.ndarray, glass: np.ndarray | None = None, level: float | None = GLASS_LEVEL) -> np.ndarray:
    """``rgb`` (uint8) with every channel scaled so the glass is neutral grey at ``level``.

    ``level=None`` keeps the glass's own mean level: only the colour cast is
    removed, not the exposure (for measures tuned on raw grey levels, such as
    the red-cell radius).
    """
    if glass is None:
        glass = glass_colour(rgb)
    if level is None:
        level = float(np.mean(glass))
    gains = np.minimum(level / np.maximum(glass, 1.0), MAX_GAIN)
    levels = np.arange(256, dtype=np.float64)[:, None] * gains[None, :]
    lut = np.clip(np.rint(levels), 0, 255).astype(np.uint8).reshape(1, 256, 3)
    return cv2.LUT(np.ascontiguousarray(rgb), lut)


def balanced_stain_score(rgb: np.ndarray, glass: np.ndarray | None = None) -> np.ndarray:
    """``cellprep.nucleus_score`` of the white-balanced frame (uint8, 0..255)."""
    return nucleus_score(white_balanced(rgb, glass))

