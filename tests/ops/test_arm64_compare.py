"""firmware_config/arm64/compare_analyze.py, the judge of `make arm64-check`, on `allscope analyze --json` outputs
made here from the demo frames and altered the ways an arm64 run could differ; and verify.sh's refusals.
The emulated arm64 run itself is long and is not part of the suite (`make arm64-check`)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

ARM64 = REPO_ROOT / "firmware_config" / "arm64"
DEMO = REPO_ROOT / "device" / "demo"


def _load_comparator():
    spec = importlib.util.spec_from_file_location("compare_analyze", ARM64 / "compare_analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cmp = _load_comparator()


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "ALLSCOPE_MODEL"}
    done = subprocess.run([sys.executable, "-m", "device.cli", "analyze", "--json", str(DEMO)], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    frames = json.loads(done.stdout)
    assert sum(len(f["cells"]) for f in frames) >= 3
    return frames


def _first_cell(frames: list[dict]) -> dict:
    return next(f for f in frames if f["cells"])["cells"][0]


def test_same_output_agrees_even_from_another_directory(reference, tmp_path):
    other = copy.deepcopy(reference)
    for frame in other:
        frame["path"] = f"/opt/elsewhere/{os.path.basename(frame['path'])}"
        frame["timings_ms"] = {"total": 9999.0}  # emulation is slow: timings are not compared
    report = cmp.compare(reference, other)
    assert report["ok"], report["problems"]
    assert report["frames"] == len(reference)
    assert report["cells"] == report["identical_p_blast"] == sum(len(f["cells"]) for f in reference)
    assert report["max_p_blast_steps"] == report["max_box_diff_px"] == 0


def test_p_blast_within_one_output_step_agrees_two_steps_do_not(reference):
    other = copy.deepcopy(reference)
    cell = _first_cell(other)
    p = cell["p_blast"]
    cell["p_blast"] = round(p + cmp.P_STEP if p < 0.5 else p - cmp.P_STEP, 4)
    report = cmp.compare(reference, other)
    assert report["ok"], report["problems"]
    assert report["max_p_blast_steps"] == pytest.approx(1, abs=0.05)
    assert report["identical_p_blast"] == report["cells"] - 1

    cell["p_blast"] = round(p + 2 * cmp.P_STEP if p < 0.5 else p - 2 * cmp.P_STEP, 4)
    report = cmp.compare(reference, other)
    assert not report["ok"] and "output steps" in report["problems"][0]
    assert cmp.compare(reference, other, p_steps=2)["ok"]


def test_a_changed_label_box_or_flag_is_a_difference(reference):
    for change in ("label", "box", "flag", "review"):
        other = copy.deepcopy(reference)
        frame = next(f for f in other if f["cells"])
        cell = frame["cells"][0]
        if change == "label":
            cell["label"] = "blast" if cell["label"] == "normal" else "normal"
        elif change == "box":
            cell["x"] += 0.5
        elif change == "flag":
            frame["flag"] = "needs_review" if frame["flag"] != "needs_review" else "blasts_seen"
        else:
            cell["needs_review"] = not cell["needs_review"]
        report = cmp.compare(reference, other)
        assert not report["ok"], change
        assert len(report["problems"]) == 1, report["problems"]
    other = copy.deepcopy(reference)
    _first_cell(other)["x"] += 0.5
    assert cmp.compare(reference, other, box_px=1)["ok"]


def test_a_missing_cell_or_frame_is_a_difference(reference):
    other = copy.deepcopy(reference)
    frame = next(f for f in other if f["cells"])
    frame["cells"].pop()
    frame["cell_count"] -= 1
    problems = cmp.compare(reference, other)["problems"]
    assert any("cells against" in p for p in problems) and any("cell_count" in p for p in problems)
    problems = cmp.compare(reference, reference[1:])["problems"]
    assert problems == [f"{os.path.basename(reference[0]['path'])}: only in the reference"]


def test_command_line_exit_status_and_one_line_errors(reference, tmp_path):
    ref, other, bad = tmp_path / "ref.json", tmp_path / "other.json", tmp_path / "bad.json"
    ref.write_text(json.dumps(reference))
    changed = copy.deepcopy(reference)
    _first_cell(changed)["label"] = "blast" if _first_cell(changed)["label"] == "normal" else "normal"
    other.write_text(json.dumps(changed))
    bad.write_text("{not json")
    script = str(ARM64 / "compare_analyze.py")
    same = subprocess.run([sys.executable, script, str(ref), str(ref)], capture_output=True, text=True, timeout=60, check=False)
    assert same.returncode == 0 and same.stdout.strip().endswith("same results"), same.stdout
    differ = subprocess.run([sys.executable, script, str(ref), str(other)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert differ.returncode == 1 and "DIFFERENT:" in differ.stdout and "label" in differ.stdout
    broken = subprocess.run([sys.executable, script, str(ref), str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr


def test_verify_script_parses_and_refuses_a_root_inside_the_repository():
    script = ARM64 / "verify.sh"
    assert subprocess.run(["bash", "-n", str(script)], timeout=30, check=False).returncode == 0
    help_text = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30, check=False).stdout
    assert "qemu" in help_text and "compare_analyze.py" in help_text
    done = subprocess.run(["bash", str(script), "--root", str(REPO_ROOT / "arm64root")], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 2
    expected = "outside the repository" if os.geteuid() == 0 else "run as root"
    assert expected in done.stderr and done.stderr.count("\n") == 1
    done = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr


def test_kernels_script_gives_the_model_outputs_analyze_reports(reference, tmp_path):
    """kernels.py on the demo frames: every cell under the three kernel sets, XNNPACK's output = analyze's p_blast."""
    spec = importlib.util.spec_from_file_location("arm64_kernels", ARM64 / "kernels.py")  # a script, not a package
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)

    frames = sorted(str(p) for p in DEMO.glob("*.jpg"))
    kernels.prepare(frames, tmp_path / "cells.npz")
    from device.resources import DEFAULT_MODEL

    report = kernels.run(tmp_path / "cells.npz", DEFAULT_MODEL)
    by_name = {os.path.basename(f["path"]): f for f in reference}
    assert set(report) == set(by_name)
    for name, raw in report.items():
        assert set(raw) == set(kernels.RESOLVERS)
        cells = by_name[name]["cells"]
        assert all(len(raw[kind]) == len(cells) for kind in kernels.RESOLVERS)
        assert all(0 <= v <= 255 for kind in kernels.RESOLVERS for v in raw[kind])
        assert [round(v / 256, 4) for v in raw["xnnpack"]] == [c["p_blast"] for c in cells]
    lines = kernels.compare(report, report)
    assert lines[-1] == f"all frames, reference: {sum(len(f['cells']) for f in reference)} of " \
                        f"{sum(len(f['cells']) for f in reference)} cells identical, largest difference 0 output steps"
    other = copy.deepcopy(report)
    name = next(n for n in other if other[n]["reference"])
    other[name]["reference"][0] = (other[name]["reference"][0] + 3) % 256
    assert any(line.startswith(f"{name} reference:") and "largest difference 3 output steps" in line
               for line in kernels.compare(report, other))
