"""Is a frame good enough to analyse? Blurred, dark or blown-out frames are reported, not classified.

All measurements are made on a grayscale working copy whose longer side is
WORKING_SIZE (640) pixels, resized with area averaging (upscaled linearly if
smaller), so the figures do not depend on the camera's resolution and cost a
few milliseconds even for a 2592×1944 frame.

* focus: variance of the 4-neighbour Laplacian (kernel [[0,1,0],[1,-4,1],
  [0,1,0]], cv2.Laplacian with ksize=1) of the working copy, in gray levels²
  (0-255 scale). Pixels that are crushed black (< DARK_LEVEL) or clipped white
  (>= BRIGHT_LEVEL), and a FOCUS_MARGIN-pixel band around them, are left
  out: the black surround of an eyepiece camera's round field of view, or the
  edge of a clipped region, is a sharp edge that would make any blurred frame
  look focused.
* brightness: mean gray level (0-255) of the working copy.
* dark_fraction / bright_fraction: share of working-copy pixels below
  DARK_LEVEL / at or above BRIGHT_LEVEL.

When the exposure is wrong the focus figure says little (a dark frame has
little contrast whatever the focus), so "blurred" is reported only for frames
whose exposure passed; fix the light first, then the focus.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORKING_SIZE = 640
DARK_LEVEL = 16
BRIGHT_LEVEL = 250
FOCUS_MARGIN = 6
# Below this share of measurable pixels there is nothing to judge focus on.
MIN_FOCUS_AREA = 0.05


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a usable frame must meet.

    Defaults measured on the real frames (ALL-IDB1: 21 frames from one lab's
    camera at 2592×1944 and 1712×1368; BCCD: 364 frames at 640×480):

    * focus: real frames 5.4 (BCCD min) .. 120 (ALL-IDB1 max), medians 7.6
      (BCCD) and 78 (ALL-IDB1); the same frames Gaussian-blurred with sigma 4
      px at 640 px scale score at most 2.2. BCCD frames are soft by nature,
      hence a threshold near the geometric middle of 2.2 and 5.4.
    * brightness: real frames 111 .. 194; at 15 % exposure at most 30; at
      double exposure at least 220. The lower limit sits nearer the dark
      side because black corners (below) pull a good frame's mean down.
    * bright (clipped) fraction: 0 on every real frame; at double exposure at
      least 18 %.
    * dark fraction: 0 on every real frame. Up to half of a frame may be
      black, since an eyepiece camera's round field of view leaves black
      corners (about 40 % of a 4:3 frame when the circle touches its top and
      bottom).
    """

    min_focus: float = 3.5
    min_brightness: float = 50.0
    max_brightness: float = 235.0
    max_clipped_fraction: float = 0.05
    max_dark_fraction: float = 0.5


@dataclass(frozen=True)
class QualityReport:
    focus: float
    brightness: float
    dark_fraction: float
    bright_fraction: float
    usable: bool
    problems: tuple[str, ...]  # subset of ("too dark", "overexposed", "blurred"), in that order

    def to_dict(self) -> dict[str, object]:
        """JSON-safe summary, rounded to what is meaningful."""
        return {
            "focus": round(float(self.focus), 2),
            "brightness": round(float(self.brightness), 1),
            "dark_fraction": round(float(self.dark_fraction), 4),
            "bright_fraction": round(float(self.bright_fraction), 4),
            "usable": bool(self.usable),
            "problems": list(self.problems),
        }


def working_gray(rgb: np.ndarray) -> np.ndarray:
    """Grayscale uint8 copy with the longer side WORKING_SIZE pixels."""
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    elif rgb.ndim == 2:
        gray = np.ascontiguousarray(rgb)
    else:
        raise ValueError(f"expected an H×W×3 RGB or H×W gray image, got shape {rgb.shape}")
    if gray.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {gray.dtype}")
    h, w = gray.shape
    if min(h, w) < 1:
        raise ValueError(f"empty image of shape {rgb.shape}")
    scale = WORKING_SIZE / max(h, w)
    if scale == 1.0:
        return gray
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(gray, size, interpolation=interpolation)


def focus_score(gray: np.ndarray) -> float:
    """Variance of the Laplacian over well-exposed pixels of a working copy (see module doc)."""
    lap = cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F, ksize=1)
    measurable = (gray >= DARK_LEVEL) & (gray < BRIGHT_LEVEL)
    if measurable.all():
        return float(lap.var())
    kernel = np.ones((2 * FOCUS_MARGIN + 1, 2 * FOCUS_MARGIN + 1), np.uint8)
    measurable = cv2.erode(measurable.view(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).view(bool)
    if measurable.mean() < MIN_FOCUS_AREA:
        return 0.0
    return float(lap[measurable].var())


def assess_quality(rgb: np.ndarray, thresholds: QualityThresholds = QualityThresholds()) -> QualityReport:
    """Measure focus and exposure of an H×W×3 uint8 RGB frame and say whether it is usable."""
    gray = working_gray(rgb)
    brightness = float(gray.mean())
    dark_fraction = float(np.count_nonzero(gray < DARK_LEVEL)) / gray.size
    bright_fraction = float(np.count_nonzero(gray >= BRIGHT_LEVEL)) / gray.size
    focus = focus_score(gray)

    problems: list[str] = []
    if brightness < thresholds.min_brightness or dark_fraction > thresholds.max_dark_fraction:
        problems.append("too dark")
    if brightness > thresholds.max_brightness or bright_fraction > thresholds.max_clipped_fraction:
        problems.append("overexposed")
    if not problems and focus < thresholds.min_focus:
        problems.append("blurred")
    return QualityReport(
        focus=focus,
        brightness=brightness,
        dark_fraction=dark_fraction,
        bright_fraction=bright_fraction,
        usable=not problems,
        problems=tuple(problems),
    )
