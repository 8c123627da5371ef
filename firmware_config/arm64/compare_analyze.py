#!/usr/bin/env python3
"""Compare two `allscope analyze --json` outputs of the same frames (e.g. x86_64 against arm64).

    python3 compare_analyze.py REFERENCE.json OTHER.json [--p-steps N] [--box-px D] [--json]

Frames are matched by file name (the directories may differ), cells in the order the analysis reports them
(top to bottom, left to right). What must agree exactly: the frames present, their size, the number of cells,
each cell's label, needs_review and edge flags, the counts of blasts and cells for review, and the frame's flag.
What may differ within a tolerance: a cell's box (x, y, w, h) by up to --box-px pixels (default 0: identical),
and p_blast by up to --p-steps steps of the int8 model's output (default 1 step of 1/256: the dequantised
output moves in those steps, and a crop differing by one grey level after resizing can move it by one).
The quality figures and the field scale are reported (largest relative difference) but not judged; the
timings are ignored. Exit status 0 when everything agrees within the tolerances, 1 when not, 2 on bad input.
Standard library only: it runs with any python3, inside or outside the project's venv.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import PurePath

P_STEP = 1 / 256  # the int8 model's output scale (uint8, zero point 0)
EXACT_FRAME_KEYS = ("width", "height", "cell_count", "blast_count", "review_count", "flag")
EXACT_CELL_KEYS = ("label", "needs_review", "edge")
BOX_KEYS = ("x", "y", "w", "h")


def _by_name(results: list[dict]) -> dict[str, dict]:
    frames: dict[str, dict] = {}
    for result in results:
        name = PurePath(str(result["path"])).name
        if name in frames:
            raise ValueError(f"frame {name} appears twice")
        frames[name] = result
    return frames


def _largest_relative(a: dict, b: dict) -> float:
    """The largest relative difference between the numeric values two flat dicts share."""
    worst = 0.0
    for key, value in a.items():
        other = b.get(key)
        if isinstance(value, (int, float)) and isinstance(other, (int, float)) and not isinstance(value, bool):
            scale = max(abs(value), abs(other), 1e-9)
            worst = max(worst, abs(value - other) / scale)
    return worst


def compare(reference: list[dict], other: list[dict], p_steps: float = 1.0, box_px: float = 0.0) -> dict:
    """The differences between two analyze outputs: {"ok": bool, "problems": [...], figures...}."""
    ref, oth = _by_name(reference), _by_name(other)
    problems: list[str] = []
    for name in sorted(set(ref) ^ set(oth)):
        problems.append(f"{name}: only in {'the reference' if name in ref else 'the other'}")
    cells = same_p = 0
    max_dp = max_box = max_quality = max_scale = 0.0
    for name in sorted(set(ref) & set(oth)):
        a, b = ref[name], oth[name]
        for key in EXACT_FRAME_KEYS:
            if a.get(key) != b.get(key):
                problems.append(f"{name}: {key} {a.get(key)!r} against {b.get(key)!r}")
        max_quality = max(max_quality, _largest_relative(a.get("quality", {}), b.get("quality", {})))
        max_scale = max(max_scale, _largest_relative(a.get("scale", {}), b.get("scale", {})))
        cells_a, cells_b = a.get("cells", []), b.get("cells", [])
        if len(cells_a) != len(cells_b):
            problems.append(f"{name}: {len(cells_a)} cells against {len(cells_b)}")
            continue
        for i, (ca, cb) in enumerate(zip(cells_a, cells_b)):
            cells += 1
            for key in EXACT_CELL_KEYS:
                if ca.get(key) != cb.get(key):
                    problems.append(f"{name} cell {i}: {key} {ca.get(key)!r} against {cb.get(key)!r}")
            box = max(abs(float(ca[k]) - float(cb[k])) for k in BOX_KEYS)
            max_box = max(max_box, box)
            if box > box_px:
                problems.append(f"{name} cell {i}: box moved by {box:g} px (tolerance {box_px:g})")
            dp = abs(float(ca["p_blast"]) - float(cb["p_blast"]))
            max_dp = max(max_dp, dp)
            same_p += dp == 0
            if dp > p_steps * P_STEP + 1e-4:  # + the 4-decimal rounding of the JSON
                problems.append(f"{name} cell {i}: p_blast {ca['p_blast']} against {cb['p_blast']} "
                                f"({dp / P_STEP:.1f} output steps; tolerance {p_steps:g})")
    return {"ok": not problems, "problems": problems, "frames": len(set(ref) & set(oth)), "cells": cells,
            "identical_p_blast": same_p, "max_p_blast_diff": round(max_dp, 4),
            "max_p_blast_steps": round(max_dp / P_STEP, 2), "max_box_diff_px": round(max_box, 2),
            "max_quality_rel_diff": round(max_quality, 6), "max_scale_rel_diff": round(max_scale, 6)}


def summary(report: dict) -> str:
    lines = [(f"{report['frames']} frames, {report['cells']} cells compared: "
             f"p_blast identical for {report['identical_p_blast']} of {report['cells']}, largest difference "
             f"{report['max_p_blast_diff']} ({report['max_p_blast_steps']} output steps of 1/256); boxes: largest "
             f"difference {report['max_box_diff_px']} px; quality figures: largest relative difference "
             f"{report['max_quality_rel_diff']}; field scale: {report['max_scale_rel_diff']}")]
    lines += [f"DIFFERENT: {p}" for p in report["problems"]]
    lines.append("same results" if report["ok"] else f"{len(report['problems'])} difference(s) beyond the tolerances")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference")
    parser.add_argument("other")
    parser.add_argument("--p-steps", type=float, default=1.0, help="p_blast tolerance in int8 output steps (1/256)")
    parser.add_argument("--box-px", type=float, default=0.0, help="box tolerance in pixels (default 0)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        with open(args.reference, encoding="utf-8") as f:
            reference = json.load(f)
        with open(args.other, encoding="utf-8") as f:
            other = json.load(f)
        report = compare(reference, other, p_steps=args.p_steps, box_px=args.box_px)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"compare_analyze: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else summary(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
