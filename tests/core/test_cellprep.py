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


def test_pale_pink_cytoplasm_joins_the_cell_and_touching_red_cells_do_not():
    """A neutrophil-like cell: lobed nucleus, pale pink-lilac cytoplasm, a red cell pressed against it."""
    img = np.full((240, 240, 3), (236, 228, 222), np.uint8)  # glass
    cv2.circle(img, (200, 120), 30, (222, 160, 170), -1)  # red cell: pink, touching the cell
    cv2.circle(img, (120, 120), 62, (214, 188, 205), -1)  # pale pink-lilac cytoplasm (red above blue)
    for cx, cy in ((95, 105), (130, 95), (140, 135), (100, 140)):
        cv2.circle(img, (cx, cy), 17, (120, 60, 150), -1)  # nuclear lobes
    mask, found = segment_cell(img)
    truth = np.zeros((240, 240), np.uint8)
    cv2.circle(truth, (120, 120), 62, 1, -1)
    assert found
    inter = float((mask & truth).sum())
    assert inter / float((mask | truth).sum()) > 0.85  # the whole cell, not just its lobes
    assert mask[120, 215] == 0 and mask[100, 205] == 0  # the red cell stays out


def test_black_background_crop_keeps_the_whole_cell():
    """C-NMC crops are cut out on black: the cell is everything stained, never the black."""
    img = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(img, (100, 100), 70, (150, 110, 170), -1)  # cytoplasm
    cv2.circle(img, (100, 100), 50, (90, 40, 130), -1)  # nucleus
    mask, found = segment_cell(img)
    truth = np.zeros((200, 200), np.uint8)
    cv2.circle(truth, (100, 100), 70, 1, -1)
    assert found and mask[5, 5] == 0
    assert float((mask & truth).sum()) / float((mask | truth).sum()) > 0.85


def test_v2_mask_is_kept_for_the_paper_network_and_v3_is_the_whole_cell():
    """cellprep-v2 (what models/paper was trained on) keeps its nucleus-and-bluish mask; v3 takes the cell."""
    from device.core.cellprep import PREPROCESSING_ID, WHOLE_CELL_ID
    from device.core.fieldprep import preparation_for

    img = np.full((240, 240, 3), (236, 228, 222), np.uint8)
    cv2.circle(img, (120, 120), 62, (214, 188, 205), -1)  # pale pink cytoplasm
    cv2.circle(img, (120, 120), 30, (120, 60, 150), -1)  # nucleus
    v2, _ = segment_cell(img, preprocessing=PREPROCESSING_ID)
    v3, _ = segment_cell(img, preprocessing=WHOLE_CELL_ID)
    assert v3.sum() > 2.5 * v2.sum()  # v2 loses the pink cytoplasm, v3 keeps it
    assert np.array_equal(prepare_cell(img, 64).image, prepare_cell(img, 64, None, PREPROCESSING_ID).image)
    assert not np.array_equal(prepare_cell(img, 64).image, prepare_cell(img, 64, None, WHOLE_CELL_ID).image)
    assert preparation_for({"preprocessing": WHOLE_CELL_ID}) == "cellprep"
    with pytest.raises(ValueError):
        prepare_cell(img, 64, None, "cellprep-v9")
