"""Cell mask of the preparation step (``device.core.cellprep.segment_cell``) against expert masks.

The two wbc-segmentation laboratories (Jiangxi Tecom, CellaVision blog) come
with an expert mask per image: nucleus white, cytoplasm grey. The cell is
nucleus + cytoplasm. ``segment_cell`` runs as ``prepare_cell`` runs it on the
device: on a copy whose longest side is at most 2.5 x the model input
(96 px -> 240 px), its mask scaled back to the image for the comparison.

Each laboratory is split by file into two halves (seeded, ``SPLIT_SEED``):
the segmentation's parameters (``device/core/cellmask.py``) were chosen on
the ``tuning`` half; the ``held-out`` half's IoU is the figure to quote, the
whole set beside it. The time is the CPU time of ``segment_cell`` per cell
at the working size (one OpenCV thread, decoding and resizing excluded).

    python -m model_conversion maskiou [--preprocessing cellprep-v2]

The default is ``cellprep-v3``'s whole-cell mask (``device/core/cellmask.py``);
``cellprep-v2`` is the mask the paper's network was trained on, kept as it was.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from device.core.cellprep import WHOLE_CELL_ID, segment_cell

DEVICE_INPUT = 96
LABS = ("tecom", "cellavision-blog")
SPLIT_SEED = 12
HALVES = ("tuning", "held-out")


def half_of(files: list[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """File name -> "tuning" | "held-out": a seeded permutation, the first half for tuning."""
    order = np.random.default_rng(seed).permutation(len(files))
    return {files[i]: HALVES[0] if rank < len(files) // 2 else HALVES[1] for rank, i in enumerate(order)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def working_copy(rgb: np.ndarray, input_size: int = DEVICE_INPUT) -> np.ndarray:
    """The copy ``prepare_cell`` segments: longest side at most 2.5 x the model input."""
    h, w = rgb.shape[:2]
    work_max = max(int(2.5 * input_size), 64)
    if max(h, w) <= work_max:
        return rgb
    scale = work_max / max(h, w)
    return cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)


def device_cell_mask(rgb: np.ndarray, input_size: int = DEVICE_INPUT) -> np.ndarray:
    """segment_cell's mask at the device's working size, back at the image's size (0/1)."""
    mask, _ = segment_cell(working_copy(rgb, input_size))
    return cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)


def _summary(values: list[float]) -> dict:
    a = np.array(values)
    return {"images": len(a), "mean_iou": float(a.mean()), "median_iou": float(np.median(a)),
            "share_below_0.5": float((a < 0.5).mean())}


def lab_mask_iou(data: Path, lab: str, step: int = 1, preprocessing: str = WHOLE_CELL_ID) -> dict:
    """Per-image cell IoU for one laboratory (every ``step``-th image): whole set, per half, per cell type.

    ``preprocessing``: whose mask (``cellprep-v3``, the whole cell, or ``cellprep-v2``, the paper network's).
    """
    from device.core.imageio import load_image
    from model_conversion.sources import load_wbc_segmentation

    samples = load_wbc_segmentation(data, lab)
    halves = half_of([s.path.name for s in samples])
    ious, by_type, by_half, seconds = [], {}, {h: [] for h in HALVES}, 0.0
    for sample in samples[::step]:
        expert = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
        rgb = load_image(sample.path)
        if expert.shape != rgb.shape[:2]:
            expert = cv2.resize(expert, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        work = working_copy(rgb)
        start = time.process_time()
        mask, _ = segment_cell(work, None, preprocessing)
        seconds += time.process_time() - start
        mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        value = iou(mask, expert > 0)
        ious.append(value)
        by_type.setdefault(sample.cell_type, []).append(value)
        by_half[halves[sample.path.name]].append(value)
    return {**_summary(ious), "halves": {h: _summary(v) for h, v in by_half.items() if v},
            "ms_per_cell": 1000.0 * seconds / max(1, len(ious)),
            "mean_iou_by_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())}}


def print_mask_iou(data: Path, preprocessing: str = WHOLE_CELL_ID) -> dict:
    cv2.setNumThreads(1)
    print(f"mask of {preprocessing}")
    results = {lab: lab_mask_iou(data, lab, preprocessing=preprocessing) for lab in LABS}
    for lab, r in results.items():
        types = ", ".join(f"{k} {v:.2f}" for k, v in r["mean_iou_by_type"].items())
        halves = "  ".join(f"{h} {v['mean_iou']:.3f} ({v['images']})" for h, v in r["halves"].items())
        print(f"{lab:17} {r['images']:4} images  mean cell IoU {r['mean_iou']:.3f}  median {r['median_iou']:.3f}  "
              f"IoU < 0.5: {100 * r['share_below_0.5']:.0f} %  {halves}  {r['ms_per_cell']:.2f} ms/cell CPU  "
              f"({types})")
    return results
