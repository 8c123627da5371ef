"""``allscope bench all``: every benchmark from one command, written as bench.json and bench.md.

    allscope bench all [--repeats N] [--out DIR] [--quick]

Each section is run N times (default 3) and every figure is given as the median
of the N runs with their spread (min–max over the runs; with so few runs a
percentile would only restate them):

* per cell: int8 and float32 latency at 1 and 2 threads (median of
  ``inferences`` timed calls per run, ``device.bench.cells``) and the float32/int8 ratio;
* frames: whole-frame analysis time against the number of cells in real frames,
  with the fitted cost per cell and fixed cost per frame (``device.bench.frames``);
* web: p50/p95 of the served UI under 20 logged-in clients, at a human pace
  (1 s think time) and saturated (``webui.bench.web``);
* sync: records/s through the mutual-TLS broker to the central, envelopes
  encrypted and plaintext (``sync.bench.run``);
* memory and writes: the device service's resident memory idle, with the model,
  after K frames, and its storage writes and stored bytes per analysed frame, for
  K uploads kept as they arrived and for K camera stills of the same fields taken
  through a replay camera (``device.cli.bench_memory``).
* storage: what a frame, its thumbnail and its crops weigh in each format, and the encode times
  (``device.bench.storage``, issue 15).

A benchmark, never a test: nothing here passes or fails on speed. The exit
status is 1 only when a run saw something wrong (records lost, pages failing, a
section that could not run: its error is recorded and the other sections go on).
The machine may be shared: compare ratios of one run, not absolute figures
between machines or runs.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

DEFAULT_REPEATS = 3
DEFAULT_OUT = Path("bench-results")
CONCURRENT_UPLOADS = 4  # frames posted at the same moment in the memory section (issue 15: peak <= 300 MB)


@dataclass(frozen=True)
class Sizes:
    """How much work one run of each section does (--quick and the smoke test use smaller ones)."""

    inferences: int = 200        # timed per-cell inferences per setting
    frames: int = 8              # frames of different cell counts
    timed_per_frame: int = 3     # analyses per frame and run (their median is the run's figure)
    web_clients: int = 20
    web_duration_s: float = 20.0
    web_patients: int = 200
    sync_records: int = 10_000
    sync_live_s: float = 5.0
    memory_frames: int = 5       # K frames analysed by the service


QUICK = Sizes(inferences=50, frames=4, timed_per_frame=1, web_duration_s=5.0, web_patients=50,
              sync_records=1000, sync_live_s=1.0, memory_frames=3)


def spread(values) -> dict:
    """Median and min–max of a figure over the repeated runs (None values are runs that had no figure)."""
    got = [float(v) for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None, "runs": 0}
    return {"median": round(float(np.median(got)), 3), "min": round(min(got), 3), "max": round(max(got), 3),
            "runs": len(got)}


# --- sections -------------------------------------------------------------------------------------------

def section_per_cell(repeats: int, sizes: Sizes, model: Path, float_model: Path | None) -> dict:
    from device.bench.cells import bench_cells, time_per_cell
    from device.inference.classifier import CellClassifier

    float_model = Path(float_model or model.with_name(model.name.replace("_int8", "_float32")))
    kinds = {"int8": model} | ({"float32": float_model} if float_model.is_file() and float_model != model else {})
    cells = bench_cells(model, CellClassifier.load(model).input_size)
    runs: dict[str, list] = {}
    for _ in range(repeats):
        for kind, path in kinds.items():
            for threads in (1, 2):
                runs.setdefault(f"{kind}_{threads}t_ms", []).append(
                    time_per_cell(path, threads, cells, sizes.inferences)["median_ms"])
        if "float32" in kinds:
            for threads in (1, 2):
                runs.setdefault(f"float32_over_int8_{threads}t", []).append(
                    runs[f"float32_{threads}t_ms"][-1] / runs[f"int8_{threads}t_ms"][-1])
    figures = {name: spread(values) for name, values in runs.items()}
    return {"figures": figures, "inferences_per_run": sizes.inferences, "model": model.name,
            "float32_model": float_model.name if "float32" in kinds else None,
            "int8_1t_ms_runs": runs["int8_1t_ms"]}


def section_frames(repeats: int, sizes: Sizes, model: Path) -> dict:
    from device.bench.frames import bench_frame_scaling

    raw = bench_frame_scaling(repeats, sizes.frames, sizes.timed_per_frame, model)
    table = [{"frame": r["frame"], "cells": r["cells"], **spread(r["ms"]), "parts_median_ms": r["parts_median_ms"]}
             for r in raw["rows"]]
    return {"figures": {"slope_ms_per_cell": spread(raw["slope_ms_per_cell"]), "fixed_ms": spread(raw["fixed_ms"])},
            "table": table, "slope_ms_per_cell_runs": raw["slope_ms_per_cell"],
            **{k: raw[k] for k in ("source", "size", "backend", "candidates")}}


def add_frame_ratio(report: dict) -> None:
    """The frame's cost per cell (fitted slope) ÷ the int8 classification of one cell (1 thread), run by run
    (issue 15's target: at most 2), into the frames section's figures when both sections ran."""
    sections = report["sections"]
    int8 = sections.get("per_cell", {}).get("int8_1t_ms_runs")
    slopes = sections.get("frames", {}).get("slope_ms_per_cell_runs")
    if int8 and slopes and "figures" in sections["frames"]:
        sections["frames"]["figures"]["slope_over_int8_1t"] = spread(
            [s / i for s, i in zip(slopes, int8) if i])


def section_web(repeats: int, sizes: Sizes, model: Path) -> dict:
    from webui.bench.web import run_web_bench

    runs: dict[str, list] = {}
    errors, skipped = 0, {}
    for _ in range(repeats):
        for mode, think in (("think1s", 1.0), ("saturated", 0.0)):
            report = run_web_bench(clients=sizes.web_clients, duration_s=sizes.web_duration_s, think_s=think,
                                   patients=sizes.web_patients, model=model, out=io.StringIO())
            overall = report["overall"]
            for key, value in (("p50_ms", overall.get("p50_ms")), ("p95_ms", overall.get("p95_ms")),
                               ("requests_per_s", report["requests_per_s"]),
                               ("server_peak_rss_mb", report["server"].get("peak_rss_mb"))):
                runs.setdefault(f"{mode}_{key}", []).append(value)
            errors += report["error_count"]
            skipped.update(report["skipped"])
    return {"figures": {name: spread(values) for name, values in runs.items()}, "clients": sizes.web_clients,
            "duration_s": sizes.web_duration_s, "patients": sizes.web_patients, "errors": errors,
            "skipped_pages": skipped}


def section_sync(repeats: int, sizes: Sizes, model: Path) -> dict:
    from sync.bench.run import run_sync_bench
    from sync.fleet.broker import find_mosquitto

    if not find_mosquitto():
        return {"skipped": "mosquitto is not installed (Debian: apt-get install mosquitto)"}
    runs: dict[str, list] = {}
    correct = True
    for _ in range(repeats):
        report = run_sync_bench(sizes.sync_records, live_seconds=sizes.sync_live_s, out=io.StringIO())
        correct = correct and report["correct"]
        for mode, figures in report["modes"].items():
            runs.setdefault(f"{mode}_records_per_s", []).append(figures["records_per_s"])
            runs.setdefault(f"{mode}_live_p50_ms", []).append(figures["live"]["latency_ms"].get("p50"))
        cost = report.get("encryption_cost") or {}
        runs.setdefault("plaintext_over_encrypted", []).append(cost.get("throughput_plaintext_over_encrypted"))
    return {"figures": {name: spread(values) for name, values in runs.items()}, "records": sizes.sync_records,
            "correct": correct}


def section_memory(repeats: int, sizes: Sizes, model: Path, work_root: Path) -> dict:
    from device.bench.frames import upload_files
    from device.cli.bench_memory import run_camera_storage_once, run_memory_once

    frames = upload_files(sizes.memory_frames)
    burst = upload_files(CONCURRENT_UPLOADS)
    runs = [run_memory_once(work_root, frames, model, burst) | run_camera_storage_once(work_root, frames, model)
            for _ in range(repeats)]
    return {"figures": {key: spread([r[key] for r in runs]) for key in runs[0] if key != "frames"},
            "frames_per_run": len(frames), "frame_names": [name for name, _ in frames],
            "concurrent_uploads": len(burst)}


def section_storage(sizes: Sizes, model: Path) -> dict:
    from device.bench.frames import upload_files
    from device.bench.storage import measure_storage
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier

    frames = upload_files(sizes.memory_frames)
    figures = measure_storage(frames, Analyzer(CellClassifier.load(model)))
    crops = figures.pop("crops_measured")
    return {"figures": {key: spread([value]) for key, value in figures.items()}, "frames_per_run": len(frames),
            "crops_measured": crops}


SECTIONS = ("per_cell", "frames", "web", "sync", "memory", "storage")


def run_all(repeats: int = DEFAULT_REPEATS, out_dir: Path = DEFAULT_OUT, sizes: Sizes = Sizes(), *,
            quick: bool = False, model: Path | None = None, float_model: Path | None = None,
            sections=SECTIONS, out: TextIO | None = None) -> dict:
    """Run the sections, write ``bench.json`` and ``bench.md`` into ``out_dir`` (atomically); the report."""
    from device.errors import AllscopeError
    from device.resources import model_in_force
    from device.store.atomic import write_atomic

    out = out or sys.stdout
    if repeats < 1:
        raise AllscopeError("--repeats must be at least 1")
    model = model_in_force(flag=model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_root = Path(tempfile.mkdtemp(prefix=".work-", dir=out_dir))  # on the results' storage (SD card on a Pi)
    report: dict = {"machine": machine(), "repeats": repeats, "quick": quick, "sizes": asdict(sizes),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "sections": {}}
    runners: dict[str, Callable[[], dict]] = {
        "per_cell": lambda: section_per_cell(repeats, sizes, model, float_model),
        "frames": lambda: section_frames(repeats, sizes, model),
        "web": lambda: section_web(repeats, sizes, model),
        "sync": lambda: section_sync(repeats, sizes, model),
        "memory": lambda: section_memory(repeats, sizes, model, work_root),
        "storage": lambda: section_storage(sizes, model),  # sizes are exact: one run is enough
    }
    try:
        for name in sections:
            started = time.monotonic()
            print(f"bench all: {name} ({repeats} run{'s' if repeats > 1 else ''}) ...", file=out, flush=True)
            try:
                report["sections"][name] = runners[name]()
            except Exception as error:  # noqa: BLE001 - one broken section must not lose the others' figures
                report["sections"][name] = {"error": f"{type(error).__name__}: {error}"[:500]}
                print(f"bench all: {name} failed: {report['sections'][name]['error']}", file=out, flush=True)
            report["sections"][name]["seconds"] = round(time.monotonic() - started, 1)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    add_frame_ratio(report)
    report["problems"] = problems(report)
    from device.bench.report import markdown

    write_atomic(out_dir / "bench.json", (json.dumps(report, indent=1) + "\n").encode())
    write_atomic(out_dir / "bench.md", markdown(report).encode())
    print(markdown(report), file=out)
    print(f"written {out_dir / 'bench.json'} and {out_dir / 'bench.md'}", file=out, flush=True)
    return report


def problems(report: dict) -> list[str]:
    """What went wrong in the runs (not speed): lost records, failing pages."""
    sections = report["sections"]
    found = [f"{name}: {data['error']}" for name, data in sections.items() if "error" in data]
    if sections.get("sync", {}).get("correct") is False:
        found.append("sync: records lost, duplicated or altered")
    if sections.get("web", {}).get("errors"):
        found.append(f"web: {sections['web']['errors']} requests failed")
    return found


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):  # x86 / a Raspberry Pi's board name
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def machine() -> dict:
    return {"machine": platform.machine(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "system": f"{platform.system()} {platform.release()}"}


def cmd_bench_all(args) -> int:
    """The CLI entry (``allscope bench all``)."""
    sizes = QUICK if args.quick else Sizes()
    report = run_all(DEFAULT_REPEATS if args.repeats is None else args.repeats, args.out or DEFAULT_OUT, sizes,
                     quick=args.quick, model=args.model, float_model=args.float_model)
    return 1 if report["problems"] else 0
