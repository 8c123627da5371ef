"""Every output of the frame pipeline on the shared frames, to prove a speed-up changed no result.

    python -m tests.core.frame_golden write cache/frame_golden.json   # before a change (git-ignored cache/)
    python -m tests.core.frame_golden check cache/frame_golden.json   # after it: exit 1 on any difference

Per frame (every ALL-IDB1 frame and the first BCCD_LIMIT BCCD frames), for the shipped model and the paper's
network (``cellprep``): the full quality report (floats unrounded), every candidate (box, centre, edge flag,
SHA-1 of its crop and neighbour mask), the scale, SHA-1 of every prepared model input, p_blast (float32
exact), label, review flag and the frame flag. Bit-identical inputs give identical p_blast; the check still
reports p_blast differences in uint8-quantisation steps separately from the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

BCCD_LIMIT = 60


def _sha(array: np.ndarray | None) -> str | None:
    if array is None:
        return None
    a = np.ascontiguousarray(array)
    return hashlib.sha1(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


def frame_paths(root: Path, bccd_limit: int = BCCD_LIMIT) -> list[Path]:
    """ALL-IDB1 frames (both sizes) and the first ``bccd_limit`` BCCD frames ([] without the data)."""
    paths = sorted((root / "all-idb1").glob("*.jpg"))
    paths += sorted((root / "bccd" / "JPEGImages").glob("*.jpg"))[:bccd_limit]
    return paths


def frame_outputs(analyzer, rgb: np.ndarray) -> dict:
    """Everything the pipeline produces for one frame, hashed where it is pixels."""
    from device.core.detect import find_cells
    from device.core.quality import assess_quality

    quality = {k: (list(v) if isinstance(v, tuple) else float(v) if not isinstance(v, (bool, str)) else v)
               for k, v in dataclasses.asdict(assess_quality(rgb, analyzer.quality)).items()}
    out: dict = {"quality": quality}
    if not quality["usable"]:
        out["result"] = analyzer.analyze_frame(rgb).to_dict() | {"timings_ms": None}
        return out
    candidates = find_cells(rgb, analyzer.detection)
    out["candidates"] = [{"x": c.x, "y": c.y, "w": c.w, "h": c.h, "edge": c.touches_edge, "crop": _sha(c.crop),
                          "neighbours": _sha(c.neighbours)} for c in candidates]
    batch, scale = analyzer.prepare_frame(rgb, candidates)
    out["scale"] = scale
    out["inputs"] = [_sha(x) for x in batch]
    out["p_blast_raw"] = [float(p) for p in analyzer.classifier.predict(batch)] if len(batch) else []
    result = analyzer.analyze_frame(rgb)
    out["cells"] = [dataclasses.asdict(c) for c in result.cells]
    out["flag"] = result.flag
    out["result"] = result.to_dict() | {"timings_ms": None}
    return out


def collect(root: Path, bccd_limit: int = BCCD_LIMIT, models: dict[str, Path] | None = None) -> dict:
    from device.core.analysis import Analyzer
    from device.core.imageio import load_image
    from device.inference.classifier import CellClassifier
    from device.resources import DEFAULT_MODEL, PAPER_MODEL

    models = models or {"shipped": DEFAULT_MODEL, "paper": PAPER_MODEL}
    analyzers = {name: Analyzer(CellClassifier.load(path)) for name, path in models.items() if path.is_file()}
    golden: dict = {}
    for path in frame_paths(root, bccd_limit):
        rgb = load_image(path)
        key = f"{path.parent.name}/{path.name}"
        golden[key] = {name: frame_outputs(analyzer, rgb) for name, analyzer in analyzers.items()}
    return golden


def differences(before: dict, after: dict) -> list[str]:
    """One line per differing output (p_blast differences named in uint8 steps)."""
    found = []
    for frame in sorted(set(before) | set(after)):
        b, a = before.get(frame), after.get(frame)
        if b is None or a is None:
            found.append(f"{frame}: only in {'after' if b is None else 'before'}")
            continue
        for model in sorted(set(b) | set(a)):
            bm, am = b.get(model, {}), a.get(model, {})
            for key in sorted(set(bm) | set(am)):
                if bm.get(key) == am.get(key):
                    continue
                if key in ("p_blast_raw", "cells") and _only_p_differs(bm.get(key), am.get(key)):
                    found.append(f"{frame} {model} {key}: p_blast differs by at most "
                                 f"{_max_p_step(bm.get(key), am.get(key)):.2f} uint8 steps")
                else:
                    found.append(f"{frame} {model} {key}: {str(bm.get(key))[:200]} != {str(am.get(key))[:200]}")
    return found


def _p_values(items) -> list[float]:
    return [x["p_blast"] if isinstance(x, dict) else x for x in items or []]


def _only_p_differs(b, a) -> bool:
    if b is None or a is None or len(b) != len(a):
        return False
    strip = [{k: v for k, v in x.items() if k != "p_blast"} if isinstance(x, dict) else None for x in b]
    return strip == [{k: v for k, v in x.items() if k != "p_blast"} if isinstance(x, dict) else None for x in a]


def _max_p_step(b, a) -> float:
    return max((abs(x - y) * 256 for x, y in zip(_p_values(b), _p_values(a))), default=0.0)


def main(argv: list[str]) -> int:
    from device.resources import find_shared_data

    if len(argv) != 2 or argv[0] not in ("write", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    root = find_shared_data()
    if root is None:
        print("no shared data (set ALLSCOPE_DATA or place it at ../shared/data)", file=sys.stderr)
        return 2
    target = Path(argv[1])
    now = collect(root)
    if argv[0] == "write":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(now))
        print(f"written {target}: {len(now)} frames")
        return 0
    found = differences(json.loads(target.read_text()), json.loads(json.dumps(now)))
    for line in found:
        print(line)
    print(f"{len(now)} frames compared with {target}: {len(found)} difference(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
