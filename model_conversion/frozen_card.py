"""Model card of the shipped frozen-backbone model: the cross-source table is the headline.

    python -m model_conversion frozencard --fit runs/frozen/NAME --table runs/fz3 --models models

Reads what ``frozenfit`` measured (``fit.json``: held-out C-NMC validation with the uint8 model,
uint8/float-head agreement, time per cell), the whole-frame figures of the refit (``frames.json``,
from ``frozencard --frames``, which runs the device pipeline on every ALL-IDB1 and BCCD frame)
and the leave-one-source-out tables of every frozen candidate (``crosssource`` results under
``--table``), and writes ``model_card.json`` / ``model_card.md`` beside the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from model_conversion.crosssource_run import MAX_NORMAL_CALLED_BLAST, NORMAL_ONLY_SOURCES
from model_conversion.frozen_fit import FROZEN_MODEL_VERSION

RULE_DOC = ("model_conversion/CROSS_SOURCE.md (sections: frozen pretrained backbones with a logistic head; "
            "fourth step: take the laboratory's look out of the features)")
SHIPPED_REFERENCE = {"bccd": 0.027, "tecom": 0.067, "cellavision-blog": 0.080}  # the paper's network, as shipped


def measure_frames(model: Path, data: Path, out: Path) -> dict:
    """The device pipeline on every ALL-IDB1 and BCCD frame (cells of both were in the refit's training)."""
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier
    from model_conversion.evaluate import frame_level_all_idb1, frame_level_bccd

    analyzer = Analyzer(CellClassifier.load(model))
    frames = {"all_idb1": frame_level_all_idb1(analyzer, data / "all-idb1"),
              "bccd": frame_level_bccd(analyzer, data / "bccd"),
              "note": "cells of these frames were in the refit's training data (ALL-IDB1 centroids and "
                      "other-listed cells, BCCD WBC boxes): training-set figures, not held out"}
    (out / "frames.json").write_text(json.dumps(frames, indent=1, default=str))
    return frames


def candidate_rows(table: Path) -> list[dict]:
    """One row per frozen configuration: backbone, variant, the normal-only sources and the rule's figures."""
    rows = []
    for results in sorted(table.glob("*/results.json")):
        for name, r in json.loads(results.read_text()).items():
            by = {row["left_out"]: row for row in r["rows"]}
            held = by.get("c-nmc (held-out subjects)") or {}
            rows.append({"backbone": results.parent.name, "configuration": name.replace(" | ", " / "),
                         "rule": r["rule"], "all_idb_auc": by["all-idb"]["blast_auc"],
                         "cnmc_auc": (held or by["c-nmc"])["blast_auc"], "cnmc_f1": held.get("weighted_f1"),
                         "look_shift": r.get("look_shift"), "res_shift": r.get("res_shift"),
                         **{s: by[s]["normal_called_blast"] for s in NORMAL_ONLY_SOURCES}})
    return rows


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def table_markdown(rows: list[dict], shipped: str) -> str:
    lines = ["| backbone | configuration | ALL-IDB left out AUC | C-NMC AUC (held-out subjects) / weighted F1 | "
             "PBC | BCCD | Tecom | CellaVision blog | violations | mean blast AUC |", "|---" * 10 + "|"]
    for r in rows:
        mark = "**" if (r["backbone"], r["configuration"]) == tuple(shipped.split(" :: ")) else ""
        lines.append(f"| {mark}{r['backbone']}{mark} | {mark}{r['configuration']}{mark} | {_num(r['all_idb_auc'])} | "
                     f"{_num(r['cnmc_auc'])} / {_num(r['cnmc_f1'])} | "
                     + " | ".join(_pct(r[s]) for s in NORMAL_ONLY_SOURCES)
                     + f" | {', '.join(r['rule']['violations']) or '–'} | {_num(r['rule']['mean_blast_auc'])} |")
    return "\n".join(lines)


def write_card(fit_dir: Path, table: Path, models: Path, shipped: str, chosen_by_rule: str, deviation: str) -> dict:
    from device.inference.model_info import read_model_info

    fit = json.loads((fit_dir / "fit.json").read_text())
    frames = json.loads((fit_dir / "frames.json").read_text())
    model = models / "allscope_blast_int8.tflite"
    provenance = dict(read_model_info(model).provenance)
    validation = fit["validation"]
    rows = candidate_rows(table)
    card = {
        "name": "allscope_blast",
        "provenance": provenance,
        "cross_source": {"headline": "leave-one-source-out table of the frozen-backbone heads (threshold 0.5, "
                                     f"limit {MAX_NORMAL_CALLED_BLAST:.0%} normal cells called blast)",
                         "rule": RULE_DOC, "chosen_by_rule": chosen_by_rule, "shipped": shipped,
                         "deviation": deviation, "candidates": rows,
                         "shipped_model_before (paper's network), never-seen labs": SHIPPED_REFERENCE,
                         "command": "python -m model_conversion crosssource --learner logreg-floor --network NAME "
                                    "--preparation field --exclude-variant c-nmc [--weighting sources] "
                                    "[--augment-copies 2] [--look-copies] [--res-copies 5 --res-copies 8] "
                                    "[--look-shift] --out runs/fz4/NAME"},
        "cell_level": {"int8": validation,
                       "holdout_run": {"validation_subjects": validation.get("validation_subjects", []),
                                       "description": "C-NMC subjects held out of the head's fit"},
                       "agreement_int8_vs_float_head_all_cells": fit["agreement"]},
        "speed": {"int8_ms_per_cell_one_thread": fit["ms_per_cell"],
                  "machine": "this development machine, LiteRT, batch 1, 200 prepared cells"},
        "frame_level": frames,
        "model_files": {"int8": {"file": model.name, "bytes": model.stat().st_size}},
        "alternatives": {"paper": "models/paper/ (Anand et al. 2025 network, cellprep-v2, v1.0.0): selectable "
                                  "with --model / inference.model; its own card is models/paper/model_card.md"},
    }
    (models / "model_card.json").write_text(json.dumps(card, indent=1, default=str))
    (models / "model_card.md").write_text(render(card, rows))
    return card


def _look_shift_part(rows: list[dict], shipped: str) -> list[str]:
    from model_conversion.look_shift import look_shift_markdown

    for r in rows:
        if (r["backbone"], r["configuration"]) == tuple(shipped.split(" :: ")) and r.get("look_shift"):
            return ["### Blasts in another laboratory's look", "",
                    "ALL-IDB is the only laboratory with smear blasts, so the row above that leaves it out measures "
                    "only what C-NMC teaches. Here 30 % of ALL-IDB's frames and crops are held out of the head, "
                    "with laboratory L, and scored as they are and rendered in L's look (`--look-shift`):", "",
                    look_shift_markdown(r["look_shift"]), ""] + _res_shift_part(r)
    return []


def _res_shift_part(row: dict) -> list[str]:
    from model_conversion.look_shift import res_shift_markdown

    if not row.get("res_shift"):
        return []
    return ["### Blasts photographed at a lower magnification", "",
            "The same held-out ALL-IDB cells as a camera with smaller red cells (R px radius) would show them:", "",
            res_shift_markdown(row["res_shift"]), ""]


def render(card: dict, rows: list[dict]) -> str:
    p, c, cs = card["provenance"], card["cell_level"], card["cross_source"]
    t = p.get("training", {})
    v, a = c["int8"], c["agreement_int8_vs_float_head_all_cells"]
    f_idb, f_bccd = card["frame_level"]["all_idb1"]["summary"], card["frame_level"]["bccd"]
    ref = ", ".join(f"{k} {_pct(x)}" for k, x in SHIPPED_REFERENCE.items())
    return "\n".join([
        f"# Model card: {card['name']} {FROZEN_MODEL_VERSION}", "",
        "**Decision support only.** This model flags white blood cells that look like acute lymphoblastic "
        "leukaemia blasts for a qualified professional to review; it does not make a diagnosis.", "",
        "## Headline: across laboratories (leave one source out, uint8 head)", "",
        "Each row trains the head without one source and tests on it; the normal-only columns are that "
        f"laboratory's normal white cells called blast (limit {MAX_NORMAL_CALLED_BLAST:.0%}). "
        f"Printed by `{cs['command']}`.", "",
        table_markdown(rows, cs["shipped"]), "",
        f"Rule (written before the runs): {cs['rule']}. The rule's pick: `{cs['chosen_by_rule']}`. "
        f"Shipped: `{cs['shipped']}`. {cs['deviation']}", "",
        f"The paper's network as shipped before (never saw these labs): {ref}.", "",
        *_look_shift_part(rows, cs["shipped"]),
        "## Recipe", "",
        f"- Network: {p['model']}; input {p['input_size']} px, uint8 (raw pixels).",
        f"- Preparation `{p['preprocessing']}`: {p['input']}; field {p.get('field_radii')} red-cell radii "
        "(the device takes the scale from the frame and reports it in `analyze --json`).",
        f"- Head: {t.get('head')}; weights `{t.get('weights')}`; augmentation: "
        f"{t.get('augment_recipe') or 'none'}; look copies (every smear cell again in the look of "
        f"{', '.join(t.get('look_copies') or []) or 'no other source'}: Reinhard L*a*b* transfer, "
        "model_conversion/looks.py); resolution copies (every smear cell again as seen with red cells of "
        f"{', '.join(f'{r:g}' for r in t.get('res_copies_rbc_radius_px') or []) or 'no other'} px).",
        "- Cells by source: " + "; ".join(f"{k}: {x['blast']} blast, {x['normal']} normal"
                                        for k, x in t.get("cells_by_source", {}).items()), "",
        "## Device figures (this machine)", "",
        f"- Held-out C-NMC subjects ({v['count']} cells, uint8 model): sensitivity {v['sensitivity']}, "
        f"specificity {v['specificity']}, precision {v['precision']}, ROC AUC {v['roc_auc']}, "
        f"weighted F1 {v['weighted_f1']}.",
        f"- uint8 file vs its float head on the same features, {a['cells']} prepared cells: label agreement "
        f"{a['label_agreement']:.4f} (mean |Δp| {a['mean_abs_prob_diff']}).",
        f"- Time per cell, one thread: {card['speed']['int8_ms_per_cell_one_thread']:.2f} ms; file "
        f"{card['model_files']['int8']['bytes'] / 1e6:.2f} MB.", "",
        "## Whole frames through the device pipeline (training frames: not held out)", "",
        f"- ALL-IDB1 ({f_idb['frames_with_blasts'] + f_idb['frames_without_blasts']} frames): "
        f"{f_idb['blasts_found']}/{f_idb['blast_centroids']} blasts found, {f_idb['blasts_called_blast']} called "
        f"blast; blast-free frames flagged blasts_seen: {f_idb['frames_without_blasts_flagged_blasts_seen']}/"
        f"{f_idb['frames_without_blasts']}.",
        f"- BCCD ({f_bccd['frames']} frames): {f_bccd['frames_flagged_blasts_seen']} flagged blasts_seen; "
        f"{f_bccd['wbc_called_normal']}/{f_bccd['wbc_found']} found white cells called normal.", "",
        "## What it learnt from", "",
        "- Pretrained: " + str(p.get("pretrained")),
        "- ALL-IDB1/ALL-IDB2 (F. Scotti et al., research use), PBC (Acevedo et al., CC BY 4.0), C-NMC 2019 "
        "(CC BY 3.0), BCCD (MIT), Jiangxi Tecom and CellaVision blog white cells (Zheng et al., Micron 2018).",
        ""])

