"""The fixed-physical-field preparation, and the registry of preparations a model can name.

``field``: a square of ``FIELD_RADII`` red-cell radii centred on the cell,
unmasked, original colours, resized to the network input. A cell keeps its
true size relative to its red-cell neighbours (a blast is 2-3 red-cell
diameters across, a small lymphocyte about one): the first cue a
morphologist uses, and the one ``cellprep``'s fill-the-input crop throws
away. The same functions run in training (``model_conversion/views.py``)
and on the device (``device/core/analysis.py``).

The red-cell radius (the scale) comes from:

* a whole frame: ``frame_rbc_radius`` (``detect.estimate_rbc_radius`` on a
  copy of at most ``DetectionParams.work_size`` px, stained pixels masked),
  once per frame;
* a single-cell crop (``allscope classify``): ``crop_rbc_radius`` on the crop
  (red cells around the white cell), accepted when it lies within
  ``CROP_RADIUS_RANGE`` of the crop side; otherwise the crop is taken to be
  ``CROP_DEFAULT_RADII`` red-cell radii wide (what the training collections'
  crops are: ALL-IDB2 6.9 r, Tecom 7.9 r, CellaVision 8.7 r, PBC 10 r).
  The per-crop estimate is noisy (ALL-IDB2, 257 px crops of one microscope:
  9.6-77 px around the collection's median 37.5), hence the narrow range
  (side/12 .. side/5, about the crops above) and the default in between.

Why 7 radii and unmasked: model_conversion/CROSS_SOURCE.md (probe table;
field width measured there at 5, 7 and 9 radii).

``PREPARATIONS`` maps the preprocessing id a model's metadata names
(provenance ``"preprocessing"``) to how the device prepares cells for it;
models that name none are ``cellprep``'s (the shipped model before issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.core.cellprep import PREPROCESSING_ID as CELLPREP_ID
from device.core.cellprep import WHOLE_CELL_ID, nucleus_score, stain_threshold
from device.core.detect import DetectionParams, estimate_rbc_radius

FIELD_ID = "field-v1"
FIELD_RADII = 7.0
# Single-cell crops: accepted red-cell estimate as a share of the crop side,
# and the assumed field when the estimate is outside it (see module doc).
CROP_RADIUS_RANGE = (1 / 12, 1 / 5)
CROP_DEFAULT_RADII = 8.0
# Crops are small: accept red cells up to 30 % of the crop's side.
_CROP_PARAMS = DetectionParams(rbc_min_fraction=0.01, rbc_max_fraction=0.3)


@dataclass(frozen=True)
class Scale:
    """The physical scale a preparation used, as reported by ``analyze --json``."""

    rbc_radius_px: float  # red-cell radius in the image's own pixels
    method: str  # "frame-estimate" | "crop-estimate" | "crop-default"
    field_radii: float = FIELD_RADII

    @property
    def field_px(self) -> float:
        return self.field_radii * self.rbc_radius_px

    def to_dict(self) -> dict:
        return {"rbc_radius_px": round(self.rbc_radius_px, 2), "method": self.method,
                "field_radii": self.field_radii, "field_px": round(self.field_px, 1)}


def stained_mask(rgb: np.ndarray) -> np.ndarray:
    """Nucleus-stained pixels (0/1), thresholded as cell finding does."""
    score = cv2.GaussianBlur(nucleus_score(rgb), (0, 0), 1.0)
    return (score > stain_threshold(score)).astype(np.uint8)


def frame_rbc_radius(rgb: np.ndarray, params: DetectionParams = DetectionParams()) -> float:
    """Red-cell radius in pixels of a whole frame (measured on a copy of at most work_size px)."""
    scale = min(1.0, params.work_size / max(rgb.shape[:2]))
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    return estimate_rbc_radius(small, stained_mask(small), params) / scale


def crop_rbc_radius(rgb: np.ndarray) -> float | None:
    """Red-cell radius estimated in a single-cell crop, or None when no estimate is possible."""
    try:
        return float(estimate_rbc_radius(rgb, stained_mask(rgb), _CROP_PARAMS))
    except (cv2.error, ValueError, OverflowError):
        return None


def crop_scale(rgb: np.ndarray, radii: float = FIELD_RADII) -> Scale:
    """The scale used for a single-cell crop: its own red-cell estimate when plausible, else the default."""
    side = float(max(rgb.shape[:2]))
    r = crop_rbc_radius(rgb)
    lo, hi = CROP_RADIUS_RANGE
    if r is not None and lo * side <= r <= hi * side:
        return Scale(r, "crop-estimate", radii)
    return Scale(side / CROP_DEFAULT_RADII, "crop-default", radii)


def square_window(rgb: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """A side x side window centred on (cx, cy); parts outside the image repeat its edge."""
    half = side / 2.0
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    n = max(2, int(round(side)))
    h, w = rgb.shape[:2]
    pad = max(0, -x0, -y0, x0 + n - w, y0 + n - h)
    if pad:
        # Only the part of the image the window needs, so a huge frame is not copied.
        ys, xs = max(0, y0), max(0, x0)
        part = rgb[ys:min(h, y0 + n), xs:min(w, x0 + n)]
        part = cv2.copyMakeBorder(part, ys - y0, y0 + n - min(h, y0 + n), xs - x0, x0 + n - min(w, x0 + n),
                                  cv2.BORDER_REPLICATE)
        return part
    return rgb[y0:y0 + n, x0:x0 + n]


def field_window(rgb: np.ndarray, cx: float, cy: float, rbc_radius: float, radii: float = FIELD_RADII) -> np.ndarray:
    """The ``radii`` x ``rbc_radius`` square around (cx, cy), at the image's own resolution."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("the field preparation expects an RGB image of shape (H, W, 3)")
    if not rbc_radius > 0:
        raise ValueError(f"the field preparation needs a positive red-cell radius, got {rbc_radius}")
    return square_window(rgb, cx, cy, radii * rbc_radius)


