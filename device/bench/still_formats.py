"""Which format a camera still is kept in (issue 15): ``python -m device.bench.still_formats``.

A camera still arrives as raw pixels and is stored in ``storage.still_format``; the analysis then reads the stored
file back, so what is stored is what was analysed. The question the choice answers: how much smaller can the file
be before the analysis of the stored still sees something else than the camera's own pixels would have shown?

For each candidate format, on the shared frames (every 2592x1944 ALL-IDB1 frame for the sizes; every ALL-IDB1
frame and the first ``--bccd`` BCCD frames for the results): the file's size, its PSNR against the pixels, encode
and decode time; then the analysis of the decoded file against the analysis of the pixels themselves: frames
whose flag changed, cells found or lost, cells whose AI label or review flag changed, the largest distance from
the threshold of a cell whose label changed (are they only the undecided ones?) and the 99th percentile of the
change in p_blast. Prints a markdown table. A measurement, never a test.

These frames were JPEG files once, which favours every JPEG figure a little; no raw microscope frames are in the
shared data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CANDIDATES = ("jpeg95", "jpeg92", "jpeg90", "jpeg90-420", "webp-lossless")
SIZE_WIDTH = 2592  # frames of the camera's full size (2592x1944) give the size figures


def encode(rgb: np.ndarray, choice: str) -> bytes:
    """The candidate's bytes: the stored formats through ``encode_still``, the others with Pillow."""
    from device.services.frame_files import STILL_JPEG_QUALITY, encode_still, pillow_bytes

    if choice in STILL_JPEG_QUALITY or choice in ("webp-lossless", "png"):
        return encode_still(rgb, choice)[0]
    quality, _, sampling = choice.removeprefix("jpeg").partition("-")
    return pillow_bytes(rgb, "JPEG", quality=int(quality), subsampling=2 if sampling == "420" else 0)


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    error = np.mean((reference.astype(np.float64) - other) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0 ** 2 / error))


def compare(reference, other, threshold: float) -> dict:
    """What changed between two FrameResults of the same frame: cells matched by nearest centre."""
    out = {"flag": int(reference.flag != other.flag), "cells": len(reference.cells), "lost": 0, "found":
           max(0, len(other.cells) - len(reference.cells)), "label": 0, "review": 0, "margin": [], "dp": []}
    for cell in reference.cells:
        near = min(other.cells, key=lambda o: (o.x - cell.x) ** 2 + (o.y - cell.y) ** 2, default=None)
        if near is None or (near.x - cell.x) ** 2 + (near.y - cell.y) ** 2 > (0.25 * max(cell.w, cell.h)) ** 2:
            out["lost"] += 1
            continue
        out["dp"].append(abs(near.p_blast - cell.p_blast))
        out["review"] += near.needs_review != cell.needs_review
        if near.label != cell.label:
            out["label"] += 1
            out["margin"].append(abs(cell.p_blast - threshold))
    return out


def _frames(bccd: int) -> list[Path]:
    from device.resources import find_shared_data

    root = find_shared_data()
    if root is None or not (root / "all-idb1").is_dir():
        raise SystemExit("still_formats: the shared data (all-idb1, bccd) is not here: nothing to measure")
    return sorted((root / "all-idb1").glob("*.jpg")) + sorted((root / "bccd").rglob("*.jpg"))[:bccd]


def measure(analyzer, paths: list[Path], candidates=CANDIDATES) -> dict[str, dict]:
    from device.core.imageio import load_image, load_image_bytes

    threshold = analyzer.decision.threshold
    rows = {c: {"kb": [], "psnr": [], "encode_ms": [], "decode_ms": [], "frames": 0, "flag": 0, "cells": 0,
                "lost": 0, "found": 0, "label": 0, "review": 0, "margin": [], "dp": []} for c in candidates}
    for path in paths:
        rgb = load_image(path)
        reference = analyzer.analyze_frame(rgb, path.name)
        for choice in candidates:
            row = rows[choice]
            started = time.perf_counter()
            blob = encode(rgb, choice)
            encoded = time.perf_counter()
            kept = load_image_bytes(blob, f"{path.stem}.{choice}")
            if rgb.shape[1] == SIZE_WIDTH:
                row["kb"].append(len(blob) / 1024)
                row["psnr"].append(psnr(rgb, kept))
                row["encode_ms"].append((encoded - started) * 1000)
                row["decode_ms"].append((time.perf_counter() - encoded) * 1000)
            change = compare(reference, analyzer.analyze_frame(kept, path.name), threshold)
            row["frames"] += 1
            for key in ("flag", "cells", "lost", "found", "label", "review"):
                row[key] += change[key]
            row["margin"] += change["margin"]
            row["dp"] += change["dp"]
    return rows


def table(rows: dict[str, dict]) -> str:
    lines = ["| still format | median KB (max) | PSNR dB | encode / decode ms | frames: flag changed | "
             "cells: lost / new | cells: label changed (farthest from threshold) | review flag changed | "
             "p99 Δp |", "|---|---|---|---|---|---|---|---|---|"]
    for choice, r in rows.items():
        lossless = all(v == float("inf") for v in r["psnr"])
        lines.append(
            f"| {choice} | {statistics.median(r['kb']):.0f} ({max(r['kb']):.0f}) | "
            f"{'lossless' if lossless else format(statistics.median(r['psnr']), '.1f')} | "
            f"{statistics.median(r['encode_ms']):.0f} / {statistics.median(r['decode_ms']):.0f} | "
            f"{r['flag']} of {r['frames']} | {r['lost']} / {r['found']} of {r['cells']} | "
            f"{r['label']} ({max(r['margin'], default=0):.2f}) | {r['review']} | "
            f"{np.percentile(r['dp'], 99) if r['dp'] else 0:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier
    from device.resources import model_in_force

    parser = argparse.ArgumentParser(prog="python -m device.bench.still_formats", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the shipped one)")
    parser.add_argument("--bccd", type=int, default=60, help="BCCD frames added to the results (default 60)")
    parser.add_argument("--formats", default=",".join(CANDIDATES), help="comma-separated candidates")
    args = parser.parse_args(argv)
    paths = _frames(args.bccd)
    analyzer = Analyzer(CellClassifier.load(args.model or model_in_force()))
    rows = measure(analyzer, paths, tuple(args.formats.split(",")))
    print(f"{len(paths)} frames; sizes, PSNR and times on the {len(next(iter(rows.values()))['kb'])} of "
          f"{SIZE_WIDTH} px width")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
