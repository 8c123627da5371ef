"""`allscope bench` prints every figure the issue asks for (the numbers themselves are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from device.resources import PAPER_MODEL

ALLSCOPE = Path(sys.executable).parent / "allscope"


def test_bench_reports_latencies_ratio_frame_time_and_size():
    """On the paper's network, which has a float32 twin to compare with (the default model is uint8 only)."""
    result = subprocess.run([str(ALLSCOPE), "bench", "--repeats", "5", "--json", "--model", str(PAPER_MODEL)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("int8_1t", "int8_2t", "float32_1t", "float32_2t"):
        stats = report["per_cell"][key]
        assert stats["runs"] == 5 and 0 < stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert report["int8_speedup_1t"] > 0 and report["int8_speedup_2t"] > 0
    assert report["model_size_bytes"] == Path(report["model"]).stat().st_size
    frame = report["frame"]
    assert frame["size"] == "2592x1944" and frame["total"]["median_ms"] > 0
    assert set(frame["parts_median_ms"]) == {"quality", "detect", "prepare", "classify"}
