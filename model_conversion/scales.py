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

import random
from pathlib import Path

import cv2
import numpy as np

from device.core.cellprep import segment_cell
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


def measure(data: Path, per_source: int = 100, seed: int = 0, log=print) -> dict[str, dict[str, float]]:
    """The measurements behind SOURCE_RBC_RADIUS_PX (medians over a seeded sample per collection)."""
    from device.core.imageio import load_image
    from model_conversion.data import load_all_idb2, load_cnmc, load_pbc
    from model_conversion.sources import load_wbc_segmentation

    rng = random.Random(seed)

    def pick(samples):
        samples = list(samples)
        rng.shuffle(samples)
        return samples[:per_source]

    out: dict[str, dict[str, float]] = {}
    groups = {
        "all-idb2": pick(load_all_idb2(data / "all-idb2")),
        "pbc-normal": pick(s for s in load_pbc(data / "pbc-normal") if s.cell_type == "lymphocyte"),
        "cellavision-blog": pick(s for s in load_wbc_segmentation(data, "cellavision-blog")
                                 if s.cell_type == "lymphocyte"),
        "c-nmc-2019": pick(s for s in load_cnmc(data / "c-nmc-2019") if s.label == 0),
    }
    for name, samples in groups.items():
        radii, seg_d, expert_d = [], [], []
        for sample in samples:
            rgb = load_image(sample.path)
            r = crop_rbc_radius(rgb)
            if r is not None:
                radii.append(r)
            seg_d.append(equivalent_diameter(segment_cell(rgb)[0]))
            if sample.mask is not None:
                expert_d.append(equivalent_diameter(cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)))
        row = {"cells": len(samples), "rbc_radius_median": float(np.median(radii)) if radii else float("nan"),
               "rbc_radius_iqr": float(np.subtract(*np.percentile(radii, [75, 25]))) if radii else float("nan"),
               "segmented_diameter_median": float(np.median(seg_d))}
        if expert_d:
            row["expert_diameter_median"] = float(np.median(expert_d))
        out[name] = row
        log(f"{name:17} cells {row['cells']:4}  red-cell r {row['rbc_radius_median']:6.1f} "
            f"(IQR {row['rbc_radius_iqr']:5.1f})  segmented d {row['segmented_diameter_median']:6.1f}"
            + (f"  expert d {row['expert_diameter_median']:6.1f}" if expert_d else ""))
    cv_r = out["cellavision-blog"]["rbc_radius_median"]
    ratios = []
    for cell_type in ("neutrophil", "lymphocyte", "monocyte", "eosinophil"):
        sizes = [np.median([equivalent_diameter(cv2.imread(str(s.mask), cv2.IMREAD_GRAYSCALE))
                            for s in load_wbc_segmentation(data, lab) if s.cell_type == cell_type])
                 for lab in ("tecom", "cellavision-blog")]
        ratios.append(sizes[0] / sizes[1])
        log(f"median expert cell diameter, {cell_type}: tecom {sizes[0]:.1f} px, cellavision-blog {sizes[1]:.1f} px")
    tecom_r = cv_r * float(np.median(ratios))
    pbc = out["pbc-normal"]
    ratio_seg = pbc["segmented_diameter_median"] / pbc["rbc_radius_median"]
    cnmc_r = out["c-nmc-2019"]["segmented_diameter_median"] / ratio_seg
    log(f"PBC lymphocyte diameter / red-cell radius (segment_cell): {ratio_seg:.2f}")
    log(f"derived: tecom r = {tecom_r:.1f} px, c-nmc-2019 r = {cnmc_r:.1f} px")
    out["derived"] = {"tecom": tecom_r, "c-nmc-2019": cnmc_r, "tecom_to_cv_size_ratios": ratios,
                      "ratio_segmented_pbc": ratio_seg}
    return out
