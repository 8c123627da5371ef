"""``allscope bench``: speed figures from one run on the same images.

Prints medians with the 10th-90th percentile spread; the machine may be
shared and noisy, so compare ratios measured in the same run rather than
absolute numbers between runs. The first inferences are discarded (warm-up:
XNNPACK packs weights on first use).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from device.resources import DEMO_FRAMES, model_in_force

BENCH_FRAME_SIZE = (2592, 1944)


def _stats(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1000.0
    return {"median_ms": round(float(np.median(ms)), 3), "p10_ms": round(float(np.percentile(ms, 10)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "runs": len(ms)}


def time_per_cell(model: Path, threads: int, cells: np.ndarray, repeats: int) -> dict:
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig

    classifier = CellClassifier.load(model, DelegateConfig(kind="cpu", num_threads=threads))
    for i in range(10):
        classifier.predict(cells[i % len(cells)][None])
    samples = []
    for i in range(repeats):
        cell = cells[i % len(cells)][None]
        started = time.perf_counter()
        classifier.predict(cell)
        samples.append(time.perf_counter() - started)
    return _stats(samples)


def bench_cells(model: Path, size: int, count: int = 32) -> np.ndarray:
    """Real prepared cells from the demo frames (falls back to noise when none are found)."""
    from device.core.cellprep import prepare_cell
    from device.core.detect import find_cells
    from device.core.imageio import load_image

    crops = []
    for frame in sorted(DEMO_FRAMES.glob("*.jpg")):
        crops += [c.crop for c in find_cells(load_image(frame))]
    if not crops:
        return np.random.default_rng(0).integers(0, 255, (count, size, size, 3), dtype=np.uint8)
    return np.stack([prepare_cell(crops[i % len(crops)], size).image for i in range(count)])


# A real 2592×1944 ALL-IDB1 frame with 23 blasts among its white cells, used
# when the shared data is at hand ($ALLSCOPE_DATA or ../shared/data).
SHARED_BENCH_FRAME = Path("all-idb1") / "Im052_1.jpg"


def _shared_frame() -> Path | None:
    from device.resources import find_shared_data

    root = find_shared_data()
    return root / SHARED_BENCH_FRAME if root and (root / SHARED_BENCH_FRAME).is_file() else None


def bench_frame(explicit: Path | None) -> tuple[np.ndarray, str]:
    """A 2592×1944 frame: the given one, else a real ALL-IDB1 frame, else a demo frame scaled up."""
    import cv2

    from device.core.imageio import load_image

    explicit = explicit or _shared_frame()
    if explicit is not None:
        return load_image(explicit), str(explicit)
    demo = sorted(DEMO_FRAMES.glob("*.jpg"))[0]
    frame = cv2.resize(load_image(demo), BENCH_FRAME_SIZE, interpolation=cv2.INTER_CUBIC)
    return frame, f"{demo.name} scaled to {BENCH_FRAME_SIZE[0]}x{BENCH_FRAME_SIZE[1]}"


def run_bench(args) -> dict:
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig

    int8_model = model_in_force(args.model)
    float_model = args.float_model or int8_model.with_name(int8_model.name.replace("_int8", "_float32"))
    classifier = CellClassifier.load(int8_model, DelegateConfig(kind="cpu", num_threads=1))
    cells = bench_cells(int8_model, classifier.input_size)
    report: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "cpus": os.cpu_count(), "model": str(int8_model),
                    "model_size_bytes": int8_model.stat().st_size,
                    "model_size_mb": round(int8_model.stat().st_size / 1e6, 3),
                    "input_size": classifier.input_size, "per_cell": {}}
    for threads in (1, 2):
        report["per_cell"][f"int8_{threads}t"] = time_per_cell(int8_model, threads, cells, args.repeats)
    if float_model.is_file():
        for threads in (1, 2):
            report["per_cell"][f"float32_{threads}t"] = time_per_cell(float_model, threads, cells, args.repeats)
        report["float32_model_size_mb"] = round(float_model.stat().st_size / 1e6, 3)
        report["int8_speedup_1t"] = round(report["per_cell"]["float32_1t"]["median_ms"]
                                          / report["per_cell"]["int8_1t"]["median_ms"], 2)
        report["int8_speedup_2t"] = round(report["per_cell"]["float32_2t"]["median_ms"]
                                          / report["per_cell"]["int8_2t"]["median_ms"], 2)
    frame, frame_name = bench_frame(args.frame)
    analyzer = Analyzer(classifier)
    analyzer.analyze_frame(frame)
    totals, parts, cells_found = [], [], 0
    for _ in range(7):
        result = analyzer.analyze_frame(frame)
        totals.append(result.timings_ms["total"] / 1000.0)
        parts.append(result.timings_ms)
        cells_found = len(result.cells)
    report["frame"] = {"source": frame_name, "size": f"{frame.shape[1]}x{frame.shape[0]}", "cells": cells_found,
                       "total": _stats(totals),
                       "parts_median_ms": {k: round(float(np.median([p.get(k, 0) for p in parts])), 1)
                                           for k in ("quality", "detect", "prepare", "classify")}}
    report["frame"].update(per_cell_ratios(report["frame"], report["per_cell"]["int8_1t"]["median_ms"]))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return report


def per_cell_ratios(frame: dict, int8_ms: float) -> dict:
    """The frame's cost per cell against the int8 classification of one cell (1 thread) of the same run.

    One frame has no slope, so two figures: the work that grows with the cells (preparing + classifying)
    per cell, and the whole frame per cell (fixed costs included). ``bench all`` fits the slope over frames.
    """
    cells = frame["cells"]
    if not cells or not int8_ms:
        return {}
    parts = frame["parts_median_ms"]
    per_cell = (parts["prepare"] + parts["classify"]) / cells
    whole = frame["total"]["median_ms"] / cells
    return {"per_cell_ms": round(per_cell, 3), "per_cell_over_int8": round(per_cell / int8_ms, 2),
            "total_per_cell_ms": round(whole, 3), "total_per_cell_over_int8": round(whole / int8_ms, 2)}


def print_report(report: dict) -> None:
    print(f"machine: {report['machine']}, {report['cpus']} CPUs")
    print(f"model: {report['model']} ({report['model_size_mb']} MB, input {report['input_size']} px)")
    print("per-cell latency (median, p10-p90):")
    for name, s in report["per_cell"].items():
        print(f"  {name:<12} {s['median_ms']:8.3f} ms  ({s['p10_ms']:.3f}-{s['p90_ms']:.3f}, {s['runs']} runs)")
    if "int8_speedup_1t" in report:
        print(f"int8 vs float32 speed-up: {report['int8_speedup_1t']}x (1 thread), {report['int8_speedup_2t']}x (2 threads)")
    f = report["frame"]
    print(f"whole frame {f['size']} ({f['source']}): {f['total']['median_ms']:.0f} ms median "
          f"({f['total']['p10_ms']:.0f}-{f['total']['p90_ms']:.0f}), {f['cells']} cells; parts {f['parts_median_ms']}")
    if "per_cell_ms" in f:
        print(f"frame cost per cell ÷ int8 per cell (1 thread): {f['per_cell_over_int8']}x "
              f"(preparing + classifying {f['per_cell_ms']:.2f} ms a cell); whole frame ÷ cells "
              f"{f['total_per_cell_ms']:.2f} ms = {f['total_per_cell_over_int8']}x")