def resize_field(window: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """A field window resized to the ``size`` x ``size`` network input (into ``out`` when given: a
    contiguous ``size`` x ``size`` x 3 uint8 array, e.g. one slot of a batch)."""
    interp = cv2.INTER_AREA if window.shape[0] > size else cv2.INTER_LINEAR
    if out is None:
        return cv2.resize(window, (size, size), interpolation=interp)
    resized = cv2.resize(window, (size, size), dst=out, interpolation=interp)
    if resized is not out and not np.shares_memory(resized, out):  # OpenCV made a new array: copy it in
        out[...] = resized
    return out


def prepare_field(rgb: np.ndarray, cx: float, cy: float, rbc_radius: float, size: int,
                  radii: float = FIELD_RADII) -> np.ndarray:
    """``size`` x ``size`` uint8 RGB: the ``radii`` x ``rbc_radius`` square around (cx, cy), unmasked."""
    return resize_field(field_window(rgb, cx, cy, rbc_radius, radii), size)


def crop_field_window(rgb: np.ndarray, radii: float = FIELD_RADII) -> tuple[np.ndarray, Scale]:
    """Field window of a single-cell crop centred on the cell (``allscope classify``), and its scale."""
    scale = crop_scale(rgb, radii)
    h, w = rgb.shape[:2]
    return field_window(rgb, (w - 1) / 2.0, (h - 1) / 2.0, scale.rbc_radius_px, radii), scale


def prepare_crop_field(rgb: np.ndarray, size: int, radii: float = FIELD_RADII) -> tuple[np.ndarray, Scale]:
    """Field preparation of a single-cell crop centred on the cell."""
    window, scale = crop_field_window(rgb, radii)
    return resize_field(window, size), scale


# Preprocessing ids a model may name -> kind of preparation the device runs.
PREPARATIONS = {CELLPREP_ID: "cellprep", WHOLE_CELL_ID: "cellprep", FIELD_ID: "field"}


def preparation_for(provenance: dict) -> str:
    """"cellprep" or "field" for a model's provenance; ValueError for an id this device does not know."""
    name = provenance.get("preprocessing", CELLPREP_ID)
    if name not in PREPARATIONS:
        raise ValueError(f"model needs preprocessing {name!r}; this device knows {', '.join(PREPARATIONS)}")
    return PREPARATIONS[name]
