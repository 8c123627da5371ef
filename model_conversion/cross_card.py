"""Model card of a cross-source refit: the leave-one-source-out table of the int8 network is the headline.

    python -m model_conversion crosscard --run runs/final_mnet --models models --table runs/cnn

Writes ``model_card.json`` / ``model_card.md`` beside the models. Besides the
table (``cnncross --summary``) it measures on this machine: int8/float32
agreement on every prepared cell of the shared data, int8 time per cell on
one thread, file sizes, and the whole device pipeline on the ALL-IDB1 and
BCCD frames (cells of those frames were in the refit's training: said so).
``cell_level.int8`` (what reports quote as "held-out validation") is the
C-NMC held-out-subjects row of the chosen candidate's cross-source run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from model_conversion.cnn_crosssource import CANDIDATES, prepared_images

RULE_DOC = "model_conversion/CROSS_SOURCE.md (section: the device network across sources)"


def _tflite_predict(path: Path, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    p = np.empty(len(images), np.float32)
    for i, image in enumerate(images):
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        raw = float(interpreter.get_tensor(out["index"])[0][1])
        p[i] = (raw - zero) * scale if scale else raw  # uint8 output of the int8 model: dequantise
    return p


def ms_per_cell(model: Path | bytes, images: np.ndarray, repeats: int = 3) -> float:
    """Median over ``repeats`` of the mean int8 invoke time per cell (one thread, batch 1); a file or its bytes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = (Interpreter(model_content=model, num_threads=1) if isinstance(model, bytes)
                   else Interpreter(model_path=str(model), num_threads=1))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for image in images:
            interpreter.set_tensor(inp["index"], image[None])
            interpreter.invoke()
        times.append((time.perf_counter() - started) * 1000 / len(images))
    return float(np.median(times))


def learnt_from(config: dict) -> str:
    """The data (and pretrained weights) a cross-source refit learnt from, with their terms."""
    from model_conversion.model_card import SOURCES

    lines = [line for line in SOURCES.splitlines() if not line.startswith(("- BCCD", "- Network"))]
    lines.append("- BCCD: Shenggan, BCCD Dataset (MIT): white cells of its frames as normal cells.")
    lines.append("- Jiangxi Tecom and CellaVision blog white cells: X. Zheng et al., Micron 107, 2018, as normal cells.")
    if config.get("arch") == "mobilenet":
        lines.append("- Network: MobileNet v1 (Howard et al. 2017); ImageNet features from Google's "
                     "mobilenet_v1_0.25_128_quant (Apache-2.0, coral test_data 104342d) as the initialisation.")
    else:
        lines.append("- Network: Anand et al., Scientific Reports 2025 (five convolutional blocks, thirteen 3×3 "
                     "convolutions, five max-pools), trained from scratch.")
    return "\n".join(lines)


