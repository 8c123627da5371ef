"""Render model_card.json as a readable Markdown page."""

from __future__ import annotations

from model_conversion.augment import DEFAULT_RECIPE

SOURCES = """\
- ALL-IDB: R. Donida Labati, V. Piuri, F. Scotti, "ALL-IDB: the acute lymphoblastic leukemia image database for image processing", IEEE ICIP 2011 (research use with citation).
- C-NMC 2019: A. Gupta, R. Gupta et al., "C-NMC: Classification of Normal vs Malignant Cells in B-ALL White Blood Cancer Microscopic Images", ISBI 2019 challenge, The Cancer Imaging Archive (CC BY 3.0).
- PBC: A. Acevedo et al., "A dataset of microscopic peripheral blood cell images for development of automatic recognition systems", Data in Brief 30, 2020 (CC BY 4.0).
- BCCD: Shenggan, BCCD Dataset (MIT) — used only for evaluation of whole frames.
- Network: Anand et al., Scientific Reports 2025 (five convolutional blocks, thirteen 3×3 convolutions, five max-pools)."""


AUGMENT_RECIPES = {
    "colour-jitter": "flips, 90° rotations, zoom, blur/resolution loss, RGB colour jitter, noise",
    "od-stain": "flips, 90° rotations, zoom, blur/resolution loss, per-channel stain jitter in optical density, "
                "colour jitter, 15 % of cells in greyscale, noise",
}


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _metrics_table(rows: dict[str, dict]) -> list[str]:
    keys = ["count", "blasts", "normals", "accuracy", "precision", "sensitivity", "specificity", "f1",
            "weighted_f1", "roc_auc"]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |")
    return lines


