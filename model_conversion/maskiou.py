"""Cell mask of the preparation step (``device.core.cellprep.segment_cell``) against expert masks.

The two wbc-segmentation laboratories (Jiangxi Tecom, CellaVision blog) come
with an expert mask per image: nucleus white, cytoplasm grey. The cell is
nucleus + cytoplasm. ``segment_cell`` runs as ``prepare_cell`` runs it on the
device: on a copy whose longest side is at most 2.5 x the model input
(96 px -> 240 px), its mask scaled back to the image for the comparison.

    python -m model_conversion maskiou
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.core.cellprep import segment_cell

DEVICE_INPUT = 96
LABS = ("tecom", "cellavision-blog")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def device_cell_mask(rgb: np.ndarray, input_size: int = DEVICE_INPUT) -> np.ndarray:
    """segment_cell's mask at the device's working size, back at the image's size (0/1)."""
    h, w = rgb.shape[:2]
    work_max = max(int(2.5 * input_size), 64)
    work = rgb
    if max(h, w) > work_max:
        scale = work_max / max(h, w)
        work = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    mask, _ = segment_cell(work)
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def lab_mask_iou(data: Path, lab: str) -> dict:
    """Per-image cell IoU (and nucleus-covered share) for one laboratory."""
    from device.core.imageio import load_image
    from model_conversion.sources import load_wbc_segmentation

    ious, by_type = [], {}
    for sample in load_wbc_segmentation(data, lab):
        expert = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
        rgb = load_image(sample.path)
        if expert.shape != rgb.shape[:2]:
            expert = cv2.resize(expert, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        value = iou(device_cell_mask(rgb), expert > 0)
        ious.append(value)
        by_type.setdefault(sample.cell_type, []).append(value)
    ious = np.array(ious)
    return {"images": len(ious), "mean_iou": float(ious.mean()), "median_iou": float(np.median(ious)),
            "share_below_0.5": float((ious < 0.5).mean()),
            "mean_iou_by_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())}}


def print_mask_iou(data: Path) -> dict:
    results = {lab: lab_mask_iou(data, lab) for lab in LABS}
    for lab, r in results.items():
        types = ", ".join(f"{k} {v:.2f}" for k, v in r["mean_iou_by_type"].items())
        print(f"{lab:17} {r['images']:4} images  mean cell IoU {r['mean_iou']:.3f}  median {r['median_iou']:.3f}  "
              f"IoU < 0.5: {100 * r['share_below_0.5']:.0f} %  ({types})")
    return results
