"""White-cell finding in whole frames: synthetic smears, then the real data."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.core.cellprep import prepare_cell
from device.core.detect import CellCandidate, DetectionParams, estimate_rbc_radius, find_cells

BACKGROUND = (228, 226, 222)  # glass / plasma: bright, grey
RED_CELL = (214, 150, 158)  # pink: red above blue, blue ~ green
PALLOR = (222, 178, 182)
NUCLEUS = (110, 50, 160)  # purple chromatin: blue far above green
CYTOPLASM = (200, 190, 215)
PLATELET = (150, 100, 170)

# A 1000x750 smear at "1x": red cells of radius 20, nuclei of radius 26.
RBC_R = 20
NUC_R = 26
CYTO_R = 34
SINGLE_CELLS = [(200, 200), (700, 220), (450, 560)]
TOUCHING_PAIR = [(790, 560), (838, 560)]  # centres 48 apart: the discs overlap
LOBED_CELL = (230, 560)
# Three separate lobes of radius 10 in one cytoplasm, 8 px apart: each alone
# is platelet-sized, together one neutrophil nucleus.
LOBES = [(-19, -9), (0, 12), (19, -9)]
LOBE_R = 10
PLATELETS = [(100, 80), (380, 90), (560, 400), (900, 90), (120, 420), (600, 700), (330, 330), (880, 400)]


def _disc(img: np.ndarray, centre: tuple[float, float], radius: float, colour, scale: float) -> None:
    cx, cy = centre
    cv2.circle(img, (int(round(cx * scale)), int(round(cy * scale))), max(1, int(round(radius * scale))), colour, -1,
               lineType=cv2.LINE_AA)


def _red_cells(keep_clear: list[tuple[float, float]], rng: np.random.Generator) -> list[tuple[float, float]]:
    """Random red-cell centres that stay off the white cells (slight overlaps allowed)."""
    centres: list[tuple[float, float]] = []
    for _ in range(4000):
        x, y = rng.uniform(0, 1000), rng.uniform(0, 750)
        if any(np.hypot(x - cx, y - cy) < CYTO_R + RBC_R + 4 for cx, cy in keep_clear):
            continue
        if any(np.hypot(x - cx, y - cy) < 1.7 * RBC_R for cx, cy in centres):
            continue
        centres.append((x, y))
        if len(centres) >= 150:
            break
    return centres


def smear(scale: float = 1.0, cells=True, edge_cell=False, seed: int = 0) -> np.ndarray:
    """Synthetic smear of (1000 x 750) * scale pixels, RGB uint8."""
    rng = np.random.default_rng(seed)
    w, h = int(round(1000 * scale)), int(round(750 * scale))
    img = np.full((h, w, 3), BACKGROUND, np.uint8)
    white = SINGLE_CELLS + TOUCHING_PAIR + [LOBED_CELL] + ([(8, 375)] if edge_cell else [])
    for centre in _red_cells(white if cells else [], rng):
        _disc(img, centre, RBC_R, RED_CELL, scale)
        _disc(img, centre, RBC_R * 0.35, PALLOR, scale)
    for centre in PLATELETS:
        _disc(img, centre, 5, PLATELET, scale)
    if cells:
        for centre in SINGLE_CELLS + TOUCHING_PAIR + ([(8, 375)] if edge_cell else []):
            _disc(img, centre, CYTO_R, CYTOPLASM, scale)
        for centre in SINGLE_CELLS + TOUCHING_PAIR + ([(8, 375)] if edge_cell else []):
            _disc(img, centre, NUC_R, NUCLEUS, scale)
        _disc(img, LOBED_CELL, CYTO_R + 4, (215, 195, 215), scale)
        for dx, dy in LOBES:
            _disc(img, (LOBED_CELL[0] + dx, LOBED_CELL[1] + dy), LOBE_R, NUCLEUS, scale)
    img = cv2.GaussianBlur(img, (0, 0), 1.2 * scale)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def expected_centres() -> list[tuple[float, float]]:
    return SINGLE_CELLS + TOUCHING_PAIR + [LOBED_CELL]


def _nearest(cells: list[CellCandidate], x: float, y: float) -> tuple[CellCandidate, float]:
    best = min(cells, key=lambda c: np.hypot(c.x - x, c.y - y))
    return best, float(np.hypot(best.x - x, best.y - y))


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return smear()


@pytest.fixture(scope="module")
def cells(frame) -> list[CellCandidate]:
    return find_cells(frame)


# --------------------------------------------------------------------------
# synthetic frames


def test_red_cell_radius_is_estimated_from_the_frame(frame):
    from device.core.cellprep import nucleus_score, stain_threshold

    score = nucleus_score(frame)
    stained = (score > stain_threshold(score)).astype(np.uint8)
    assert estimate_rbc_radius(frame, stained) == pytest.approx(RBC_R, rel=0.2)
    big = smear(scale=2.0)
    score = nucleus_score(big)
    stained = (score > stain_threshold(score)).astype(np.uint8)
    assert estimate_rbc_radius(big, stained) == pytest.approx(2 * RBC_R, rel=0.2)


def test_counts_each_white_cell_once_and_ignores_red_cells_and_platelets(cells):
    # 3 single cells + 2 touching nuclei + 1 lobed neutrophil; 150 red cells
    # and 8 platelets must not be reported.
    assert len(cells) == len(expected_centres())
    for x, y in expected_centres():
        _, distance = _nearest(cells, x, y)
        assert distance < 0.35 * NUC_R, (x, y)
    for x, y in PLATELETS:
        _, distance = _nearest(cells, x, y)
        assert distance > 2 * NUC_R, (x, y)


def test_touching_nuclei_are_split_in_two(cells):
    found = [_nearest(cells, x, y) for x, y in TOUCHING_PAIR]
    assert found[0][0] is not found[1][0]
    assert all(distance < 0.35 * NUC_R for _, distance in found)


def test_lobes_of_one_nucleus_make_one_cell(cells):
    near = [c for c in cells if np.hypot(c.x - LOBED_CELL[0], c.y - LOBED_CELL[1]) < 2 * CYTO_R]
    assert len(near) == 1
    assert near[0].w >= 2 * (19 + LOBE_R)  # the box spans all lobes


def test_candidates_sorted_by_position_with_generous_crops(frame, cells):
    assert [(c.y, c.x) for c in cells] == sorted((c.y, c.x) for c in cells)
    for c in cells:
        assert isinstance(c, CellCandidate)
        assert c.crop.dtype == np.uint8 and c.crop.ndim == 3 and c.crop.shape[2] == 3
        assert c.touches_edge is False
        assert 1.6 * NUC_R <= c.w <= 3.5 * CYTO_R and 1.6 * NUC_R <= c.h <= 3.5 * CYTO_R
        side = max(c.crop.shape[:2])
        assert 1.5 * max(c.w, c.h) <= side <= 2.1 * max(c.w, c.h) + 2
        # the crop is cut from the frame, centred on the cell
        half = DetectionParams().crop_scale * max(c.w, c.h) / 2
        x0, y0 = int(round(c.x - half)), int(round(c.y - half))
        assert np.array_equal(c.crop, frame[y0:y0 + c.crop.shape[0], x0:x0 + c.crop.shape[1]])


def test_crop_feeds_prepare_cell(cells):
    single = _nearest(cells, *SINGLE_CELLS[0])[0]
    prepared = prepare_cell(single.crop, 96)
    assert prepared.found_nucleus
    assert prepared.image.shape == (96, 96, 3)


def test_centres_are_in_original_pixels_for_a_large_frame():
    scale = 2.592  # a 2592x1944 frame: the detector works on a shrunk copy
    big = smear(scale=scale)
    assert big.shape[:2] == (1944, 2592)
    found = find_cells(big)
    assert len(found) == len(expected_centres())
    for x, y in expected_centres():
        cell, distance = _nearest(found, x * scale, y * scale)
        assert distance < 0.35 * NUC_R * scale, (x, y)
        assert cell.w > 1.6 * NUC_R * scale
        assert max(cell.crop.shape[:2]) > 1.5 * max(cell.w, cell.h)


def test_cell_cut_by_the_border_is_marked():
    found = find_cells(smear(edge_cell=True))
    edge = [c for c in found if c.touches_edge]
    assert len(edge) == 1
    assert edge[0].x < 2 * NUC_R
    assert edge[0].crop.shape[1] < edge[0].crop.shape[0]  # clipped at the frame edge
    assert sum(not c.touches_edge for c in found) == len(expected_centres())


def test_red_cells_and_platelets_alone_give_nothing():
    assert find_cells(smear(cells=False)) == []


def test_blank_and_tiny_frames_do_not_fail():
    assert find_cells(np.full((480, 640, 3), 230, np.uint8)) == []
    assert find_cells(np.full((8, 8, 3), 230, np.uint8)) == []


def test_params_change_the_result(frame):
    strict = DetectionParams(min_nucleus_area=4.0)  # nothing is that big
    assert find_cells(frame, strict) == []


def test_rejects_wrong_input():
    with pytest.raises(ValueError):
        find_cells(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError):
        find_cells(np.zeros((100, 100, 3), np.float32))


# --------------------------------------------------------------------------
# real data (skipped without ../shared/data)


@pytest.fixture(scope="module")
def all_idb1(shared_data):
    from model_conversion.eval_detection import evaluate_all_idb1

    return evaluate_all_idb1(shared_data)


@pytest.fixture(scope="module")
def bccd(shared_data):
    from model_conversion.eval_detection import evaluate_bccd

    return evaluate_bccd(shared_data, limit=60)


def test_all_idb1_blasts_are_found(all_idb1, shared_data):
    listed = (shared_data / "all-idb1" / "labels.csv").read_text().splitlines()[1:]
    assert all_idb1["frames"] == len([line for line in listed if line.strip()])  # every frame of the collection
    assert all_idb1["blast_recall"] >= 0.9, all_idb1["per_frame"]


def test_all_idb1_platelets_are_not_reported(all_idb1):
    # Im039_0 and Im098_0 hold one white cell each and 30+ listed platelets.
    rows = {row["frame"]: row for row in all_idb1["per_frame"]}
    for name in ("Im039_0.jpg", "Im098_0.jpg"):
        assert 1 <= rows[name]["detections"] <= 2, rows[name]
    assert all_idb1["unmatched_per_frame"] <= 4.0


def test_bccd_white_cells_are_found_with_few_false_finds(bccd):
    assert bccd["frames"] >= 55
    assert bccd["wbc_recall"] >= 0.9
    assert bccd["false_per_frame"] <= 0.2
    assert bccd["duplicates_per_frame"] <= 0.3
    assert bccd["median_box_iou"] >= 0.6


# --------------------------------------------------------------------------
# other laboratories: colour casts, low magnification, defocus (synthetic, then real frames)


def test_colour_casts_do_not_change_what_is_found(frame, cells):
    from model_conversion.frame_variants import CASTS, colour_cast

    for name in CASTS:
        found = find_cells(colour_cast(frame, name))
        assert len(found) == len(cells), name
        for x, y in expected_centres():
            assert _nearest(found, x, y)[1] < 0.35 * NUC_R, (name, x, y)


def test_low_magnification_frame_is_enlarged_and_every_cell_found():
    scale = 0.4  # red cells of radius 8 px: below DetectionParams.min_work_radius
    small = smear(scale=scale)
    found = find_cells(small)
    assert len(found) == len(expected_centres())
    for x, y in expected_centres():
        assert _nearest(found, x * scale, y * scale)[1] < 0.35 * NUC_R * scale, (x, y)


def test_detection_modules_are_small_and_import_downwards():
    from pathlib import Path

    import device.core.detect as detect_module

    core = Path(detect_module.__file__).parent
    order = ["detect", "nuclei", "nucleus_split", "rbc_radius", "stain", "detect_params", "morphology", "cellprep"]
    for i, name in enumerate(order):
        text = (core / f"{name}.py").read_text()
        assert len(text.splitlines()) < 400, name
        for above in order[:i]:
            assert f"device.core.{above} import" not in text, f"{name} imports {above}"


REAL_CONDITIONS = ["cast_green", "cast_blue", "cast_yellow", "white_background", "scale_0.5", "scale_0.25",
                   "thin_smear_low_mag", "blur_2"]
# Blast-rich ALL-IDB1 frames at both sizes (touching blasts) and BCCD frames with neutrophils and lymphocytes.
REAL_FRAMES = ["Im001_1.jpg", "Im005_1.jpg", "Im052_1.jpg", "Im053_1.jpg",
               "BloodImage_00000.jpg", "BloodImage_00040.jpg", "BloodImage_00095.jpg", "BloodImage_00200.jpg",
               "BloodImage_00300.jpg", "BloodImage_00400.jpg"]


@pytest.fixture(scope="module")
def real_frames(shared_data):
    from model_conversion.detection_conditions import load_frames

    frames = [f for f in load_frames(shared_data) if f.path.name in REAL_FRAMES]
    assert len(frames) == len(REAL_FRAMES)
    return frames


@pytest.mark.parametrize("condition", REAL_CONDITIONS)
def test_real_frames_under_other_laboratories_conditions(real_frames, condition):
    """White-cell recall >= 0.95 (0.9 defocused: touching blasts lose their waist) and <= 0.5 extra
    counted cells per BCCD frame under each condition.

    (ALL-IDB1's other/ lists are incomplete: its extras are mostly unlisted white cells, so only
    BCCD's exhaustive boxes bound the extras here.)
    """
    from device.core.imageio import load_image
    from model_conversion.detection_conditions import CONDITIONS, score_frame

    found = targets = extra = n_bccd = 0
    for frame in real_frames:
        original = load_image(frame.path)
        rgb = CONDITIONS[condition].make(original)
        s = score_frame(frame, find_cells(rgb), rgb.shape[1] / original.shape[1], rgb.shape[0] / original.shape[0])
        found, targets = found + s["found"], targets + s["targets"]
        if frame.source == "bccd":
            extra, n_bccd = extra + s["extra"], n_bccd + 1
    assert found / targets >= (0.9 if condition == "blur_2" else 0.95), (condition, found, targets)
    assert extra / n_bccd <= 0.5, (condition, extra, n_bccd)


def test_degradation_table_marks_each_row_against_the_target(shared_data):
    """Issue 12: cell finding under colour casts, scale 0.25-1 and blur (a subset of the frames)."""
    import io

    from model_conversion.eval_detection import DEGRADATIONS, degradation_table

    out = io.StringIO()
    results = degradation_table(shared_data, bccd_step=30, idb_step=9, out=out)
    assert {r["condition"] for r in results.values()} == set(DEGRADATIONS)
    assert {k.split("|")[0] for k in results} == {"all-idb1", "bccd"}
    for key, row in results.items():
        assert row["meets_target"] == (row["recall"] >= 0.97 and row["extra_per_frame"] <= 0.5), key
        if key.startswith("bccd|") and row["condition"] != "blur_2":
            assert row["recall"] >= 0.95 and row["extra_per_frame"] <= 0.3, (key, row)
        if key.startswith("all-idb1|") and row["condition"].startswith(("cast_", "scale_")):
            assert row["recall"] >= 0.95, (key, row)
    text = out.getvalue()
    assert "scale_0.25" in text and "cast_yellow" in text and "target" in text