def _recipes_compared(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    subjects = sorted({s for r in rows for s in r["per_subject_accuracy"]})
    out = ["", "Recipes compared on these same held-out cells (int8); the last row is this model's recipe. "
           "Because a recipe was kept for its held-out figures, they are somewhat optimistic for cells from new "
           "patients and laboratories.", "",
           "| recipe | weighted F1 | sensitivity | specificity | ROC AUC | " + " | ".join(
               f"subject {s}" for s in subjects) + " |", "|---" * (5 + len(subjects)) + "|"]
    for r in rows:
        out.append(f"| {r['recipe']} | {_fmt(r['weighted_f1'])} | {_fmt(r['sensitivity'])} | "
                   f"{_fmt(r['specificity'])} | {_fmt(r['roc_auc'])} | "
                   + " | ".join(_fmt(r["per_subject_accuracy"].get(s)) for s in subjects) + " |")
    return out


def render_markdown(card: dict) -> str:
    p = card["provenance"]
    cells = card["cell_level"]
    t = p["training"]
    out = [f"# Model card: {card['name']}", "",
           "**Decision support only.** This model flags white blood cells that look like acute lymphoblastic "
           "leukaemia blasts so that a qualified professional looks at them. It does not diagnose, it has not "
           "been cleared as a medical device, and its figures below come from public research collections, "
           "not from a clinical study.", "",
           "## What it is", "",
           f"- Network: {p['model']}; width multiplier {p['width']}, input {p['input_size']}×{p['input_size']} RGB.",
           "- Files: " + ", ".join(f"`{v['file']}` ({v['bytes'] / 1e6:.2f} MB)" for v in card["model_files"].values())
           + ". The int8 model is full-integer (uint8 in/out); labels, input normalisation and provenance are "
             "embedded as TFLite metadata (`labels.txt`, `allscope.json`).",
           f"- Input: {p['input']}; preprocessing `{p['preprocessing']}` (device/core/cellprep.py), the same code in "
           "training and on the device.",
           f"- Decision: blast when p_blast ≥ {p['decision']['threshold']}; cells with "
           f"{p['decision']['review_low']} ≤ p_blast < {p['decision']['review_high']} are flagged for review. "
           "Fixed before training; not tuned on the validation cells.", "",
           "## Training", "",
           f"- {t['epochs']} epochs, batch {t['batch_size']}, {t['optimizer']} (lr {t['learning_rate']}, cosine decay), "
           f"cross-entropy weighted so that within each source blasts and normal cells weigh the same "
           f"(single-class PBC at half weight), augmentation {'on' if t['augment'] else 'off'} "
           f"({AUGMENT_RECIPES.get(t.get('augment_recipe', DEFAULT_RECIPE), t.get('augment_recipe'))}). "
           "Seed " + str(t["seed"]) + ".",
           "- Training cells by source: " + "; ".join(f"{s}: {c['blast']} blast, {c['normal']} normal"
                                                    for s, c in t["cells_by_source"].items()) + ".",
           ]
    refit = "holdout_run" in cells
    if refit:
        h = cells["holdout_run"]
        out += [f"- **Final refit on every cell.** The recipe was first validated by a run that held out C-NMC "
                f"subjects {', '.join(h['validation_subjects'])} and 20 % of the ALL-IDB2 and PBC files (trained on "
                f"{', '.join(h['train_subjects'])}); its held-out figures are below. This shipped model is the same "
                "recipe, unchanged, trained on every cell (both healthy donors, all eight patients)"
                + ("; the recipe itself was chosen among those compared below by their held-out figures. "
                   if card.get("recipes_compared") else ": nothing was chosen by looking at the held-out figures. ")
                + "Its own held-out performance cannot be measured on this data; expect it to be at least as good, "
                "since it saw more patients and donors.", "",
                "## Held-out cells (subject-disjoint validation run of the same recipe)", ""]
    else:
        out += [f"- Subject-disjoint split: C-NMC subjects in training {', '.join(t['train_subjects'])}; held out "
                f"{', '.join(t['validation_subjects'])} (no patient or donor on both sides). ALL-IDB2 and PBC have "
                "no subject ids: 20 % of their files held out at random by class. The model shipped is the one "
                "after the last epoch; the held-out cells were never used to choose an epoch or a threshold"
                + (" (they were used to choose the recipe: see the comparison below)." if card.get("recipes_compared")
                   else " or a recipe."), "", "## Held-out cells (subject-disjoint validation)", ""]
    out += _metrics_table({k: cells[k] for k in ("keras", "float32", "int8")})
    out += _recipes_compared(card.get("recipes_compared", []))
    out += ["", "int8 by source:", ""]
    out += _metrics_table(cells["int8_by_source"])
    out += ["", "int8 accuracy per held-out C-NMC subject:", "", "| subject | true label | cells | accuracy |",
            "|---|---|---|---|"]
    for subject, s in cells["int8_by_subject"].items():
        out.append(f"| {subject} | {s['true_label']} | {s['cells']} | {_fmt(s['accuracy'])} |")
    if "int8_triage" in cells:
        tr = cells["int8_triage"]
        out += ["", f"Triage with the review band (int8): {_fmt(tr['blasts_brought_to_human'])} of held-out blasts are "
                f"called blast or flagged for review (p_blast ≥ {tr['review_low']}); {_fmt(tr['normals_left_alone'])} of "
                f"normal cells are neither; {_fmt(tr['share_in_review_band'])} of all cells fall in the review band."]
    a = cells["agreement_int8_vs_float32"]
    k = cells["agreement_int8_vs_keras"]
    out += ["", f"int8 vs float32 TFLite: label agreement {_fmt(a['label_agreement'])}, mean |Δp| "
            f"{_fmt(a['mean_abs_prob_diff'])}; int8 vs Keras: agreement {_fmt(k['label_agreement'])}."
            + (f" (Shipped model, on 1000 of its training cells; the validation run's int8 vs float32 agreement "
               f"on held-out cells was {_fmt(cells['holdout_run']['agreement_int8_vs_float32']['label_agreement'])}.)"
               if refit else ""), ""]
    cm = cells["int8"]["confusion_matrix"]["rows_true_cols_predicted"]
    out += ["int8 confusion matrix (rows true, columns predicted):", "", "| | normal | blast |", "|---|---|---|",
            f"| normal | {cm[0][0]} | {cm[0][1]} |", f"| blast | {cm[1][0]} | {cm[1][1]} |", ""]
    for fig in card.get("figures", []):
        out += [f"![ROC and confusion matrix]({fig})", ""]
    frames = card.get("frame_level", {})
    if "all_idb1" in frames:
        s = frames["all_idb1"]["summary"]
        out += ["## Whole frames through the device pipeline", "",
                "ALL-IDB1 (21 frames; caution: ALL-IDB2's training crops were cut from these frames, so this is "
                "not an independent test):", "",
                f"- Blast centroids {s['blast_centroids']}, found by cell finding {s['blasts_found']}, of those "
                f"called blast {s['blasts_called_blast']} (sensitivity {_fmt(s['cell_sensitivity_of_found_blasts'])}).",
                f"- Other annotated cells found {s['others_found']} of {s['other_centroids']}, called normal "
                f"{s['others_called_normal']} (specificity {_fmt(s['cell_specificity_of_found_others'])}).",
                f"- Frames with blasts: {s['frames_with_blasts_flagged_blasts_seen']} of {s['frames_with_blasts']} "
                f"flagged `blasts_seen` ({s['frames_with_blasts_flagged_blasts_or_review']} blasts_seen or needs_review).",
                f"- Frames without blasts: {s['frames_without_blasts_flagged_no_blasts_seen']} of "
                f"{s['frames_without_blasts']} flagged `no_blasts_seen`; {s['frames_without_blasts_flagged_blasts_seen']} "
                "wrongly flagged `blasts_seen` (per-frame specificity).",
                f"- Median analysis time per frame: {s['median_frame_ms']:.0f} ms (this machine, one thread).", ""]
    if "bccd" in frames:
        b = frames["bccd"]
        out += [f"BCCD ({b['frames']} frames from another laboratory, normal cells only): white cells found "
                f"{b['wbc_found']} of {b['wbc_boxes']}, called normal {b['wbc_called_normal']} (specificity "
                f"{_fmt(b['cell_specificity_of_found_wbc'])}); frames flagged `blasts_seen`: "
                f"{b['frames_flagged_blasts_seen']}; flags {b['flags']}.", ""]
    detection = card.get("detection", {})
    if "all_idb1" in detection and "bccd" in detection:
        d, b = detection["all_idb1"], detection["bccd"]
        out += ["## Cell finding (device/core/detect.py, no model involved)", "",
                f"- ALL-IDB1: {_fmt(d['blast_recall'])} of the {d.get('totals', {}).get('blasts', 109)} annotated "
                f"blast centres found; {d['detections_per_frame']:.1f} cells reported per frame, "
                f"{d['unmatched_per_frame']:.1f} of them on neither annotation list (mostly unlisted white cells, "
                "smudge cells and cells cut by the border; the other/ list is not exhaustive and includes platelets, "
                "which are rejected on purpose).",
                f"- BCCD ({b['frames']} frames): white-cell recall {_fmt(b['wbc_recall'])}; false finds "
                f"{b['false_per_frame']:.3f} per frame ({b['false_at_edge']} of them unboxed cells cut by the frame "
                f"edge); the same cell reported twice {b['duplicates_per_frame']:.3f} per frame; median box IoU "
                f"{_fmt(b['median_box_iou'])}.", ""]
    out += ["## Limits", "",
            "- Blasts in training come from 6 C-NMC patients (bone marrow, one laboratory) and ALL-IDB (one "
            "laboratory); normal cells from one C-NMC donor, ALL-IDB and PBC. Other laboratories, stains, "
            "cameras and magnifications will shift the figures: validate locally before use.",
            "- Binary: blast vs everything else. Myeloblasts (AML), atypical lymphocytes and smudge cells are "
            "not in the training data and may be called blasts. Erythroblasts and platelets are learnt as normal.",
            "- The blast fraction of a frame is not a blast percentage of a smear; a count needs many frames "
            "and a human review of every flagged cell.", "",
            "## Sources", "", SOURCES, ""]
    return "\n".join(out)
