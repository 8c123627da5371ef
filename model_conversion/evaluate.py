"""Evaluate a run's Keras model and its TFLite conversions; write the model card.

Cell level: the run's held-out (subject-disjoint) validation cells, through
the Keras model, the float32 TFLite and the int8 TFLite (the device's own
inference path), with per-source and per-subject figures.
Frame level: every ALL-IDB1 frame (blast centroids; note ALL-IDB2's crops
were cut from these frames, so part of what is seen here was trained on) and
the BCCD frames (another laboratory, normal cells only) through the whole
device pipeline: quality check, cell finding, preparation, int8 inference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from model_conversion.augment import DEFAULT_RECIPE
from model_conversion.data import LABEL_NAMES
from model_conversion.eval_detection import read_points, read_voc_boxes
from model_conversion.metrics import agreement, binary_metrics, triage_metrics
from model_conversion.train import load_split


def tflite_probabilities(model_path: Path, images: np.ndarray) -> np.ndarray:
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig

    classifier = CellClassifier.load(model_path, DelegateConfig(kind="cpu", num_threads=2))
    return np.concatenate([classifier.predict(images[i:i + 64]) for i in range(0, len(images), 64)])


def cell_level(run: Path, models: dict[str, Path], log=print) -> tuple[dict, dict]:
    import keras

    from model_conversion.prepare import default_cache_dir, prepare_images

    _, val = load_split(run)
    model = keras.models.load_model(run / "last.keras")
    size = int(model.inputs[0].shape[1])
    images = prepare_images(val, size, default_cache_dir())
    y = np.array([s.label for s in val])
    log(f"cell-level evaluation on {len(val)} held-out cells")
    probs = {"keras": model.predict(images.astype(np.float32), batch_size=64, verbose=0)[:, 1]}
    for kind, path in models.items():
        probs[kind] = tflite_probabilities(path, images)
    result = {name: binary_metrics(y, p) for name, p in probs.items()}
    sources = sorted({s.source for s in val})
    result["int8_by_source"] = {src: binary_metrics(y[idx], probs["int8"][idx]) for src in sources
                                for idx in [np.array([s.source == src for s in val])]}
    subjects = sorted({s.subject for s in val if s.subject})
    result["int8_by_subject"] = {}
    for subject in subjects:
        idx = np.array([s.subject == subject for s in val])
        m = binary_metrics(y[idx], probs["int8"][idx])
        result["int8_by_subject"][subject] = {"cells": m["count"], "true_label": LABEL_NAMES[int(y[idx][0])],
                                              "accuracy": m["accuracy"]}
    from device.core.decision import DecisionSettings
    decision = DecisionSettings()
    result["int8_triage"] = triage_metrics(y, probs["int8"], decision.review_low, decision.review_high)
    result["agreement_int8_vs_float32"] = agreement(probs["int8"], probs["float32"])
    result["agreement_int8_vs_keras"] = agreement(probs["int8"], probs["keras"])
    return result, {"y": y, **probs}


def _match(cells, point) -> int | None:
    """Index of the detected cell whose box holds the point (nearest centre first)."""
    best, best_d = None, None
    for i, c in enumerate(cells):
        if abs(point[0] - c.x) <= c.w / 2 and abs(point[1] - c.y) <= c.h / 2:
            d = (point[0] - c.x) ** 2 + (point[1] - c.y) ** 2
            if best_d is None or d < best_d:
                best, best_d = i, d
    return best


def frame_level_all_idb1(analyzer, folder: Path, limit: int | None = None) -> dict:
    from device.core.imageio import load_image

    frames, totals = [], {"blast_centroids": 0, "blasts_found": 0, "blasts_called_blast": 0,
                          "other_centroids": 0, "others_found": 0, "others_called_normal": 0}
    for image in sorted(folder.glob("*.jpg"))[:limit]:
        result = analyzer.analyze_frame(load_image(image), image)
        blasts = read_points(image.with_suffix(".xyc"))
        others = read_points(folder / "other" / image.with_suffix(".xyc").name)
        row = {"frame": image.name, "has_blasts": image.stem.endswith("_1"), "flag": result.flag,
               "cells": result.cell_count, "called_blast": result.blast_count, "for_review": result.review_count,
               "blast_centroids": len(blasts), "ms": result.timings_ms.get("total")}
        found = [_match(result.cells, p) for p in blasts]
        row["blasts_found"] = sum(i is not None for i in found)
        row["blasts_called_blast"] = sum(i is not None and result.cells[i].label == "blast" for i in found)
        found_o = [_match(result.cells, p) for p in others]
        totals["blast_centroids"] += len(blasts)
        totals["blasts_found"] += row["blasts_found"]
        totals["blasts_called_blast"] += row["blasts_called_blast"]
        totals["other_centroids"] += len(others)
        totals["others_found"] += sum(i is not None for i in found_o)
        totals["others_called_normal"] += sum(i is not None and result.cells[i].label == "normal" for i in found_o)
        frames.append(row)
    pos = [f for f in frames if f["has_blasts"]]
    neg = [f for f in frames if not f["has_blasts"]]
    summary = dict(totals)
    summary["cell_sensitivity_of_found_blasts"] = _ratio(totals["blasts_called_blast"], totals["blasts_found"])
    summary["cell_specificity_of_found_others"] = _ratio(totals["others_called_normal"], totals["others_found"])
    summary["frames_with_blasts"] = len(pos)
    summary["frames_with_blasts_flagged_blasts_seen"] = sum(f["flag"] == "blasts_seen" for f in pos)
    summary["frames_with_blasts_flagged_blasts_or_review"] = sum(f["flag"] in ("blasts_seen", "needs_review") for f in pos)
    summary["frames_without_blasts"] = len(neg)
    summary["frames_without_blasts_flagged_no_blasts_seen"] = sum(f["flag"] == "no_blasts_seen" for f in neg)
    summary["frames_without_blasts_flagged_blasts_seen"] = sum(f["flag"] == "blasts_seen" for f in neg)
    summary["median_frame_ms"] = float(np.median([f["ms"] for f in frames])) if frames else None
    return {"summary": summary, "frames": frames}


def frame_level_bccd(analyzer, folder: Path, limit: int | None = None) -> dict:
    """BCCD: another laboratory, no leukaemia: every white cell should be called normal."""
    from device.core.imageio import load_image

    images = sorted((folder / "JPEGImages").glob("*.jpg"))[:limit]
    flags: dict[str, int] = {}
    wbc, wbc_found, wbc_normal, cells, called_blast = 0, 0, 0, 0, 0
    for image in images:
        result = analyzer.analyze_frame(load_image(image), image)
        flags[result.flag] = flags.get(result.flag, 0) + 1
        cells += result.cell_count
        called_blast += result.blast_count
        xml = folder / "Annotations" / (image.stem + ".xml")
        if not xml.is_file():
            continue
        for x0, y0, x1, y1 in read_voc_boxes(xml):
            wbc += 1
            i = _match(result.cells, ((x0 + x1) / 2, (y0 + y1) / 2))
            if i is not None:
                wbc_found += 1
                wbc_normal += result.cells[i].label == "normal"
    return {"frames": len(images), "flags": flags, "wbc_boxes": wbc, "wbc_found": wbc_found,
            "wbc_called_normal": wbc_normal, "cell_specificity_of_found_wbc": _ratio(wbc_normal, wbc_found),
            "counted_cells": cells, "counted_cells_called_blast": called_blast,
            "frames_flagged_blasts_seen": flags.get("blasts_seen", 0)}


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def plot_card_figures(out: Path, probs: dict, metrics: dict, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for name in ("keras", "float32", "int8"):
        fpr, tpr, _ = roc_curve(probs["y"], probs[name])
        axes[0].plot(fpr, tpr, label=f"{name} (AUC {metrics[name]['roc_auc']})")
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, held-out subjects")
    axes[0].legend(loc="lower right", fontsize=8)
    cm = np.array(metrics["int8"]["confusion_matrix"]["rows_true_cols_predicted"])
    axes[1].imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        axes[1].text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
    axes[1].set(xticks=[0, 1], yticks=[0, 1], xticklabels=LABEL_NAMES, yticklabels=LABEL_NAMES,
                xlabel="predicted", ylabel="true", title="int8 confusion matrix")
    fig.tight_layout()
    name = f"{stem}_roc_confusion.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return [name]


def refit_cell_level(run: Path, models: dict[str, Path], holdout_card: Path, log=print) -> dict:
    """Cell figures for a final refit on every cell: the validated run's held-out figures, plus this
    model's own int8-vs-float32 agreement (a quantisation check, on cells it was trained on)."""
    from model_conversion.prepare import default_cache_dir, prepare_images

    recipe = json.loads(holdout_card.read_text())
    train, _ = load_split(run)
    size = json.loads((run / "config.json").read_text())["input_size"]
    pick = np.random.default_rng(0).permutation(len(train))[:1000]
    images = prepare_images(train, size, default_cache_dir())[np.sort(pick)]
    log(f"refit: held-out figures from {holdout_card}; int8/float32 agreement on {len(images)} cells")
    p_int8, p_float = tflite_probabilities(models["int8"], images), tflite_probabilities(models["float32"], images)
    cells = {k: v for k, v in recipe["cell_level"].items() if not k.startswith("agreement")}
    cells["holdout_run"] = {"validation_subjects": recipe["provenance"]["training"]["validation_subjects"],
                            "train_subjects": recipe["provenance"]["training"]["train_subjects"],
                            "agreement_int8_vs_float32": recipe["cell_level"]["agreement_int8_vs_float32"]}
    cells["agreement_int8_vs_float32"] = agreement(p_int8, p_float)
    cells["agreement_int8_vs_keras"] = recipe["cell_level"]["agreement_int8_vs_keras"]
    return cells


