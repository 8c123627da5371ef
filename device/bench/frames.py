"""Frames for ``allscope bench all``: whole-frame time against the number of cells, and frames to upload.

Real frames when the shared data is at hand: the ALL-IDB1 frames of the
camera's full size (2592×1944), so that only the work (the cells) differs
between them, not the pixels every frame costs. Without it, demo frames pasted
at their own scale (cells keep their size, so the cell finder sees what it
expects) onto a 2592×1944 canvas of smear background, 1 to 16 of them.

The fit ``ms = fixed + slope × cells`` is made per repeated run, so the slope
and the fixed cost get a spread like every other figure.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from device.bench.cells import BENCH_FRAME_SIZE
from device.resources import DEMO_FRAMES

DEMO_TILES = (1, 2, 4, 6, 8, 10, 12, 14, 16)  # demo frames pasted on one canvas (a 4×4 grid)


def _shared_frames() -> list[Path]:
    """ALL-IDB1 frames of the full camera size, by name ([] without the shared data)."""
    from PIL import Image

    from device.resources import find_shared_data

    root = find_shared_data()
    folder = root / "all-idb1" if root else None
    if folder is None or not folder.is_dir():
        return []
    frames = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as image:
            if image.size == BENCH_FRAME_SIZE:
                frames.append(path)
    return frames


def demo_canvas(tiles: int, variant: int = 0) -> np.ndarray:
    """``tiles`` demo frames (640×480, unscaled) on a 2592×1944 canvas of their median background colour."""
    from device.core.imageio import load_image

    demos = [load_image(p) for p in sorted(DEMO_FRAMES.glob("*.jpg"))]
    width, height = BENCH_FRAME_SIZE
    background = np.median(np.concatenate([d.reshape(-1, 3) for d in demos]), axis=0).astype(np.uint8)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = background
    cell_w, cell_h = width // 4, height // 4
    for slot in range(tiles):
        frame = demos[(slot + variant) % len(demos)]
        row, col = divmod(slot, 4)
        y, x = row * cell_h + (cell_h - frame.shape[0]) // 2, col * cell_w + (cell_w - frame.shape[1]) // 2
        canvas[y:y + frame.shape[0], x:x + frame.shape[1]] = frame
    return canvas


def candidate_frames(limit: int) -> tuple[list[tuple[str, np.ndarray]], str]:
    """([(name, RGB frame)], where they come from), at most ``limit`` frames spread over the candidates."""
    from device.core.imageio import load_image

    shared = _shared_frames()
    if shared:
        chosen = [shared[i] for i in _spread_indices(len(shared), limit)]
        return [(p.name, load_image(p)) for p in chosen], "ALL-IDB1 frames, 2592x1944 (shared data)"
    tiles = [DEMO_TILES[i] for i in _spread_indices(len(DEMO_TILES), limit)]
    return ([(f"{t} demo frame{'s' if t > 1 else ''} on a canvas", demo_canvas(t)) for t in tiles],
            "bundled demo frames pasted on a 2592x1944 canvas (no shared data found)")


def _spread_indices(total: int, count: int) -> list[int]:
    if count >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


def upload_files(count: int) -> list[tuple[str, bytes]]:
    """``count`` distinct frames as a user would upload them: ALL-IDB1 JPEG files, else demo canvases as JPEG."""
    import cv2

    shared = _shared_frames()
    if len(shared) >= count:
        return [(p.name, p.read_bytes()) for p in (shared[i] for i in _spread_indices(len(shared), count))]
    out = []
    for i in range(count):
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(demo_canvas(4, variant=i), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 92])
        out.append((f"demo-canvas-{i}.jpg", jpeg.tobytes()))
    return out


def _choose(counted: list[tuple[str, np.ndarray, int]], count: int) -> list[tuple[str, np.ndarray, int]]:
    """Up to ``count`` frames whose cell counts spread from the fewest to the most (one per count)."""
    by_cells: dict[int, tuple[str, np.ndarray, int]] = {}
    for item in sorted(counted, key=lambda item: (item[2], item[0])):
        by_cells.setdefault(item[2], item)
    distinct = list(by_cells.values())
    return [distinct[i] for i in _spread_indices(len(distinct), count)]


def bench_frame_scaling(repeats: int, frames: int, timed_per_frame: int, model: Path) -> dict:
    """Whole-frame analysis time per frame (median per run) and the per-run fit of ms against cells."""
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig

    delegate = DelegateConfig()  # what the device runs by default (CPU, one thread)
    analyzer = Analyzer(CellClassifier.load(model, delegate))
    candidates, source = candidate_frames(max(frames * 3, frames))
    counted = [(name, rgb, len(analyzer.analyze_frame(rgb, name).cells)) for name, rgb in candidates]  # + warm-up
    chosen = _choose(counted, frames)
    per_frame = {name: [] for name, _, _ in chosen}
    parts = {name: [] for name, _, _ in chosen}
    fits = []
    for _ in range(repeats):
        run = []
        for name, rgb, cells in chosen:
            samples = []
            for _ in range(timed_per_frame):
                started = time.perf_counter()
                result = analyzer.analyze_frame(rgb, name)
                samples.append((time.perf_counter() - started) * 1000.0)
                parts[name].append(result.timings_ms)
            per_frame[name].append(float(np.median(samples)))
            run.append((cells, per_frame[name][-1]))
        if len({c for c, _ in run}) >= 2:
            slope, fixed = np.polyfit([c for c, _ in run], [ms for _, ms in run], 1)
            fits.append((float(slope), float(fixed)))
    rows = [{"frame": name, "cells": cells, "ms": per_frame[name],
             "parts_median_ms": {k: round(float(np.median([p.get(k, 0.0) for p in parts[name]])), 1)
                                 for k in ("quality", "detect", "prepare", "classify")}}
            for name, _, cells in chosen]
    return {"source": source, "size": f"{BENCH_FRAME_SIZE[0]}x{BENCH_FRAME_SIZE[1]}",
            "backend": f"{delegate.kind}, {delegate.num_threads} thread", "candidates": len(candidates),
            "rows": rows, "slope_ms_per_cell": [s for s, _ in fits], "fixed_ms": [f for _, f in fits]}
