"""ALL-IDB1 blast frames through the whole device pipeline at lower magnifications.

    python -m model_conversion.frame_scales --model models/allscope_blast_int8.tflite [--model OTHER] \\
        [--scale 1 --scale 0.5 ...]

Each of ALL-IDB1's 21 frames with blasts is shrunk by the scale (area
averaging: the 2592×1944 frame at 0.2 is 518×389 px with blasts ~30 px
across, like another laboratory's low-magnification photographs) and
analysed by ``device.core.analysis.Analyzer`` with the given model; its
annotated blast centres are matched to the cells found. Printed per model
and scale: frames refused by the quality gate, blast centres found, called
blast, and called blast or sent to review. These cells were in the shipped
model's training data at full size: the figures show how the calls hold up
as the magnification drops, not held-out accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

DEFAULT_SCALES = (1.0, 0.5, 0.3, 0.2)


def scale_rows(model: Path, data: Path, scales=DEFAULT_SCALES) -> list[dict]:
    from device.core.analysis import Analyzer
    from device.core.imageio import load_image
    from device.inference.classifier import CellClassifier
    from model_conversion.evaluate import _match, read_points

    analyzer = Analyzer(CellClassifier.load(model))
    frames = sorted((data / "all-idb1").glob("*_1.jpg"))
    rows = []
    for scale in scales:
        row = {"model": str(model), "scale": scale, "frames": len(frames), "refused": 0, "blasts": 0, "found": 0,
               "called_blast": 0, "called_or_review": 0}
        for frame in frames:
            rgb = load_image(frame)
            if scale != 1.0:
                rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            result = analyzer.analyze_frame(rgb, frame)
            row["refused"] += result.flag == "unusable_image"
            for x, y in read_points(frame.with_suffix(".xyc")):
                row["blasts"] += 1
                i = _match(result.cells, (x * scale, y * scale))
                if i is not None:
                    cell = result.cells[i]
                    row["found"] += 1
                    row["called_blast"] += cell.label == "blast"
                    row["called_or_review"] += cell.label == "blast" or cell.needs_review
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from model_conversion.data import find_shared_data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--scale", type=float, action="append", default=None)
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    args = parser.parse_args(argv)
    data = args.data or find_shared_data()
    if data is None or not (data / "all-idb1").is_dir():
        print("no ALL-IDB1 frames: give --data or set ALLSCOPE_DATA", file=sys.stderr)
        return 2
    print("| model | scale | frames refused | blast centres found | called blast | called blast or review |")
    print("|---|---|---|---|---|---|")
    for model in args.model:
        for r in scale_rows(model, data, tuple(args.scale or DEFAULT_SCALES)):
            print(f"| {model} | {r['scale']:g} | {r['refused']} of {r['frames']} | {r['found']} of {r['blasts']} | "
                  f"{r['called_blast']} ({r['called_blast'] / max(r['blasts'], 1):.2f}) | {r['called_or_review']} "
                  f"({r['called_or_review'] / max(r['blasts'], 1):.2f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