def recipe_summary(card: dict) -> dict:
    """One row of the recipe comparison: a held-out card's recipe and its int8 figures."""
    training = card["provenance"]["training"]
    int8 = card["cell_level"]["int8"]
    return {"recipe": training.get("augment_recipe", DEFAULT_RECIPE),
            "created": card["provenance"].get("created"),
            "validation_subjects": training["validation_subjects"],
            **{k: int8[k] for k in ("weighted_f1", "sensitivity", "specificity", "roc_auc")},
            "per_subject_accuracy": {s: v["accuracy"] for s, v in card["cell_level"].get("int8_by_subject", {}).items()}}


def recipes_compared(card: dict, compared: list[Path], holdout_card: Path | None) -> list[dict]:
    """Other recipes measured on the same held-out subjects, then this one.

    Written into the card because choosing between recipes by their held-out
    figures makes those figures optimistic; the reader must know it happened.
    """
    if holdout_card is not None:  # a refit carries its validated run's comparison
        return json.loads(holdout_card.read_text()).get("recipes_compared", [])
    if not compared:
        return []
    rows = []
    for path in compared:
        earlier = json.loads(Path(path).read_text())
        if earlier["provenance"]["training"]["validation_subjects"] != card["provenance"]["training"]["validation_subjects"]:
            raise SystemExit(f"{path} was validated on other subjects; recipes must be compared on the same split")
        rows.append(recipe_summary(earlier))
    return rows + [recipe_summary(card)]


