"""Cell preparation: the same canonical input from every source."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from device.core.cellprep import nucleus_score, prepare_cell, segment_cell
from device.core.imageio import load_image


def synthetic_cell(size: int = 200, nucleus_r: int = 40, cyto_r: int = 55, background=(225, 215, 220)) -> np.ndarray:
    """A purple nucleus in a blue-grey cytoplasm ring on a pale smear, with a pink red cell nearby."""
    img = np.full((size, size, 3), background, np.uint8)
    cv2.circle(img, (30, 30), 28, (215, 150, 165), -1)  # red cell (pink: red above blue)
    c = size // 2
    cv2.circle(img, (c, c), cyto_r, (170, 170, 205), -1)  # cytoplasm
    cv2.circle(img, (c, c), nucleus_r, (95, 45, 140), -1)  # nucleus
    return img


def test_nucleus_score_separates_stained_nucleus_from_red_cells():
    img = synthetic_cell()
    score = nucleus_score(img)
    assert score[100, 100] > 60  # nucleus
    assert score[30, 30] < 25  # red cell
    assert score[5, 190] < 10  # background


def test_segment_cell_takes_nucleus_and_cytoplasm_not_red_cell():
    img = synthetic_cell()
    mask, found = segment_cell(img)
    assert found
    assert mask[100, 100] == 1  # nucleus
    assert mask[100, 100 + 48] == 1  # cytoplasm ring
    assert mask[30, 30] == 0  # red cell left out
    assert mask[5, 190] == 0  # background left out
    area = mask.sum()
    assert 0.6 * np.pi * 55 ** 2 < area < 1.2 * np.pi * 55 ** 2


def test_prepare_cell_fills_input_and_blacks_background():
    prepared = prepare_cell(synthetic_cell(), 96)
    img = prepared.image
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert prepared.found_nucleus
    assert img[0, 0].max() == 0 and img[95, 95].max() == 0  # corners outside the round cell
    assert img[48, 48].max() > 0
    covered = (img.max(axis=2) > 0).mean()
    assert 0.55 < covered < 0.85  # the cell fills the crop (a disc in its square is ~0.67)


def test_prepare_cell_is_scale_and_stain_invariant():
    small = prepare_cell(synthetic_cell(200, 40, 55), 64).image.astype(float)
    large = prepare_cell(cv2.resize(synthetic_cell(200, 40, 55), (500, 500)), 64).image.astype(float)
    assert np.abs(small - large).mean() < 8
    darker = (synthetic_cell().astype(float) * 0.8).astype(np.uint8)
    assert np.abs(prepare_cell(darker, 64).image.astype(float) - small).mean() < 12


def test_prepare_cell_without_nucleus_still_returns_an_input():
    blank = np.full((120, 120, 3), 220, np.uint8)
    prepared = prepare_cell(blank, 32)
    assert not prepared.found_nucleus
    assert prepared.image.shape == (32, 32, 3)


def test_prepare_cell_rejects_non_rgb():
    with pytest.raises(ValueError):
        prepare_cell(np.zeros((10, 10), np.uint8), 32)


@pytest.mark.parametrize("folder", ["all-idb2", "c-nmc-2019", "pbc-normal"])
def test_real_cells_are_found_and_masked_alike(shared_data, folder):
    """On every source the nucleus is found and the background is blacked out, so the background is no cue."""
    with open(shared_data / folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picks = rows[:: max(1, len(rows) // 25)][:25]
    found, border_black = 0, 0
    for row in picks:
        prepared = prepare_cell(load_image(shared_data / folder / row["file"]), 96)
        found += prepared.found_nucleus
        img = prepared.image
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        border_black += (border.max(axis=1) == 0).mean() > 0.5
    assert found >= 0.9 * len(picks)
    assert border_black >= 0.8 * len(picks)


def test_touching_neighbour_is_kept_out_when_cell_finding_marks_it():
    """In crowded frames cell finding hands over the neighbours' nuclei; the cell must not swallow them."""
    from device.core.detect import find_cells

    img = np.full((300, 420, 3), (225, 215, 220), np.uint8)
    cv2.circle(img, (160, 150), 62, (170, 170, 205), -1)
    cv2.circle(img, (270, 150), 62, (170, 170, 205), -1)
    cv2.circle(img, (160, 150), 50, (95, 45, 140), -1)
    cv2.circle(img, (262, 150), 50, (95, 45, 140), -1)  # nuclei touch
    merged, _ = segment_cell(img)
    assert merged[150, 160] and merged[150, 262]  # without help the two become one blob
    cells = find_cells(img)
    assert len(cells) == 2
    for cell in cells:
        assert cell.neighbours is not None and cell.neighbours.shape == cell.crop.shape[:2]
        assert cell.neighbours.any()
        own, _ = segment_cell(cell.crop, cell.neighbours)
        h, w = own.shape
        assert own[h // 2, w // 2]  # its own nucleus
        assert own.sum() < 0.75 * merged.sum()  # not both cells
