"""Cell finding and the quality gate under other laboratories' conditions, per condition.

Every real frame of ALL-IDB1 and BCCD (../shared/data) is turned into one
frame per condition (``model_conversion.frame_variants``): the original, a
white clipped background, green / blue / yellow light, lower magnification
(scale 0.75, 0.5, 0.25: cells ~25-40 px across at 0.25), a thin smear at low
magnification (white background at scale 0.25, like another laboratory's
224×224 frames), defocus of sigma 2 px at 640 px (a cell finding stress
test: the gate refuses most of these BCCD frames, which are soft already), the frame resampled to 2592×1944, and the bad
frames the gate must refuse (defocus, too dark, blown out, blank, colour
saturated). For each it prints:

* refused: frames the gate (``device.core.quality``) refuses, by reason;
* recall: white cells found. BCCD: a WBC box is found when a detection centre
  lies inside it (one detection per box). ALL-IDB1: blast centroids, matched
  one-to-one as in ``model_conversion.eval_detection`` (within 0.6 x the
  frame's median cell width, or inside the cell box);
* extra/frame: detections matched to nothing, counted cells only (cells cut
  by the frame border are listed but not counted by the analysis), and in
  brackets with the border cells. BCCD: box-matched; ALL-IDB1: on the 21
  frames with an ``other/`` list only (blasts plus other objects; that list
  is not exhaustive, so this is an upper bound), the all-frame figure beside;
* r: median red-cell radius the detector estimated (px), detect / quality ms:
  median times (one OpenCV thread; decoding and the degradation excluded).

Detection runs on every frame whether or not the gate passes it, so a cell
finding figure exists for every benign condition.

    python -m model_conversion.detection_conditions [--data DIR] [--bccd-step N] [--conditions a,b] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from device.core.detect import CellCandidate, DetectionParams, find_cells
from device.core.imageio import load_image
from device.core.quality import QualityThresholds, assess_quality
from model_conversion import frame_variants as fv
from model_conversion.data import find_shared_data
from model_conversion.detection_annotations import MATCH_FACTOR, match_points, read_points, read_voc_boxes


@dataclass(frozen=True)
class Condition:
    name: str
    make: Callable[[np.ndarray], np.ndarray]
    expected: str | None = None  # None: benign (must pass); else the reason the gate must give
    detect: bool = True  # measure cell finding on it


def _to_size(width: int, height: int) -> Callable[[np.ndarray], np.ndarray]:
    def make(rgb: np.ndarray) -> np.ndarray:
        # Cubic when enlarging: a camera with more pixels is not a linear interpolation.
        interpolation = cv2.INTER_AREA if rgb.shape[1] > width else cv2.INTER_CUBIC
        return cv2.resize(rgb, (width, height), interpolation=interpolation)
    return make


def _blown_out(rgb: np.ndarray) -> np.ndarray:
    """The glass at twice the clipping level: the light washes out the red cells."""
    return fv.blown_out(rgb, 2.0 * 255.0 / max(float(fv.glass_colour(rgb).mean()), 1.0))


CONDITIONS: dict[str, Condition] = {c.name: c for c in [
    Condition("original", lambda x: x),
    Condition("white_background", fv.white_background),
    Condition("cast_green", lambda x: fv.colour_cast(x, "green")),
    Condition("cast_blue", lambda x: fv.colour_cast(x, "blue")),
    Condition("cast_yellow", lambda x: fv.colour_cast(x, "yellow")),
    Condition("scale_0.75", lambda x: fv.rescaled(x, 0.75)),
    Condition("scale_0.5", lambda x: fv.rescaled(x, 0.5)),
    Condition("scale_0.25", lambda x: fv.rescaled(x, 0.25)),
    Condition("thin_smear_low_mag", lambda x: fv.white_background(fv.rescaled(x, 0.25))),
    Condition("blur_2", lambda x: fv.defocused(x, 2.0)),
    Condition("size_2592x1944", _to_size(2592, 1944)),
    Condition("defocus_4", lambda x: fv.defocused(x, 4.0), "blurred", detect=False),
    Condition("too_dark", fv.darkened, "too dark", detect=False),
    Condition("blown_out", _blown_out, "overexposed", detect=False),
    Condition("blank_field", fv.blank_field, "empty field", detect=False),
    Condition("oversaturated", fv.oversaturated, "colour saturated", detect=False),
    Condition("channel_clipped", fv.channel_clipped, "colour saturated", detect=False),
]}
# blur_2 is a detection stress test: the gate may refuse it (BCCD frames are soft already).
GATE_UNDECIDED = {"blur_2"}


@dataclass
class Frame:
    source: str  # "all-idb1" | "bccd"
    path: Path
    blasts: list[tuple[float, float]]  # ALL-IDB1 blast centroids
    others: list[tuple[float, float]] | None  # ALL-IDB1 other/ list (None: no list for this frame)
    boxes: list[tuple[float, float, float, float]]  # BCCD WBC boxes


def load_frames(data_dir: Path | str, bccd_step: int = 1, idb_step: int = 1) -> list[Frame]:
    data = Path(data_dir)
    frames = []
    folder = data / "all-idb1"
    for path in sorted(folder.glob("Im*.jpg"))[::idb_step]:
        other_file = folder / "other" / path.with_suffix(".xyc").name
        frames.append(Frame("all-idb1", path, read_points(path.with_suffix(".xyc")),
                            read_points(other_file) if other_file.is_file() else None, []))
    for xml in sorted((data / "bccd" / "Annotations").glob("*.xml"))[::bccd_step]:
        image = data / "bccd" / "JPEGImages" / (xml.stem + ".jpg")
        if image.is_file():
            frames.append(Frame("bccd", image, [], None, read_voc_boxes(xml)))
    return frames


def _scaled_points(points, sx: float, sy: float):
    return [((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for x, y in points]


def _match_boxes(boxes, cells: list[CellCandidate]) -> tuple[int, set[int]]:
    """One detection per box, centre inside the box, nearest the box centre first."""
    pairs = []
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        for i, c in enumerate(cells):
            if x0 <= c.x <= x1 and y0 <= c.y <= y1:
                pairs.append((float(np.hypot(c.x - (x0 + x1) / 2, c.y - (y0 + y1) / 2)), j, i))
    pairs.sort()
    found, used = set(), set()
    for _, j, i in pairs:
        if j not in found and i not in used:
            found.add(j)
            used.add(i)
    return len(found), used


def score_frame(frame: Frame, cells: list[CellCandidate], sx: float, sy: float) -> dict:
    """Targets, found, unmatched detections (counted / at the edge) for one frame."""
    if frame.source == "bccd":
        boxes = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in frame.boxes]
        found, used = _match_boxes(boxes, cells)
        targets = len(boxes)
    else:
        widths = [max(c.w, c.h) for c in cells]
        radius = MATCH_FACTOR * float(np.median(widths)) if widths else 0.0
        blast_found, used = match_points(_scaled_points(frame.blasts, sx, sy), cells, radius)
        if frame.others:
            _, other_used = match_points(_scaled_points(frame.others, sx, sy), cells, radius, taken=used)
            used = used | other_used
        found, targets = int(sum(blast_found)), len(frame.blasts)
    unmatched = [c for i, c in enumerate(cells) if i not in used]
    return {"targets": targets, "found": found, "extra": sum(not c.touches_edge for c in unmatched),
            "extra_edge": sum(c.touches_edge for c in unmatched), "annotated": frame.source == "bccd" or
            frame.others is not None}


def evaluate(frames: list[Frame], conditions: list[Condition], params: DetectionParams = DetectionParams(),
             thresholds: QualityThresholds = QualityThresholds(), progress=None) -> dict:
    """Per (source, condition): gate outcome, recall, extra finds, radius and timings."""
    acc: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(list))
    for k, frame in enumerate(frames):
        original = load_image(frame.path)
        h, w = original.shape[:2]
        for cond in conditions:
            rgb = cond.make(original)
            a = acc[(frame.source, cond.name)]
            start = time.perf_counter()
            report = assess_quality(rgb, thresholds)
            a["quality_ms"].append((time.perf_counter() - start) * 1000)
            a["problems"].append(report.problems)
            a["frame"].append(frame.path.name)
            if not cond.detect:
                continue
            start = time.perf_counter()
            cells = find_cells(rgb, params)
            a["detect_ms"].append((time.perf_counter() - start) * 1000)
            a["size"].append(f"{rgb.shape[1]}x{rgb.shape[0]}")
            a["score"].append(score_frame(frame, cells, rgb.shape[1] / w, rgb.shape[0] / h))
        if progress:
            progress(k + 1, len(frames))
    return {f"{source}|{name}": _summary(conditions_by_name(conditions)[name], a) for (source, name), a in acc.items()}


def conditions_by_name(conditions: list[Condition]) -> dict[str, Condition]:
    return {c.name: c for c in conditions}


def _summary(cond: Condition, a: dict) -> dict:
    reasons = Counter(p for problems in a["problems"] for p in problems)
    refused = [f for f, p in zip(a["frame"], a["problems"]) if p]
    if cond.expected is None:
        wrong = refused
    else:
        wrong = [f for f, p in zip(a["frame"], a["problems"]) if cond.expected not in p]
    out = {"condition": cond.name, "expected": cond.expected, "frames": len(a["frame"]),
           "refused": len(refused), "reasons": dict(reasons), "gate_wrong": wrong,
           "quality_ms_median": float(np.median(a["quality_ms"]))}
    if a.get("score"):
        s = a["score"]
        annotated = [x for x in s if x["annotated"]]
        targets = sum(x["targets"] for x in s)
        out.update({
            "targets": targets, "found": sum(x["found"] for x in s),
            "recall": sum(x["found"] for x in s) / max(1, targets),
            "extra_per_frame": sum(x["extra"] for x in annotated) / max(1, len(annotated)),
            "extra_with_edge_per_frame": sum(x["extra"] + x["extra_edge"] for x in annotated) / max(1, len(annotated)),
            "extra_per_frame_all": sum(x["extra"] for x in s) / len(s),
            "annotated_frames": len(annotated),
            "missed_in": [f for f, x in zip(a["frame"], s) if x["found"] < x["targets"]],
            "detect_ms_median": float(np.median(a["detect_ms"])),
            "sizes": dict(Counter(a["size"])),
        })
    return out


def print_table(results: dict, out=sys.stdout) -> None:
    print(f"{'source':9} {'condition':20} {'n':>4} {'recall':>14} {'extra/fr':>15} {'all fr':>6} "
          f"{'det ms':>6} {'q ms':>5}  gate", file=out)
    for key, r in results.items():
        source = key.split("|")[0]
        if "recall" in r:
            rec = f"{r['recall']:.3f} {r['found']:>3}/{r['targets']:<3}"
            extra = f"{r['extra_per_frame']:.2f} ({r['extra_with_edge_per_frame']:.2f})"
            allfr = f"{r['extra_per_frame_all']:.2f}" if source == "all-idb1" else ""
            det = f"{r['detect_ms_median']:.0f}"
        else:
            rec = extra = allfr = det = ""
        gate = f"refused {r['refused']}/{r['frames']}"
        if r["reasons"]:
            gate += " (" + ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items())) + ")"
        if r["condition"] not in GATE_UNDECIDED and r["gate_wrong"]:
            want = "pass" if r["expected"] is None else f"'{r['expected']}'"
            gate += f"  WRONG (want {want}): {' '.join(r['gate_wrong'][:6])}{' ...' if len(r['gate_wrong']) > 6 else ''}"
        print(f"{source:9} {r['condition']:20} {r['frames']:>4} {rec:>14} {extra:>15} {allfr:>6} {det:>6} "
              f"{r['quality_ms_median']:>5.1f}  {gate}", file=out)
    print("recall: BCCD WBC boxes / ALL-IDB1 blast centroids; extra/fr: unmatched counted cells per annotated frame "
          "(with border cells); all fr: ALL-IDB1 over every frame (frames without an other/ list count their "
          "normal cells as extra)", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with all-idb1/ and bccd/ (default: shared data)")
    parser.add_argument("--bccd-step", type=int, default=1, help="every Nth BCCD frame (default every one)")
    parser.add_argument("--idb-step", type=int, default=1, help="every Nth ALL-IDB1 frame")
    parser.add_argument("--conditions", default="", help="comma-separated subset of: " + ", ".join(CONDITIONS))
    parser.add_argument("--json", action="store_true", help="print one JSON dict instead of the table")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    data = args.data or find_shared_data() or Path("../shared/data")
    names = [n for n in args.conditions.split(",") if n] or list(CONDITIONS)
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s): {', '.join(unknown)}")
    frames = load_frames(data, args.bccd_step, args.idb_step)
    results = evaluate(frames, [CONDITIONS[n] for n in names],
                       progress=lambda k, n: print(f"\r{k}/{n} frames", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
