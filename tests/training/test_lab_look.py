"""The laboratory-look tools of the cross-source protocol: NAP, Reinhard look transfer, look copies per fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_crosssource import _synthetic

from device.core.imageio import load_image
from model_conversion.crosssource import LEARNERS, leave_one_source_out
from model_conversion.looks import lab_stats, recolour
from model_conversion.nap import nuisance_directions, project_out

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"


def test_nap_finds_and_removes_the_direction_along_which_laboratories_differ():
    rng = np.random.default_rng(3)
    sources = ["a"] * 50 + ["b"] * 50 + ["c"] * 50
    z = rng.normal(0, 1, (150, 6))
    z[:, 4] += np.repeat([-3.0, 0.0, 3.0], 50)  # the labs' shift, along feature 4 only
    y = np.zeros(150, int)
    directions = nuisance_directions(z, y, sources, ["lymphocyte"] * 150, k=1)
    assert directions.shape == (6, 1) and abs(directions[4, 0]) > 0.95
    cleaned = project_out(z, directions)
    means = [cleaned[i * 50:(i + 1) * 50].mean(0) for i in range(3)]
    assert np.ptp([m[4] for m in means]) < 0.5  # was 6
    assert np.allclose(project_out(z, nuisance_directions(z, y, sources, [""] * 150, k=0)), z)


def test_recolour_gives_the_target_look_and_keeps_the_picture():
    image = load_image(DEMO / "BloodImage_00000.jpg")[:200, :200].copy()
    other = load_image(DEMO / "BloodImage_00101.jpg")[:200, :200]
    target_mean, target_std = lab_stats(other)
    out = recolour(image, target_mean, target_std)
    mean, std = lab_stats(out)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.all(np.abs(mean - target_mean) < 3.0) and np.all(np.abs(std - target_std) < 3.0)
    grey_in = image.mean(2).ravel()
    grey_out = out.mean(2).ravel()
    assert np.corrcoef(grey_in, grey_out)[0, 1] > 0.9  # the same cells, another colour


def test_a_fold_never_trains_on_copies_in_its_own_left_out_look():
    samples, x = _synthetic(shift_cnmc=0.0)
    seen: list[int] = []
    base = LEARNERS["centroid"]

    def recording(xt, yt, wt):
        seen.append(len(xt))
        return base(xt, yt, wt)

    looks = {"pbc": x + 0.01, "tecom": x - 0.01}
    rows = leave_one_source_out(samples, x, recording, looks=looks, log=lambda *_: None)
    by_name = {r.left_out: n for r, n in zip(rows, seen)}
    n = len(samples)
    assert by_name["pbc"] == 2 * (n - 60)  # itself + the tecom look only
    assert by_name["tecom"] == 2 * (n - 40)
    assert by_name["all-idb"] == 3 * (n - 80)  # both looks


def test_a_field_at_a_coarser_red_cell_radius_loses_detail_and_keeps_its_size():
    from model_conversion.data import Sample
    from model_conversion.views import _at_radius

    field = load_image(DEMO / "BloodImage_00022.jpg")[100:228, 100:228].copy()
    fine = Sample(DEMO / "x.jpg", 0, "pbc-normal", None, "lymphocyte", "g", rbc_radius=35.5)
    coarse = _at_radius(field, fine, 5.0)
    assert coarse.shape == field.shape and coarse.dtype == np.uint8
    sharpness = [float(np.abs(np.diff(im.astype(float), axis=1)).mean()) for im in (field, coarse)]
    assert sharpness[1] < 0.8 * sharpness[0]
    already = Sample(DEMO / "x.jpg", 0, "tecom", None, "lymphocyte", "g", rbc_radius=4.0)
    assert _at_radius(field, already, 5.0) is field
    cnmc = Sample(DEMO / "x.jpg", 1, "c-nmc-2019", "p1", "blast", "g", rbc_radius=62.5)
    assert _at_radius(field, cnmc, 5.0) is field


def test_resolution_shift_rows_score_the_held_out_cells_as_seen_coarser():
    from model_conversion.look_shift import res_shift_rows

    samples, x = _synthetic(shift_cnmc=0.0)
    blurred = x.copy()
    blurred[:, 0] *= 0.0  # the blast signal gone at the coarse radius
    rows = res_shift_rows(samples, x, {5.0: blurred}, LEARNERS["logreg"], "sources", ())
    assert rows[0]["radius_px"] == 5.0 and rows[0]["blasts"] > 0
    assert rows[0]["auc_as_is"] > 0.9 and rows[0]["auc_low"] < 0.75


def test_frame_scales_runs_the_device_pipeline_on_shrunk_blast_frames(shared_data):
    from model_conversion.frame_scales import scale_rows

    model = DEMO.parents[1] / "models" / "allscope_blast_int8.tflite"
    rows = scale_rows(model, shared_data, scales=(0.5,))
    assert rows[0]["frames"] == 21 and rows[0]["blasts"] == 226
    assert rows[0]["found"] > 200 and 0 < rows[0]["called_blast"] <= rows[0]["called_or_review"] <= rows[0]["found"]


def test_source_looks_are_measured_once_per_smear_source_and_cached(shared_data, tmp_path):
    from model_conversion.looks import load_looks, source_looks
    from model_conversion.sources import load_wbc_segmentation
    from model_conversion.views import physical_field

    samples = load_wbc_segmentation(shared_data, "tecom")[:6] + load_wbc_segmentation(shared_data,
                                                                                      "cellavision-blog")[:6]
    looks = source_looks(samples, tmp_path, physical_field, log=lambda *_: None)
    assert set(looks) == {"tecom", "cellavision-blog"} and looks["tecom"]["cells"] == 6
    assert all(len(v["mean"]) == 3 and min(v["std"]) > 0 for v in looks.values())
    assert looks["tecom"]["mean"] != looks["cellavision-blog"]["mean"]
    assert load_looks(tmp_path) == looks  # cached: read back, not measured again
