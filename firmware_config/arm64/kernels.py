"""The int8 model on the same prepared cells under LiteRT's three kernel sets, to tell apart where an arm64 run
differs from an x86_64 one: in the image steps before the model (OpenCV, numpy) or in the model's kernels.

    python -m firmware_config.arm64.kernels prepare FRAME... --out cells.npz   (on one machine: the model inputs)
    python -m firmware_config.arm64.kernels run cells.npz > raw.json          (on each machine, same cells.npz)
    python -m firmware_config.arm64.kernels compare host.json arm64.json

`run` gives the raw uint8 blast output (p_blast × 256) of every cell with XNNPACK (the default and what
allscope uses), the built-in optimised kernels without XNNPACK, and the reference kernels (plain C++).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESOLVERS = ("xnnpack", "builtin", "reference")


def prepare(frames: list[str], out: Path) -> None:
    from device.core.analysis import Analyzer
    from device.core.detect import find_cells
    from device.core.imageio import load_image
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig
    from device.resources import model_in_force

    analyzer = Analyzer(CellClassifier.load(model_in_force(flag=None), DelegateConfig(kind="cpu", num_threads=1)))
    batches = {}
    for frame in frames:
        rgb = load_image(Path(frame))
        batches[Path(frame).name], _ = analyzer.prepare_frame(rgb, find_cells(rgb, analyzer.detection))
    np.savez(out, **batches)


def run(cells: Path, model: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kinds = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
             "reference": OpResolverType.BUILTIN_REF}
    from device.inference.classifier import POSITIVE_LABEL, CellClassifier
    from device.inference.delegates import DelegateConfig

    blast = CellClassifier.load(model, DelegateConfig(kind="cpu", num_threads=1)).labels.index(POSITIVE_LABEL)
    batches = np.load(cells)
    report: dict = {name: {} for name in batches.files}
    for kind in RESOLVERS:
        interpreter = Interpreter(str(model), num_threads=1, experimental_op_resolver_type=kinds[kind])
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if inp["dtype"] != np.uint8 or tuple(inp["quantization"]) != (0.0078125, 128):
            raise SystemExit(f"kernels: {model.name}: expected a uint8 input with raw pixels (scale 1/128, zero 128)")
        for name in batches.files:
            raw = []
            for cell in batches[name]:
                interpreter.set_tensor(inp["index"], cell[None].astype(np.uint8))
                interpreter.invoke()
                raw.append(int(interpreter.get_tensor(out["index"])[0][blast]))
            report[name][kind] = raw
    return report


def compare(a: dict, b: dict) -> list[str]:
    """One line per frame and kernel set: cells, identical, largest difference in output steps."""
    lines = []
    for name in sorted(set(a) & set(b)):
        for kind in RESOLVERS:
            x, y = np.array(a[name][kind]), np.array(b[name][kind])
            worst = int(np.abs(x - y).max()) if len(x) else 0
            lines.append(f"{name} {kind}: {int((x == y).sum())} of {len(x)} cells identical, largest difference "
                         f"{worst} output steps")
    for kind in RESOLVERS:
        x = np.concatenate([a[n][kind] for n in sorted(a)] or [[]])
        y = np.concatenate([b[n][kind] for n in sorted(b)] or [[]])
        if len(x) == len(y):
            lines.append(f"all frames, {kind}: {int((x == y).sum())} of {len(x)} cells identical, largest "
                         f"difference {int(np.abs(x - y).max()) if len(x) else 0} output steps")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("frames", nargs="+")
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("cells", type=Path)
    r.add_argument("--model", type=Path, default=None)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.what == "prepare":
        prepare(args.frames, args.out)
    elif args.what == "run":
        from device.resources import model_in_force

        print(json.dumps(run(args.cells, args.model or model_in_force(flag=None))))
    else:
        print("\n".join(compare(json.loads(args.a.read_text()), json.loads(args.b.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
