"""Issue 15: the frame pipeline's fast path gives the results of the serial one, bit for bit.

The fast path shares the first halving between the quality gate and cell finding, measures the red-cell
scale on a helper thread while cells are found, and resizes the field windows into one batch on that thread
while the classifier works through the chunk before. The serial path (``Analyzer.prepare_frame``, and
``assess_quality`` / ``find_cells`` without shared halvings) is kept as the reference: every model input,
p_blast, box, label and quality figure must be identical. Whole-collection proof before/after a change:
``python -m tests.core.frame_golden write|check`` (see that module).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from device.core.analysis import Analyzer
from device.core.detect import find_cells
from device.core.fieldprep import resize_field
from device.core.imageio import load_image
from device.core.morphology import Halvings, shrink
from device.core.quality import assess_quality, working_copy
from device.inference.classifier import CellClassifier
from device.resources import DEFAULT_MODEL, DEMO_FRAMES, PAPER_MODEL


@pytest.fixture(scope="module")
def analyzer():
    return Analyzer(CellClassifier.load(DEFAULT_MODEL))


def _frames(shared_root=None) -> list[tuple[str, np.ndarray]]:
    paths = sorted(DEMO_FRAMES.glob("*.jpg"))
    if shared_root is not None:
        paths += sorted((shared_root / "all-idb1").glob("*.jpg"))[::6]  # both sizes, blast-rich and healthy
        paths += sorted((shared_root / "bccd" / "JPEGImages").glob("*.jpg"))[:8]
    return [(p.name, load_image(p)) for p in paths]


def _same_as_serial(analyzer: Analyzer, name: str, rgb: np.ndarray) -> int:
    """Assert the fast path equals the serial reference on one frame; the number of cells compared."""
    result = analyzer.analyze_frame(rgb, name)
    reference_quality = assess_quality(rgb, analyzer.quality)
    assert result.quality == reference_quality.to_dict(), name
    assert dataclasses.asdict(assess_quality(rgb, analyzer.quality, Halvings(rgb))) == \
        dataclasses.asdict(reference_quality), name
    if not reference_quality.usable:
        assert result.cells == [], name
        return 0
    candidates = find_cells(rgb, analyzer.detection)
    shared = find_cells(rgb, analyzer.detection, Halvings(rgb))
    assert [(c.x, c.y, c.w, c.h, c.touches_edge) for c in shared] == \
        [(c.x, c.y, c.w, c.h, c.touches_edge) for c in candidates], name
    batch, scale = analyzer.prepare_frame(rgb, candidates)  # the serial reference
    expected = analyzer.classifier.predict(batch) if len(batch) else np.zeros((0,), np.float32)
    assert result.scale == scale, name
    assert [(c.x, c.y, c.w, c.h, c.edge) for c in result.cells] == \
        [(c.x, c.y, c.w, c.h, c.touches_edge) for c in candidates], name
    assert [c.p_blast for c in result.cells] == [float(p) for p in expected], name  # exact: identical inputs
    return len(candidates)


def test_the_fast_path_equals_the_serial_one_on_the_demo_frames(analyzer):
    compared = sum(_same_as_serial(analyzer, name, rgb) for name, rgb in _frames())
    assert compared > 0


def test_the_fast_path_equals_the_serial_one_on_real_frames(analyzer, shared_data):
    compared = sum(_same_as_serial(analyzer, name, rgb) for name, rgb in _frames(shared_data))
    assert compared >= 50


def test_the_paper_network_path_is_unchanged(shared_data):
    """The ``cellprep`` preparation (the paper's network) runs serially: same results as its reference too."""
    if not PAPER_MODEL.is_file():
        pytest.skip("the paper's network is not in models/paper")
    paper = Analyzer(CellClassifier.load(PAPER_MODEL))
    assert paper.preparation == "cellprep"
    for name, rgb in _frames(shared_data)[:6]:
        _same_as_serial(paper, name, rgb)


def test_shared_halvings_are_the_ones_each_step_made_alone():
    rgb = np.random.default_rng(3).integers(0, 256, (1944, 2592, 3), dtype=np.uint8)
    halvings = Halvings(rgb)
    assert np.array_equal(working_copy(rgb, halvings), working_copy(rgb))
    assert np.array_equal(shrink(rgb, 1000, halvings)[0], shrink(rgb, 1000)[0])
    assert len(halvings.levels) == 3  # the frame, 1296 and 648 px: the first halving made once for both
    odd = rgb[:1001, :1333]  # odd sizes halve with floor, as before
    assert np.array_equal(shrink(odd, 300, Halvings(odd))[0], shrink(odd, 300)[0])


def test_a_window_resized_into_a_batch_slot_is_the_plain_resize():
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (900, 900, 3), dtype=np.uint8)
    batch = np.zeros((3, 128, 128, 3), np.uint8)
    for i, side in enumerate((267, 128, 90)):  # area (downscale), copy, linear (upscale)
        window = frame[10 * i:10 * i + side, 20:20 + side]  # a view, as the pipeline passes
        resize_field(window, 128, out=batch[i])
        assert np.array_equal(batch[i], resize_field(np.ascontiguousarray(window), 128)), side


def test_crops_are_read_only_views_of_the_frame():
    rgb = load_image(min(DEMO_FRAMES.glob("*.jpg")))
    cells = find_cells(rgb)
    assert cells
    for cell in cells:
        assert np.shares_memory(cell.crop, rgb) and not cell.crop.flags.writeable
