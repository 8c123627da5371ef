"""Cell-mask IoU of the preparation step against expert masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model_conversion.maskiou import device_cell_mask, half_of, iou, lab_mask_iou


def _synthetic_cell(size: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A purple nucleus in a blue-grey cytoplasm on a pale background, and its true cell mask."""
    rgb = np.full((size, size, 3), (235, 225, 225), np.uint8)
    c = size // 2
    cv2.circle(rgb, (c, c), size // 4, (170, 160, 200), -1)  # cytoplasm: blue above red
    cv2.circle(rgb, (c, c), size // 6, (110, 60, 160), -1)  # nucleus: blue well above green
    truth = np.zeros((size, size), np.uint8)
    cv2.circle(truth, (c, c), size // 4, 1, -1)
    return rgb, truth


def test_iou_of_known_masks():
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    a[:, :5] = 1
    b[:, :] = 1
    assert iou(a, b) == 0.5
    assert iou(a, a) == 1.0
    assert iou(a, 1 - a) == 0.0


def test_device_mask_recovers_a_clean_synthetic_cell():
    rgb, truth = _synthetic_cell()
    mask = device_cell_mask(rgb)
    assert mask.shape == truth.shape
    assert iou(mask, truth) > 0.8
    # A cell without its cytoplasm (nucleus only) would score far lower: the test can fail.
    nucleus = np.zeros_like(truth)
    cv2.circle(nucleus, (150, 150), 50, 1, -1)
    assert iou(nucleus, truth) < 0.5


def test_real_lab_iou_is_reported(shared_data):
    result = lab_mask_iou(shared_data, "cellavision-blog")
    assert result["images"] == 100
    assert 0.0 < result["mean_iou"] <= 1.0
    assert set(result["mean_iou_by_type"]) >= {"neutrophil", "lymphocyte"}


def test_halves_are_seeded_disjoint_and_even():
    files = [f"{i:03d}.png" for i in range(101)]
    halves = half_of(files)
    assert halves == half_of(list(files))  # the same split every run
    tuning = [f for f, h in halves.items() if h == "tuning"]
    assert len(tuning) == 50 and len(halves) == 101
    assert half_of(files, seed=13) != halves


# Floors on a fixed subset (every 6th Tecom image, every 2nd CellaVision one: 50 each). Measured 0.84 and 0.83
# (neutrophils 0.85 / 0.79); the segmentation before issue 12's mask work scored 0.54 and 0.65 (neutrophils
# 0.51 / 0.55) on the same images: it kept the nucleus and lost pale or pink cytoplasm.
@pytest.mark.parametrize("lab, step", [("tecom", 6), ("cellavision-blog", 2)])
def test_real_lab_cell_iou_floor(shared_data, lab, step):
    result = lab_mask_iou(shared_data, lab, step=step)
    assert result["images"] == 50
    assert result["mean_iou"] >= 0.78, result
    assert result["mean_iou_by_type"]["neutrophil"] >= 0.72, result
    assert result["share_below_0.5"] <= 0.15, result
