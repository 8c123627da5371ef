"""The `allscope classify|analyze` contract, through the installed console script and the shipped model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT

ALLSCOPE = Path(sys.executable).parent / "allscope"
DEMO = REPO_ROOT / "device" / "demo"
SHIPPED_MODEL = REPO_ROOT / "models" / "allscope_blast_int8.tflite"


def run_cli(*args: str, model: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ALLSCOPE_MODEL", None)
    if model is not None:
        env["ALLSCOPE_MODEL"] = str(model)
    return subprocess.run([str(ALLSCOPE), *args], capture_output=True, text=True, env=env, timeout=300)


def test_console_script_is_installed_and_shipped_model_is_small():
    assert ALLSCOPE.is_file(), "the allscope console script is not installed in this environment"
    assert SHIPPED_MODEL.is_file(), "models/allscope_blast_int8.tflite is missing"
    assert SHIPPED_MODEL.stat().st_size <= 5_000_000


def test_analyze_demo_frames_json_contract():
    result = run_cli("analyze", str(DEMO), "--json")
    assert result.returncode == 0, result.stderr
    frames = json.loads(result.stdout)
    assert len(frames) == len(list(DEMO.glob("*.jpg"))) >= 3
    for frame in frames:
        assert set(frame) >= {"path", "width", "height", "quality", "cells", "cell_count", "blast_count",
                              "blast_fraction", "flag"}
        assert (frame["width"], frame["height"]) == (640, 480)
        assert frame["flag"] in {"blasts_seen", "no_blasts_seen", "needs_review", "unusable_image", "no_cells_found"}
        assert frame["quality"]["usable"] is True
        assert frame["cell_count"] >= 1  # every demo frame holds a white cell
        assert 0 <= frame["blast_count"] <= frame["cell_count"]
        assert frame["blast_fraction"] == pytest.approx(frame["blast_count"] / frame["cell_count"], abs=1e-3)
        for cell in frame["cells"]:
            assert set(cell) >= {"x", "y", "w", "h", "label", "p_blast"}
            assert 0 <= cell["x"] < 640 and 0 <= cell["y"] < 480
            assert cell["label"] in ("blast", "normal") and 0.0 <= cell["p_blast"] <= 1.0


def test_analyze_reports_coordinates_in_original_pixels(tmp_path):
    """The same frame scaled ×3 gives cell centres ×3: coordinates are in the original image."""
    frame = cv2.imread(str(sorted(DEMO.glob("*.jpg"))[0]))
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(frame, (1920, 1440), interpolation=cv2.INTER_CUBIC))
    small = sorted(DEMO.glob("*.jpg"))[0]
    out = json.loads(run_cli("analyze", str(small), str(big), "--json").stdout)
    a = sorted((c["x"], c["y"]) for c in out[0]["cells"] if not c.get("edge"))
    b = sorted((c["x"] / 3, c["y"] / 3) for c in out[1]["cells"] if not c.get("edge"))
    assert a and b
    for x, y in a:
        assert min(np.hypot(x - bx, y - by) for bx, by in b) < 25


def test_bad_inputs_are_reported_one_line_each_and_the_batch_goes_on(tmp_path):
    good = tmp_path / "good.jpg"
    shutil.copy(sorted(DEMO.glob("*.jpg"))[0], good)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    html = tmp_path / "page.jpg"
    html.write_text("<html><body>not an image</body></html>")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:2000])
    missing = tmp_path / "missing.tif"
    result = run_cli("analyze", str(empty), str(good), str(html), str(truncated), str(missing), "--json")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 4, result.stderr
    for bad in (empty, html, truncated, missing):
        assert sum(str(bad) in line for line in lines) == 1
    assert "Traceback" not in result.stderr
    reported = json.loads(result.stdout)
    assert [r["path"] for r in reported] == [str(good)]


def test_blurred_frame_is_unusable_not_classified(tmp_path):
    frame = cv2.imread(str(sorted(DEMO.glob("*.jpg"))[0]))
    blurred = tmp_path / "blurred.png"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(frame, (0, 0), 6))
    out = json.loads(run_cli("analyze", str(blurred), "--json").stdout)[0]
    assert out["flag"] == "unusable_image"
    assert out["cells"] == [] and out["cell_count"] == 0


def test_classify_folder_recursively_json_contract(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    frame = cv2.imread(str(sorted(DEMO.glob("*.jpg"))[0]))
    cv2.imwrite(str(nested / "crop1.png"), frame[150:400, 200:450])
    cv2.imwrite(str(tmp_path / "crop2.tif"), frame[100:350, 250:500])
    (tmp_path / "notes.txt").write_text("ignored when searching folders")
    result = run_cli("classify", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(Path(r["path"]).name for r in rows) == ["crop1.png", "crop2.tif"]
    for row in rows:
        assert set(row) == {"path", "label", "p_blast", "scale"}  # scale: additive (issue 12), what the model saw
        assert row["scale"]["preprocessing"] in ("cellprep-v2", "field-v1")
        assert row["label"] in ("blast", "normal") and 0 <= row["p_blast"] <= 1


def test_classify_separates_real_blasts_from_normal_cells(shared_data):
    """On ALL-IDB2 crops the shipped model ranks blasts above normal cells (a check that can fail)."""
    with open(shared_data / "all-idb2" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::6]
    paths = [str(shared_data / "all-idb2" / r["file"]) for r in rows]
    result = run_cli("classify", *paths, "--json")
    assert result.returncode == 0, result.stderr
    p = {r["path"]: r["p_blast"] for r in json.loads(result.stdout)}
    blasts = [p[path] for path, r in zip(paths, rows) if r["label"] == "blast"]
    normals = [p[path] for path, r in zip(paths, rows) if r["label"] == "normal"]
    assert np.mean(blasts) > np.mean(normals) + 0.2
    correct = sum(b >= 0.5 for b in blasts) + sum(n < 0.5 for n in normals)
    assert correct / len(paths) >= 0.75


def test_missing_model_is_one_clear_line(tmp_path):
    result = run_cli("analyze", str(sorted(DEMO.glob("*.jpg"))[0]), model=tmp_path / "nope.tflite")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "nope.tflite" in result.stderr
