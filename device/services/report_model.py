"""Which model produced a report's results, with the validation figures of that model, and the threshold it used.

A capture records the model that analysed it (``Capture.model_identity``, made by
``ModelInfo.identity()`` from the file itself: name, variant, version, sha256,
embedded provenance and headline validation figures) and the decision settings in
force (``Capture.decision``). A report names every model that produced its
captures' results, each with the validation figures of THAT model:

* a shipped model card's figures for a variant, only when the file is byte for
  byte that card's file of that variant (same sha256): the default model's card,
  and the card of the paper's network kept selectable in ``models/paper/``;
* else the headline figures embedded in the model file;
* else none ("no validation figures recorded for this model").

Captures analysed before the model was recorded (database schema v3 and older)
are named "model not recorded"; their legacy 12-digit ``model_id`` is quoted.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from device.resources import MODEL_CARD, MODEL_CARDS, SHIPPED_VARIANT
from device.store.records import Capture

NOT_RECORDED = "model not recorded"
VALIDATION_KEYS = ("sensitivity", "specificity", "precision", "roc_auc")


# --- the shipped model card ------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _card(card_path: str) -> tuple[dict, dict[str, str]]:
    """The shipped card, and {sha256 of each model file it describes: its variant}."""
    path = Path(card_path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        card = {}
    hashes = {}
    for variant, entry in (card.get("model_files") or {}).items():
        try:
            hashes[hashlib.sha256((path.parent / entry["file"]).read_bytes()).hexdigest()] = variant
        except (OSError, KeyError, TypeError):
            continue
    return card, hashes


def _card_validation(card: dict, variant: str) -> dict:
    stats = (card.get("cell_level") or {}).get(variant) or {}
    holdout = (card.get("cell_level") or {}).get("holdout_run") or {}
    return {
        "description": ("held-out cells of a subject-disjoint validation run of the same recipe "
                        f"(subjects {', '.join(holdout.get('validation_subjects', [])) or 'n/a'})"),
        "source": f"model card, {variant} file",
        "cells": stats.get("count"), "blasts": stats.get("blasts"), "normals": stats.get("normals"),
        **{key: stats.get(key) for key in VALIDATION_KEYS},
    }


def _training_text(cells_by_source: dict) -> str:
    return "; ".join(f"{name}: {c.get('blast', 0)} blast, {c.get('normal', 0)} normal"
                     for name, c in (cells_by_source or {}).items() if isinstance(c, dict))


def model_identity(card_path: Path = MODEL_CARD, variant: str = SHIPPED_VARIANT) -> dict:
    """The SHIPPED model as its card describes it (name, file hash, input size, training, validation).

    Only for what ships (the status page, the docs); a report names the model each capture recorded.
    """
    card, hashes = _card(str(card_path))
    provenance = card.get("provenance", {})
    file_name = card.get("model_files", {}).get(variant, {}).get("file", f"allscope_blast_{variant}.tflite")
    sha256 = next((digest for digest, v in hashes.items() if v == variant), "")
    return {
        "name": card.get("name", "unknown model"), "variant": variant, "file": file_name,
        "sha256": sha256, "short_id": sha256[:12],
        "input_size": provenance.get("input_size"),
        "created": provenance.get("created", ""),
        "intended_use": provenance.get("intended_use", ""),
        "training_data": _training_text(provenance.get("training", {}).get("cells_by_source", {})),
        "validation": _card_validation(card, variant),
    }


# --- the model a capture recorded ----------------------------------------------------------------------

def validation_of(recorded: dict, card_paths: tuple[Path, ...] = MODEL_CARDS) -> dict | None:
    """The validation figures of exactly this model file (see the module docstring), None when it has none."""
    for card_path in card_paths:
        card, hashes = _card(str(card_path))
        variant = hashes.get(recorded.get("sha256") or "")
        if variant is not None and (card.get("cell_level") or {}).get(variant):
            return _card_validation(card, variant)
    embedded = recorded.get("validation")
    if isinstance(embedded, dict) and any(isinstance(embedded.get(k), (int, float)) for k in VALIDATION_KEYS):
        return {"description": str(embedded.get("split") or "held-out cells"),
                "source": "embedded in the model file",
                "cells": embedded.get("count"), "blasts": embedded.get("blasts"), "normals": embedded.get("normals"),
                **{key: embedded.get(key) for key in VALIDATION_KEYS}}
    return None


def capture_model_key(capture: Capture) -> str:
    """What tells the models of a sample's captures apart: the file's sha256, or "" when not recorded."""
    recorded = capture.model_identity if isinstance(capture.model_identity, dict) else {}
    return str(recorded.get("sha256") or "")


def capture_model_label(capture: Capture) -> str:
    """A few words naming the model of one capture (for the per-frame lines of a report)."""
    recorded = capture.model_identity if isinstance(capture.model_identity, dict) else None
    if not recorded:
        return NOT_RECORDED if capture.status == "done" else ""
    return f"{recorded.get('name') or 'unnamed model'} ({recorded.get('short_id') or '?'})"


def models_of(captures: list[tuple[int, Capture]]) -> list[dict]:
    """The models that produced the results of ``(frame number, capture)`` pairs, in order of first use.

    Each: the recorded identity, the validation figures of that file, the frames it analysed and the decision
    thresholds they were analysed with. Analysed captures without a record share one "model not recorded" entry.
    """
    models: dict[str, dict] = {}
    for number, capture in captures:
        if capture.status != "done":
            continue
        key = capture_model_key(capture)
        entry = models.get(key)
        if entry is None:
            entry = models[key] = _model_entry(capture.model_identity if key else None)
        entry["captures"].append(number)
        threshold = (capture.decision or {}).get("threshold") if isinstance(capture.decision, dict) else None
        if threshold is not None and threshold not in entry["thresholds"]:
            entry["thresholds"].append(threshold)
        if not key and capture.model_id and capture.model_id not in entry["model_ids"]:
            entry["model_ids"].append(capture.model_id)
    return list(models.values())


def _model_entry(recorded: dict | None) -> dict:
    if not recorded:
        return {"recorded": False, "name": NOT_RECORDED, "captures": [], "thresholds": [], "model_ids": []}
    return {
        "recorded": True,
        "name": recorded.get("name") or "unnamed model", "variant": recorded.get("variant") or "",
        "version": recorded.get("version") or "", "created": recorded.get("created") or "",
        "file": recorded.get("file") or "", "sha256": recorded.get("sha256") or "",
        "short_id": recorded.get("short_id") or (recorded.get("sha256") or "")[:12],
        "input_size": recorded.get("input_size"), "intended_use": recorded.get("intended_use") or "",
        "training_data": _training_text(recorded.get("training_cells_by_source") or {}),
        "validation": validation_of(recorded),
        "captures": [], "thresholds": [],
    }


def _frames(numbers) -> str:
    numbers = list(numbers or [])
    return ("frame " if len(numbers) == 1 else "frames ") + ", ".join(str(n) for n in numbers)


def model_line(identity: dict) -> str:
    """One line naming a model, the frames it analysed and its validation figures, for the PDF and FHIR.

    Also reads the single ``model`` of reports signed before captures recorded their model.
    """
    if identity.get("recorded") is False:
        ids = ", ".join(identity.get("model_ids") or [])
        return (f"{_frames(identity.get('captures')).capitalize()}: {NOT_RECORDED} (analysed before the device "
                f"recorded which model ran{'; model id ' + ids if ids else ''}).")
    v = identity.get("validation") or {}

    def fig(key: str) -> str:
        return f"{v[key]:.3f}" if isinstance(v.get(key), (int, float)) else "n/a"

    details = [identity.get("variant") or "", f"version {identity['version']}" if identity.get("version") else "",
               f"sha256 {identity.get('short_id') or 'unknown'}", f"input {identity.get('input_size')} px"]
    line = f"Model {identity.get('name')} ({', '.join(d for d in details if d)})"
    if identity.get("captures"):
        line += f", {_frames(identity['captures'])}"
    if identity.get("thresholds"):
        line += ", decision threshold " + ", ".join(f"{t:g}" for t in identity["thresholds"])
    if identity.get("validation") is None and "validation" in identity:
        return line + ". No validation figures are recorded for this model."
    source = f" ({v['source']})" if v.get("source") else ""
    return (f"{line}. Held-out validation{source} on {v.get('cells') or 'n/a'} cells: "
            f"sensitivity {fig('sensitivity')}, specificity {fig('specificity')}, precision {fig('precision')}, "
            f"ROC AUC {fig('roc_auc')}.")
