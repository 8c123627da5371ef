"""Per-source cell loaders of model_conversion/sources.py on the real shared data."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np

from device.core.imageio import load_image
from model_conversion.data import BLAST, NORMAL, load_cnmc
from model_conversion.sources import (
    SOURCE_OF,
    load_all_idb1_cells,
    load_bccd_cells,
    load_wbc_segmentation,
    with_source_scale,
)
from model_conversion.views import PREPARATIONS, prepare


def test_all_idb1_has_every_blast_centroid_and_confirmed_normals(shared_data):
    cells = load_all_idb1_cells(shared_data)
    blasts = [c for c in cells if c.label == BLAST]
    assert len(blasts) == 226  # the README's count of blast centroids
    normals = [c for c in cells if c.label == NORMAL]
    assert normals and {c.cell_type for c in normals} <= {"other-listed", "found-in-healthy-frame"}
    # Blast-free frames contribute no blast; frames are the split groups; every cell has a scale.
    assert not any(c.path.stem.endswith("_0") for c in blasts)
    assert all(c.group.startswith("all-idb1:Im") and c.centre and c.rbc_radius for c in cells)
    assert len({c.group for c in cells if "Im093_0" in c.path.name or "Im108_0" in c.path.name}) <= 1
    # Red-cell radius stays in a plausible band for these frames (~35-45 px at full size).
    radii = np.array([c.rbc_radius for c in cells])
    assert 25 < np.median(radii) < 60
    assert SOURCE_OF["all-idb1"] == SOURCE_OF["all-idb2"] == "all-idb"


def test_bccd_cells_are_the_wbc_boxes(shared_data):
    cells = load_bccd_cells(shared_data)
    assert len(cells) == 372
    assert all(c.label == NORMAL and c.group.startswith("bccd:") for c in cells)
    assert len({c.group for c in cells}) > 300
    assert all(0 <= c.centre[0] <= 640 and 0 <= c.centre[1] <= 480 and c.cell_side > 20 for c in cells)


def test_wbc_segmentation_labs_have_masks_and_scale(shared_data):
    for lab, count in (("tecom", 300), ("cellavision-blog", 100)):
        cells = load_wbc_segmentation(shared_data, lab)
        assert len(cells) == count
        assert all(c.mask.is_file() and c.label == NORMAL and c.rbc_radius for c in cells)
        mask = cv2.imread(str(cells[0].mask), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(mask)) <= {0, 128, 255} and (mask > 0).any()
    assert Counter(c.cell_type for c in load_wbc_segmentation(shared_data, "tecom"))["neutrophil"] > 100


def test_every_preparation_gives_one_picture_for_frame_and_crop_cells(shared_data):
    frame_cell = load_all_idb1_cells(shared_data)[0]
    crop_cell = with_source_scale(load_cnmc(shared_data / "c-nmc-2019")[:1])[0]
    assert crop_cell.rbc_radius
    for sample in (frame_cell, crop_cell):
        rgb = load_image(sample.path)
        for name in PREPARATIONS:
            out = prepare(name, rgb, sample, 64)
            assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.std() > 5, (name, sample.path)
