"""Preparations compared across sources: from a sample's image to one square RGB cell picture.

* ``cellprep``: the device's ``prepare_cell`` (cell masked on black, cropped
  to fill the input, Reinhard on the cell's pixels), on the crop the device
  would cut (frame cells) or on the whole crop (crop-only collections).
* ``field``: a square of ``FIELD_RADII`` red-cell radii centred on the cell,
  unmasked, original colours: the cell keeps its true size and its
  neighbours (red cells) keep theirs.
* ``field-masked``: the same field, cell masked on black and Reinhard-
  normalised as in ``cellprep``: differs from ``cellprep`` only by keeping
  true size.
* ``field-grey``: the field in grey levels stretched to the 1st-99th
  percentile: no stain hue at all.
* ``field-masked-grey``: masked like ``field-masked``, then grey and stretched
  on the cell's pixels: neither hue nor background can tell the sources apart.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.core.cellprep import normalise_stain, prepare_cell, segment_cell
from device.core.fieldprep import FIELD_RADII, prepare_field
from model_conversion.data import Sample

# Field side in red-cell radii (device.core.fieldprep.FIELD_RADII, 7): a
# blast is 4-6 r across (2-3 red-cell diameters), a small lymphocyte
# ~2.5-3 r; 7 r holds the largest blast and fits inside every crop-only
# collection (ALL-IDB2 is 6.9 r, tecom 7.9 r, C-NMC 7.2 r, CellaVision blog
# 8.7 r, PBC 10 r). "field@K" names the same preparation at K radii, to
# measure the width.
# Crop the device cuts around a found cell: detect.DetectionParams.crop_scale
# x the cell box; cells without a box get FALLBACK_CELL_RADII red-cell radii.
DEVICE_CROP_SCALE = 1.8
FALLBACK_CELL_RADII = 5.0


def _centre(rgb: np.ndarray, sample: Sample) -> tuple[float, float]:
    if sample.centre is not None:
        return sample.centre
    h, w = rgb.shape[:2]
    return (w - 1) / 2.0, (h - 1) / 2.0


def device_crop(rgb: np.ndarray, sample: Sample) -> np.ndarray:
    """What the device's cell finding would hand to prepare_cell (whole image for crop-only collections)."""
    if sample.centre is None:
        return rgb
    r = sample.rbc_radius or 0.02 * max(rgb.shape[:2])
    cell = sample.cell_side or FALLBACK_CELL_RADII * r
    cx, cy = sample.centre
    half = DEVICE_CROP_SCALE * cell / 2.0
    h, w = rgb.shape[:2]
    x0, x1 = int(max(0, round(cx - half))), int(min(w, round(cx + half)))
    y0, y1 = int(max(0, round(cy - half))), int(min(h, round(cy + half)))
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


def physical_field(rgb: np.ndarray, sample: Sample, size: int, radii: float = FIELD_RADII) -> np.ndarray:
    """The device's field preparation (device.core.fieldprep.prepare_field) of the sample's cell."""
    if sample.rbc_radius is None:
        raise ValueError(f"{sample.path}: no red-cell radius (scale) for a fixed-field preparation")
    cx, cy = _centre(rgb, sample)
    return prepare_field(rgb, cx, cy, sample.rbc_radius, size, radii)


def _grey_stretched(rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    values = grey[mask > 0] if mask is not None and mask.sum() >= 16 else grey
    lo, hi = np.percentile(values, [1, 99])
    out = np.clip((grey - lo) / max(hi - lo, 1.0) * 255.0, 0, 255).astype(np.uint8)
    if mask is not None:
        out[mask == 0] = 0
    return cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)


_LOOKS: dict = {}


def _in_look(field: np.ndarray, sample: Sample, target: str) -> np.ndarray:
    """The field rendered in source ``target``'s look (``model_conversion.looks``); C-NMC cells unchanged."""
    from model_conversion.looks import UNCHANGED_SOURCES, load_looks, recolour
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import SOURCE_OF

    if SOURCE_OF.get(sample.source, sample.source) in UNCHANGED_SOURCES:
        return field
    if not _LOOKS:
        _LOOKS.update(load_looks(default_cache_dir()))
    look = _LOOKS[target]
    return recolour(field, np.array(look["mean"]), np.array(look["std"]))


def _at_radius(field: np.ndarray, sample: Sample, radius: float) -> np.ndarray:
    """The field as a camera whose red cells are ``radius`` px across would give it (coarser only).

    The field spans 2 x FIELD_RADII red-cell radii: at ``radius`` px that is 14 x radius px of real detail,
    area-averaged down and brought back with the device's own interpolation (fieldprep.resize_field).
    """
    from device.core.fieldprep import resize_field
    from model_conversion.looks import UNCHANGED_SOURCES
    from model_conversion.sources import SOURCE_OF

    detail = int(round(2 * FIELD_RADII * radius))
    if SOURCE_OF.get(sample.source, sample.source) in UNCHANGED_SOURCES or (sample.rbc_radius or 0) <= radius \
            or detail >= field.shape[0]:
        return field
    small = cv2.resize(field, (detail, detail), interpolation=cv2.INTER_AREA)
    return resize_field(small, field.shape[0])


def _masked(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask, _ = segment_cell(field)
    return normalise_stain(field, mask), mask


def prepare(name: str, rgb: np.ndarray, sample: Sample, size: int) -> np.ndarray:
    """``size`` x ``size`` uint8 RGB picture of the sample's cell under preparation ``name``."""
    if name == "cellprep":
        return prepare_cell(device_crop(rgb, sample), size).image
    if name.startswith("field@"):
        return physical_field(rgb, sample, size, float(name.split("@", 1)[1]))
    field = physical_field(rgb, sample, size)
    if name == "field":
        return field
    if name.startswith("field>look:"):
        return _in_look(field, sample, name.split(":", 1)[1])
    if name.startswith("field>res:"):
        return _at_radius(field, sample, float(name.split(":", 1)[1]))
    if name == "field-grey":
        return _grey_stretched(field)
    if name == "field-masked":
        return _masked(field)[0]
    if name == "field-masked-grey":
        mask, _ = segment_cell(field)
        return _grey_stretched(field, mask)
    raise ValueError(f"unknown preparation {name!r}; choose one of {', '.join(PREPARATIONS)}")


PREPARATIONS: tuple[str, ...] = ("cellprep", "field", "field-masked", "field-grey", "field-masked-grey")