def evaluate_run(run: Path, models_dir: Path, name: str = "allscope_blast", frames_data: str | None = None,
                 frame_limit: int | None = None, holdout_card: Path | None = None, log=print,
                 compared: list[Path] = ()) -> dict:
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig
    from model_conversion.convert import write_atomic
    from model_conversion.export import base_provenance, write_models
    from model_conversion.model_card import render_markdown

    models = {"float32": models_dir / f"{name}_float32.tflite", "int8": models_dir / f"{name}_int8.tflite"}
    _, val = load_split(run)
    if val:
        cells, probs = cell_level(run, models, log)
    elif holdout_card is not None:
        cells, probs = refit_cell_level(run, models, holdout_card, log), None
    else:
        raise SystemExit(f"{run} has no held-out cells: give --holdout-card, the model_card.json of the "
                         "validated run of the same recipe")
    log(json.dumps({k: cells[k] for k in ("keras", "float32", "int8")}, indent=1))
    data = Path(frames_data or json.loads((run / "config.json").read_text())["data"])
    analyzer = Analyzer(CellClassifier.load(models["int8"], DelegateConfig(kind="cpu", num_threads=1)))
    started = time.perf_counter()
    frames = {}
    if (data / "all-idb1").is_dir():
        log("whole-frame evaluation on ALL-IDB1")
        frames["all_idb1"] = frame_level_all_idb1(analyzer, data / "all-idb1", frame_limit)
    if (data / "bccd").is_dir():
        log("whole-frame evaluation on BCCD")
        frames["bccd"] = frame_level_bccd(analyzer, data / "bccd", frame_limit)
    log(f"frame evaluation took {time.perf_counter() - started:.0f} s")
    try:
        from model_conversion.eval_detection import evaluate_all_idb1, evaluate_bccd
        detection = {"all_idb1": evaluate_all_idb1(data), "bccd": evaluate_bccd(data, limit=frame_limit)}
    except (ImportError, FileNotFoundError) as error:  # detection evaluation needs the frames
        detection = {"skipped": str(error)}

    provenance = base_provenance(run)
    card = {"name": name, "provenance": provenance, "cell_level": cells, "frame_level": frames,
            "detection": detection,
            "model_files": {k: {"file": p.name, "bytes": p.stat().st_size} for k, p in models.items()}}
    comparison = recipes_compared(card, list(compared), holdout_card if not val else None)
    if comparison:
        card["recipes_compared"] = comparison
    if probs is not None:
        card["figures"] = plot_card_figures(models_dir, probs, cells, name)
    else:  # the held-out run's figure is the one that describes the recipe
        figures = json.loads(holdout_card.read_text()).get("figures", [])
        for figure in figures:
            write_atomic(models_dir / figure, (holdout_card.parent / figure).read_bytes())
        card["figures"] = figures
    # Put the headline validation figures into the models themselves, so a
    # device's report can quote them without side files.
    headline = {k: cells["int8"][k] for k in ("accuracy", "precision", "sensitivity", "specificity", "f1",
                                              "weighted_f1", "roc_auc", "count")}
    headline["split"] = ("subject-disjoint held-out cells (see model_card.md)" if val else
                         "subject-disjoint held-out cells of the validation run of this recipe; this model is its "
                         "refit on every cell (see model_card.md)")
    headline["int8_float32_label_agreement"] = cells["agreement_int8_vs_float32"]["label_agreement"]
    written = write_models(run, models_dir, name, {**provenance, "validation": headline})
    for kind, path in written.items():
        card["model_files"][kind] = {"file": path.name, "bytes": path.stat().st_size}
    write_atomic(models_dir / "model_card.json", json.dumps(card, indent=1).encode())
    write_atomic(models_dir / "model_card.md", render_markdown(card).encode())
    log(f"model card written to {models_dir / 'model_card.md'}")
    return card
