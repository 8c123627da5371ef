"""`allscope bench all`: a smoke run with tiny sizes through every section, with the real parts.

Checks the structure of bench.json and bench.md and that every section has
numbers; never asserts on timings (the machine is shared).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from figures import report as figure

from device.bench.report import LABELS, figure_rows
from device.cli.bench_all import SECTIONS, Sizes, run_all, spread
from sync.fleet.broker import find_mosquitto

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = Sizes(inferences=10, frames=3, timed_per_frame=1, web_clients=4, web_duration_s=1.0, web_patients=10,
             sync_records=50, sync_live_s=0.2, memory_frames=2)
EXPECTED = {  # figures each section must have
    "per_cell": {"int8_1t_ms", "int8_2t_ms"},  # + FLOAT_FIGURES when the model has a float32 twin
    "frames": {"slope_ms_per_cell", "fixed_ms", "slope_over_int8_1t"},
    "web": {f"{mode}_{key}" for mode in ("think1s", "saturated")
            for key in ("p50_ms", "p95_ms", "requests_per_s", "server_peak_rss_mb")},
    "sync": {"encrypted_records_per_s", "plaintext_records_per_s", "plaintext_over_encrypted",
             "encrypted_live_p50_ms", "plaintext_live_p50_ms"},
    "memory": {"idle_rss_mb", "idle_peak_rss_mb", "model_loaded_rss_mb", "model_loaded_peak_rss_mb",
               "after_frames_rss_mb", "after_frames_peak_rss_mb", "cells_per_frame", "net_written_kb_per_frame",
               "written_kb_per_frame", "cancelled_kb_per_frame", "stored_kb_per_frame", "stored_image_kb_per_frame",
               "stored_crops_kb_per_frame", "stored_database_kb_per_frame", "concurrent4_peak_rss_mb",
               "concurrent4_refused_busy", "stored_thumbs_kb_per_frame",
               "stored_crop_kb_per_cell", "stored_after_prune_kb_per_frame", "camera_cells_per_frame",
               *(f"camera_stored_{key}" for key in ("kb_per_frame", "image_kb_per_frame", "crops_kb_per_frame",
                                                     "database_kb_per_frame", "thumbs_kb_per_frame",
                                                     "crop_kb_per_cell", "after_prune_kb_per_frame"))},
    "storage": {"original_kb", "png1_kb", "png1_ms", "webp_lossless_kb", "webp_lossless_ms", "jpeg95_kb",
                "jpeg95_ms", "jpeg90_kb", "jpeg90_ms", "thumb_kb", "crop_png_kb", "crop_jpeg95_kb",
                "crop_webp_lossless_kb"},
}

FLOAT_FIGURES = {"float32_1t_ms", "float32_2t_ms", "float32_over_int8_1t", "float32_over_int8_2t"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench") / "results"
    printed = io.StringIO()
    report = run_all(1, out_dir, TINY, quick=True, out=printed)
    return report, out_dir, printed.getvalue()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_every_section_has_every_figure_with_numbers(smoke):
    report, _, _ = smoke
    assert list(report["sections"]) == list(SECTIONS)
    checked = 0
    for name, expected in EXPECTED.items():
        section = report["sections"][name]
        if name == "sync" and not find_mosquitto():
            assert "mosquitto" in section["skipped"]
            continue
        if name == "per_cell" and section["float32_model"]:
            expected = expected | FLOAT_FIGURES
        assert set(section["figures"]) == expected, name
        for key, stats in section["figures"].items():
            assert stats["runs"] == 1, (name, key)
            assert all(_is_number(stats[k]) for k in ("median", "min", "max")), (name, key, stats)
            assert stats["min"] <= stats["median"] <= stats["max"]
            checked += 1
    assert report["problems"] == []
    figure("bench all: figures checked", checked)


def test_sections_measure_what_they_say(smoke):
    sections = smoke[0]["sections"]
    frames = sections["frames"]
    assert 2 <= len(frames["table"]) <= TINY.frames
    ratio = frames["figures"]["slope_over_int8_1t"]["median"]  # one run: that run's slope ÷ its int8 per cell
    assert ratio == pytest.approx(frames["figures"]["slope_ms_per_cell"]["median"]
                                  / sections["per_cell"]["figures"]["int8_1t_ms"]["median"], rel=1e-2)
    counts = [row["cells"] for row in frames["table"]]
    assert counts == sorted(set(counts)), "one frame per distinct cell count, fewest first"
    assert frames["size"] == "2592x1944" and frames["candidates"] >= len(counts)
    assert sections["web"]["clients"] == 4 and sections["web"]["errors"] == 0
    memory = sections["memory"]["figures"]
    assert sections["memory"]["frames_per_run"] == TINY.memory_frames
    assert memory["idle_rss_mb"]["median"] > 0 and memory["stored_image_kb_per_frame"]["median"] > 0
    assert memory["net_written_kb_per_frame"]["median"] >= 0
    assert memory["after_frames_peak_rss_mb"]["median"] >= memory["idle_peak_rss_mb"]["median"]  # VmHWM only grows
    # issue 15: the upload is kept as received, and a pruned frame keeps only crops, thumbnail and its rows
    assert memory["stored_thumbs_kb_per_frame"]["median"] > 0
    assert memory["stored_after_prune_kb_per_frame"]["median"] < memory["stored_kb_per_frame"]["median"]
    # a camera still of the same field is stored in the default still format: smaller than the JPEG upload, and
    # the analysis of the stored still finds cells as the upload's did
    assert 0 < memory["camera_stored_image_kb_per_frame"]["median"] < memory["stored_image_kb_per_frame"]["median"]
    assert memory["camera_cells_per_frame"]["median"] > 0 and memory["camera_stored_crops_kb_per_frame"]["median"] > 0
    storage = sections["storage"]["figures"]
    assert storage["webp_lossless_kb"]["median"] < storage["png1_kb"]["median"]  # both lossless, on real frames
    assert storage["crop_jpeg95_kb"]["median"] < storage["crop_png_kb"]["median"]
    assert storage["jpeg90_kb"]["median"] < storage["jpeg95_kb"]["median"] < storage["webp_lossless_kb"]["median"]
    assert sections["storage"]["crops_measured"] > 0
    if find_mosquitto():
        assert sections["sync"]["correct"] is True and sections["sync"]["records"] == TINY.sync_records


def test_json_and_markdown_are_written_whole(smoke):
    report, out_dir, printed = smoke
    assert sorted(p.name for p in out_dir.iterdir()) == ["bench.json", "bench.md"]  # no temp files, no work dir
    assert json.loads((out_dir / "bench.json").read_text()) == json.loads(json.dumps(report))
    markdown = (out_dir / "bench.md").read_text()
    assert markdown in printed
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    rows = figure_rows(report)
    assert table[0] == "| figure | median | min–max |"
    labelled = {(section, key) for section, key, _, _ in LABELS}
    assert all(pair in labelled for name, section in report["sections"].items()
               for pair in ((name, key) for key in section.get("figures", {})))  # every figure has a label
    for label, _unit, _stats in rows:
        assert sum(line.startswith(f"| {label} | ") for line in table) == 1, label
    frame_rows = [line for line in table if line.startswith("| Im") or "demo frame" in line]
    assert len(frame_rows) == len(report["sections"]["frames"]["table"])


def test_repeated_runs_give_a_median_and_spread(tmp_path):
    report = run_all(2, tmp_path, TINY, sections=("per_cell",), out=io.StringIO())
    for stats in report["sections"]["per_cell"]["figures"].values():
        assert stats["runs"] == 2 and stats["min"] <= stats["median"] <= stats["max"]
    assert "median of 2 runs" in (tmp_path / "bench.md").read_text()
    assert spread([3, 1, None, 2]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert spread([None])["runs"] == 0


def test_cli_refuses_zero_repeats_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "device.cli", "bench", "all", "--repeats", "0", "--out",
                             str(tmp_path / "r")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["allscope: --repeats must be at least 1"]
    assert not (tmp_path / "r").exists()


def test_a_section_that_cannot_run_is_recorded_and_the_others_still_written(tmp_path):
    report = run_all(1, tmp_path, TINY, sections=("per_cell", "frames"), model=tmp_path / "missing.tflite",
                     out=io.StringIO())
    for name in ("per_cell", "frames"):
        assert "missing.tflite" in report["sections"][name]["error"]
    assert [p.split(":")[0] for p in report["problems"]] == ["per_cell", "frames"]
    markdown = (tmp_path / "bench.md").read_text()
    assert "per_cell: failed (" in markdown and "Problems seen: " in markdown


def test_the_service_caps_malloc_arenas_unless_told_otherwise(monkeypatch):
    """The memory section found the analysing service at ~300 MB resident from per-thread malloc arenas."""
    import platform

    from webui.server import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # an operator's own setting wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("no glibc malloc arenas here")
    assert limit_malloc_arenas() is True


def test_the_service_maps_frame_sized_blocks_unless_told_otherwise(monkeypatch):
    """Issue 15: with glibc's sliding mmap threshold, freed frame copies stayed resident (302 MB peak with four
    uploads at once, 245 MB with the threshold fixed)."""
    import platform

    from webui.server import map_large_blocks

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert map_large_blocks() is False  # an operator's own setting wins
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("no glibc malloc here")
    assert map_large_blocks() is True
