"""Physical scale (red-cell radius in pixels) of frames and of crop-only collections.

Frames: the red-cell radius is measured in every frame, as cell finding does
(``device.core.detect.estimate_rbc_radius``). Crop-only collections have no
per-image scale the device could trust, so each gets ONE documented radius
(``SOURCE_RBC_RADIUS_PX``), measured once by ``python -m model_conversion
scales`` like this:

* where red cells are visible around the white cell (ALL-IDB2, PBC, the
  CellaVision blog images): the median of the per-crop red-cell estimate;
* Jiangxi Tecom (faint red cells, 120 px crops: the estimate fails): the
  CellaVision blog radius times the median, over the white-cell types both
  labs share (neutrophil, lymphocyte, monocyte, eosinophil), of the ratio
  of their median expert-mask cell diameters (same cell types are the same
  physical size in both labs);
* C-NMC (segmented cells on black, no red cell, no mature lymphocyte): the
  median equivalent diameter of its normal cells (hematogones, which are
  lymphocyte-sized) divided by the lymphocyte diameter / red-cell radius
  ratio of PBC, both segmented by ``device.core.cellprep.segment_cell``.
"""

from __future__ import annotations

import numpy as np

from device.core.fieldprep import crop_rbc_radius, frame_rbc_radius, stained_mask  # noqa: F401  (moved to the device)

# Measured with ``python -m model_conversion scales`` (see the module doc and
# model_conversion/CROSS_SOURCE.md); pixels of the collection's own files.
# Tecom and C-NMC come from a first 100-cell sample; the command's current
# sampling prints 15.3 and 64.4 (within 3 %, sampling noise). Kept as they
# are so that the recorded cross-source table reproduces.
SOURCE_RBC_RADIUS_PX = {
    "all-idb2": 37.5,
    "pbc-normal": 35.5,
    "cellavision-blog": 34.4,
    "tecom": 15.2,
    "c-nmc-2019": 62.5,
}



def equivalent_diameter(mask: np.ndarray) -> float:
    return float(2.0 * np.sqrt(float((mask > 0).sum()) / np.pi))
