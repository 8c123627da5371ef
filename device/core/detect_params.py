"""Tunables of white-cell finding (``device.core.detect.find_cells``), in one place."""

from __future__ import annotations

from dataclasses import dataclass

from device.core.cellprep import MIN_STAIN_THRESHOLD


@dataclass(frozen=True)
class DetectionParams:
    """Tunables of ``find_cells``.

    Lengths are in red-cell radii (``r``, estimated per frame), areas in
    red-cell areas (``A = pi r^2``), unless the name says otherwise, so one
    set of values works at any magnification.
    """

    # Longest side of the working copy in pixels; larger frames are shrunk.
    # Nuclei stay >= ~30 px wide at 1000 for the magnifications seen so far.
    work_size: int = 1000
    # A working copy whose red cells come out smaller than this radius (px)
    # is enlarged, at most max_upscale times (low magnification or
    # resolution; ALL-IDB1 at 1000 px has r ~15-20, BCCD at 640 px ~45).
    min_work_radius: float = 12.0
    max_upscale: float = 3.0
    # Gaussian blur of the stain score, in working pixels (JPEG noise).
    blur_sigma: float = 1.0
    # Multiplier on the Otsu threshold of the stain score, and its floor.
    stain_factor: float = 1.0
    min_stain: float = MIN_STAIN_THRESHOLD
    # Longest side of the copy used for the red-cell size estimate.
    rbc_work_size: int = 400
    # Accepted red-cell radius as a fraction of the longest frame side; the
    # estimate is clipped to this range and ``rbc_fallback`` is used when no
    # red cells are found at all.
    rbc_min_fraction: float = 0.005
    rbc_max_fraction: float = 0.15
    rbc_fallback: float = 0.02
    # Opening radius that removes specks (stained red-cell rims, dust), in r.
    speck_radius: float = 0.08
    # Closing radius that bridges gaps inside one chromatin mass, in r.
    close_radius: float = 0.06
    # Stained pieces smaller than this are dropped before merging, in A.
    min_piece_area: float = 0.03
    # A blob is split only where it has >= 2 seeds each at least this thick
    # (distance to the blob edge, in r): lymphocyte and blast nuclei are
    # ~0.8-1.2 r in radius, neutrophil lobes ~0.3 r.
    split_min_core: float = 0.5
    # ... and each seed stands out above the waist joining it to a thicker
    # one by this share of its own thickness (two equal discs overlapping
    # so that the waist is < 80 % of their radius are split). 0.2 rather than
    # 0.25: defocused ALL-IDB1 frames (sigma 2 px at 640) lose the waist
    # between touching blasts (blast recall 0.93 -> 0.96 there, no change on
    # the sharp frames; model_conversion.detection_conditions).
    split_min_depth: float = 0.2
    # Contact lines between touching cells: black top-hat of the stain
    # score with a disc of ``contact_width`` r, deeper than ``contact_depth``
    # x the stain threshold (0.15: the faint contacts of defocused or
    # low-resolution frames are cut too; 0.25 missed 3 of 226 blasts at a
    # quarter of ALL-IDB1's resolution and 27 when defocused).
    contact_width: float = 0.3
    contact_depth: float = 0.15
    # Lobes are merged when their gap is at most ``lobe_gap`` r, the merged
    # nucleus spans at most ``max_nucleus_span`` r and at least one of the
    # two is lobe-sized (at most ``max_lobe_area`` A). Pieces split apart on
    # purpose are never merged back. Blast nuclei are 1.5-3 A, so two
    # touching blasts are never merged; BCCD neutrophil nuclei span ~4-5 r.
    lobe_gap: float = 0.5
    max_nucleus_span: float = 4.5
    max_lobe_area: float = 1.0
    # Smallest accepted nucleus (after merging), in A. Platelets are ~0.1 A
    # (giant ones up to ~0.3 A), small lymphocyte nuclei >= ~0.5 A.
    min_nucleus_area: float = 0.4
    # Mean stain score of a nucleus must reach this multiple of the threshold:
    # nuclei score ~1.8-2.5x, eosinophil granules, smudged cells and
    # many platelets less.
    min_mean_stain: float = 1.5
    # Cytoplasm margin added around the nucleus box for the cell box, in r.
    cell_margin: float = 0.35
    # Crop side = crop_scale x the larger cell box side (clipped at the edge).
    crop_scale: float = 1.8
    # A cell counts as cut by the border when its nucleus lies within this
    # distance of the frame edge (in r; a lymphocyte's cytoplasm rim is
    # ~0.2-0.3 r, so closer than that the cell is not whole).
    edge_margin: float = 0.15

