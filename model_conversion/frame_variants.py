"""Frames derived from real ones: what other laboratories' cameras and light do to a smear.

Used to test the frame quality gate (``device.core.quality``) and cell finding
(``device.core.detect``) beyond the two laboratories in ../shared/data. Every
function takes an H×W×3 uint8 RGB frame and returns a new one; lengths are
given "at 640 px", i.e. scaled with the frame's width so a variant of a
2592-px frame matches the same variant of a 640-px frame.

Benign variants (a usable frame must stay usable, its cells findable):

* ``white_background``: a well-exposed thin smear whose glass clips to white
  (as the lower-magnification smears of another laboratory that the old gate
  refused as "overexposed": mean grey ~237, ~30 % clipped pixels): every
  channel is scaled so the glass lands just above 255; the stained cells keep
  their colour and contrast.
* ``colour_cast``: green, blue or yellow light (per-channel gains, the glass
  no longer grey), see ``CASTS``.
* ``rescaled``: lower magnification / resolution (area averaging).
* ``defocused`` with a small sigma: slightly soft, still usable.

Bad variants (the gate must refuse them, with the reason in brackets):
``defocused`` with a large sigma ("blurred"), ``darkened`` ("too dark"),
``blown_out`` ("overexposed"), ``blank_field`` ("empty field"),
``oversaturated`` and ``channel_clipped`` ("colour saturated").
"""

from __future__ import annotations

import cv2
import numpy as np

# Per-channel (R, G, B) gains of the light or the camera's white balance.
CASTS: dict[str, tuple[float, float, float]] = {
    "green": (0.75, 1.0, 0.75),  # green filter / green-tinted LED
    "blue": (0.72, 0.85, 1.0),  # cold LED, daylight white balance on halogen
    "yellow": (1.0, 0.9, 0.6),  # halogen lamp without a blue filter
}


def _scaled(sigma_at_640: float, rgb: np.ndarray) -> float:
    return sigma_at_640 * rgb.shape[1] / 640.0


def glass_colour(rgb: np.ndarray) -> np.ndarray:
    """Median RGB of the brightest fifth of the frame (the glass / plasma between cells)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    bright = gray >= np.percentile(gray, 80)
    return np.median(rgb[bright].reshape(-1, 3), axis=0).astype(np.float64)


def white_background(rgb: np.ndarray, headroom: float = 1.06) -> np.ndarray:
    """Scale each channel so the glass lands at ``headroom`` x 255 (clipped): a white, clipped background."""
    gains = headroom * 255.0 / np.maximum(glass_colour(rgb), 1.0)
    return np.clip(rgb * gains.astype(np.float32), 0, 255).astype(np.uint8)


def colour_cast(rgb: np.ndarray, name: str) -> np.ndarray:
    gains = np.asarray(CASTS[name], np.float32)
    return np.clip(rgb * gains, 0, 255).astype(np.uint8)


def rescaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interpolation)


def defocused(rgb: np.ndarray, sigma_at_640: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), _scaled(sigma_at_640, rgb))


def darkened(rgb: np.ndarray, factor: float = 0.15) -> np.ndarray:
    return np.rint(rgb * np.float32(factor)).astype(np.uint8)


def blown_out(rgb: np.ndarray, gain: float = 2.0) -> np.ndarray:
    return np.clip(rgb * np.float32(gain), 0, 255).astype(np.uint8)


def blank_field(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """Glass only: the frame's own background colour with a gentle vignette and sensor noise."""
    h, w = rgb.shape[:2]
    glass = glass_colour(rgb).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
    field = glass[None, None, :] * (1.0 - 0.15 * r2)[..., None]
    noise = np.random.default_rng(seed).normal(0, 2.0, field.shape).astype(np.float32)
    return np.clip(field + noise, 0, 255).astype(np.uint8)


def oversaturated(rgb: np.ndarray, factor: float = 4.0) -> np.ndarray:
    """Colour pushed away from grey by ``factor`` (a camera's saturation set far too high), clipped."""
    x = rgb.astype(np.float32)
    gray = x.mean(axis=2, keepdims=True)
    return np.clip(gray + factor * (x - gray), 0, 255).astype(np.uint8)


def channel_clipped(rgb: np.ndarray, overshoot: float = 1.3) -> np.ndarray:
    """White balance gone wrong: blue amplified until the glass's blue is ``overshoot`` x the clipping
    level (it clips on the glass and in the cells), red and green at 0.65 and 0.75 x."""
    blue = overshoot * 255.0 / max(float(glass_colour(rgb)[2]), 1.0)
    return np.clip(rgb * np.asarray((0.65, 0.75, blue), np.float32), 0, 255).astype(np.uint8)