def write_card(run: Path, models: Path, table: Path, data: Path, name: str = "allscope_blast",
               frame_limit: int | None = None, log=print) -> dict:
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier
    from device.inference.model_info import read_model_info
    from model_conversion.evaluate import frame_level_all_idb1, frame_level_bccd
    from model_conversion.metrics import agreement, binary_metrics
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import load_all_sources

    config = json.loads((run / "config.json").read_text())
    candidate = CANDIDATES[config["candidate"]]
    int8, float32 = models / f"{name}_int8.tflite", models / f"{name}_float32.tflite"
    summary = json.loads((table / "results.json").read_text())
    chosen = summary["results"][config["candidate"]]

    samples = load_all_sources(data)
    images = prepared_images(samples, candidate.preparation, candidate.size, default_cache_dir(), log)
    p_int8, p_float = _tflite_predict(int8, images), _tflite_predict(float32, images)
    agree = agreement(p_int8, p_float)
    speed = ms_per_cell(int8, images[:: max(1, len(images) // 200)][:200])
    log(f"int8/float32 agreement {agree}; int8 {speed:.2f} ms per cell (one thread)")

    cnmc = json.loads((table / config["candidate"] / "c-nmc.json").read_text())
    validation = binary_metrics(np.array(cnmc["label"]), np.array(cnmc["p_int8"]))
    held = next(r["by_collection"].get("held-out subjects", []) for r in chosen["rows"]
                if r["left_out"].startswith("c-nmc"))

    analyzer = Analyzer(CellClassifier.load(int8))
    frames = {"all_idb1": frame_level_all_idb1(analyzer, data / "all-idb1", frame_limit),
              "bccd": frame_level_bccd(analyzer, data / "bccd", frame_limit),
              "note": "cells of these frames were in the refit's training data (ALL-IDB1 centroids and "
                      "other-listed cells, BCCD WBC boxes): training-set figures, not held out"}
    provenance = dict(read_model_info(int8).provenance)
    card = {
        "name": name,
        "provenance": provenance,
        "cross_source": {"headline": "leave-one-source-out table of the int8 network (threshold 0.5)",
                         "rule": RULE_DOC, "chosen": summary["chosen"], "candidates": summary["results"],
                         "command": "python -m model_conversion cnncross --candidate NAME --out runs/cnn; "
                                    "python -m model_conversion cnncross --summary --out runs/cnn"},
        "cell_level": {"int8": validation,
                       "holdout_run": {"validation_subjects": held,
                                       "description": "C-NMC subjects held out in the cross-source run"},
                       "agreement_int8_vs_float32_all_cells": agree, "cells_compared": len(images)},
        "speed": {"int8_ms_per_cell_one_thread": round(speed, 3), "machine": "this development machine, "
                  "LiteRT, batch 1, 200 prepared cells"},
        "frame_level": frames,
        "model_files": {k: {"file": p.name, "bytes": p.stat().st_size} for k, p in
                        (("float32", float32), ("int8", int8))},
        "learnt_from": learnt_from(config),
    }
    (models / "model_card.json").write_text(json.dumps(card, indent=1, default=str))
    (models / "model_card.md").write_text(render(card, table))
    return card


def render(card: dict, table: Path) -> str:
    p, c = card["provenance"], card["cell_level"]
    t = p.get("training", {})
    a = c["agreement_int8_vs_float32_all_cells"]
    f_idb, f_bccd = card["frame_level"]["all_idb1"]["summary"], card["frame_level"]["bccd"]
    out = [f"# Model card: {card['name']}", "",
           "**Decision support only.** This model flags white blood cells that look like acute lymphoblastic "
           "leukaemia blasts for a qualified professional to review; it does not make a diagnosis.", "",
           "## Headline: across laboratories (leave one source out, int8 network)", "",
           (table / "results.md").read_text().replace("# Cross-source table", "### Cross-source table"), "",
           f"Rule (written before the runs): {RULE_DOC}. Chosen: **{card['cross_source']['chosen']}**. "
           f"Printed by: `{card['cross_source']['command']}`.", "",
           "## Recipe", "",
           f"- Network: {p['model']}, width {p['width']}, input {p['input_size']} px, int8 with uint8 input.",
           f"- Preparation `{p['preprocessing']}`: {p['input']} (field {p.get('field_radii')} red-cell radii; "
           "the device takes the scale from the frame and reports it in `analyze --json`).",
           f"- Training: {t.get('epochs')} epochs, Adam lr {t.get('learning_rate')}, augmentation "
           f"`{t.get('augment_recipe')}`, caps {t.get('cap')}, C-NMC loss weight {t.get('cnmc_weight')}; "
           f"pretrained start: {p.get('pretrained')}.",
           "- Cells by source: " + "; ".join(f"{k}: {v['blast']} blast, {v['normal']} normal"
                                           for k, v in t.get("cells_by_source", {}).items()), "",
           "## Device figures (this machine)", "",
           f"- int8/float32 label agreement over {c['cells_compared']} prepared cells: {a['label_agreement']:.4f}.",
           f"- int8 time per cell, one thread: {card['speed']['int8_ms_per_cell_one_thread']:.2f} ms.",
           "- Files: " + ", ".join(f"{v['file']} {v['bytes'] / 1e6:.2f} MB" for v in card["model_files"].values()),
           "",
           "## Whole frames (training frames: not held out)", "",
           f"- ALL-IDB1: {f_idb['blasts_found']}/{f_idb['blast_centroids']} blasts found, "
           f"{f_idb['blasts_called_blast']} called blast; frames without blasts flagged blasts_seen: "
           f"{f_idb['frames_without_blasts_flagged_blasts_seen']}/{f_idb['frames_without_blasts']}.",
           f"- BCCD: {f_bccd['frames_flagged_blasts_seen']}/{f_bccd['frames']} frames flagged blasts_seen; "
           f"{f_bccd['wbc_called_normal']}/{f_bccd['wbc_found']} found white cells called normal.", "",
           "## What it learnt from", "", card["learnt_from"], ""]
    return "\n".join(out)
