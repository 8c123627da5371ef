"""The survey behind ``scales.SOURCE_RBC_RADIUS_PX``: ``python -m model_conversion scales``.

Measures the red-cell radius and cell sizes of the crop-only collections on a seeded sample; the
constants in ``scales.py`` were set from its output (see ``CROSS_SOURCE.md``).
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np

from device.core.cellprep import segment_cell
from device.core.imageio import load_image
from model_conversion.data import load_all_idb2, load_cnmc, load_pbc
from model_conversion.scales import crop_rbc_radius, equivalent_diameter
from model_conversion.sources import load_wbc_segmentation


def measure(data: Path, per_source: int = 100, seed: int = 0, log=print) -> dict[str, dict[str, float]]:
    """The measurements behind SOURCE_RBC_RADIUS_PX (medians over a seeded sample per collection)."""
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
