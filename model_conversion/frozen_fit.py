"""Refit a frozen-backbone candidate's head on every source and write it into Google's network.

    python -m model_conversion frozenfit --network mnet05-160 --augment-copies 2 --out runs/frozen/mnet05-160

The head is the cross-source protocol's learner (standardised L2 logistic
regression, C = 0.1, the protocol's source/class weights, augmented copies
sharing their cell's weight), refitted on all cells of the chosen variant's
training sources and folded back to the raw uint8-dequantised features
(w / std, b - w.mean / std), so the device needs no standardisation. The
head replaces the ImageNet classifier of the same Google file the features
came from (``surgery.with_logistic_head``): one uint8 LiteRT file, the
backbone bit for bit Google's.

Written to ``--out``: ``allscope_blast_int8.tflite`` (with labels and
provenance metadata), ``head.npz`` (float head, for the agreement check) and
``fit.json`` (what it learnt from).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from model_conversion.crosssource import floored_scaler, training_weights
from model_conversion.frozen_checks import heldout_validation, int8_agreement, ms_per_cell, prepared

HEAD_C = 0.1
FROZEN_MODEL_VERSION = "2.1.0"  # 1.x: the paper's network (models/paper/); 2.0.0: without look copies
LOGIT_LIMIT_RANGE = (6.0, 12.0)
FIELD_INPUT = ("uint8 RGB 0..255 of device.core.fieldprep.prepare_field output, fed as the network's uint8 values "
               "(Google's MobileNet input quantisation, scale 1/128, zero point 128)")


def fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float = HEAD_C) -> tuple[np.ndarray, float]:
    """The protocol's ``logreg-floor`` learner, returned in raw feature space (weights, bias)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = floored_scaler(x)
    model = LogisticRegression(C=c, max_iter=3000).fit((x - mean) / scale, y, sample_weight=w)
    coef = model.coef_[0]
    return coef / scale, float(model.intercept_[0] - np.sum(coef * mean / scale))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def refit(data: Path, network: str, out: Path, augment_copies: int = 0, exclude: tuple[str, ...] = (),
          cache_dir: Path | None = None, log=print, weighting: str = "classes", look_copies: bool = False,
          res_copies: tuple[float, ...] = ()) -> dict:
    from device.core.decision import DecisionSettings
    from device.core.fieldprep import FIELD_ID, FIELD_RADII
    from device.store.atomic import write_atomic
    from model_conversion.data import LABEL_NAMES
    from model_conversion.embed import embed_samples
    from model_conversion.export import AUTHOR
    from model_conversion.extractor import EXTRACTORS, classifier_bytes, extractor_path
    from model_conversion.metadata import embed_metadata
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import SOURCE_OF, load_all_sources
    from model_conversion.surgery import with_logistic_head

    cache_dir = cache_dir or default_cache_dir()
    samples = load_all_sources(data)
    units = [SOURCE_OF.get(s.source, s.source) for s in samples]
    keep = np.array([u not in exclude for u in units])
    samples = [s for s, k in zip(samples, keep) if k]
    units = [u for u, k in zip(units, keep) if k]
    extractor = str(extractor_path(network, cache_dir))
    x = embed_samples(samples, "field", cache_dir, extractor, 1, log)
    copies = [embed_samples(samples, f"field+lab#{k}", cache_dir, extractor, 1, log) for k in range(augment_copies)]
    looks = []
    if look_copies:  # every smear cell again in each training smear source's look (model_conversion/looks.py)
        from model_conversion.looks import source_looks
        from model_conversion.views import physical_field
        looks = [u for u in source_looks(load_all_sources(data), cache_dir, physical_field, log=log) if u in units]
        copies += [embed_samples(samples, f"field>look:{u}", cache_dir, extractor, 1, log) for u in looks]
    # every smear cell again as a coarser camera would show it (red-cell radius in px; views._at_radius)
    copies += [embed_samples(samples, f"field>res:{r:g}", cache_dir, extractor, 1, log) for r in res_copies]
    y = np.array([s.label for s in samples])
    n = 1 + len(copies)
    w = training_weights(units, y, weighting) / n
    weights, bias = fit_head(np.concatenate([x, *copies]), np.tile(y, n), np.tile(w, n))
    logits = x @ weights + bias
    limit = float(np.clip(1.1 * np.abs(logits).max(), *LOGIT_LIMIT_RANGE))
    tflite = with_logistic_head(classifier_bytes(network), weights, bias, limit, calibration=x)
    size = int(network.split("-")[1])
    checks = {}
    if "c-nmc" in units:
        log("held-out C-NMC subjects: fitting without them and scoring the uint8 model")
        checks["validation"] = heldout_validation(samples, units, x, copies, y, classifier_bytes(network), size,
                                                  weighting, fit_head, limit)
    log("uint8 file vs float head on every prepared cell")
    checks["agreement"] = int8_agreement(tflite, samples, x, weights, bias, size)
    picks = np.random.default_rng(7).choice(len(samples), 200, replace=False)
    checks["ms_per_cell"] = round(ms_per_cell(tflite, prepared([samples[i] for i in picks], size)), 3)
    log(f"validation {checks.get('validation', {}).get('weighted_f1')}, agreement "
        f"{checks['agreement']['label_agreement']}, {checks['ms_per_cell']} ms per cell")

    by_source: dict[str, dict[str, int]] = {}
    for s in samples:
        by_source.setdefault(s.source, {"blast": 0, "normal": 0})[LABEL_NAMES[s.label]] += 1
    decision = DecisionSettings()
    provenance = {
        "model": f"MobileNet v1 ({EXTRACTORS[network]}, Google, ImageNet, trained quantisation-aware), frozen; "
                 "logistic head in place of its classifier",
        "input_size": size, "width": float(network[4:].split("-")[0].replace("05", "0.5").replace("025", "0.25")),
        "labels": list(LABEL_NAMES), "preprocessing": FIELD_ID, "field_radii": FIELD_RADII,
        "input": FIELD_INPUT, "input_encoding": "raw-uint8",
        "pretrained": f"../shared/pretrained/{EXTRACTORS[network]} (ImageNet, Apache-2.0, Google coral test_data "
                      "104342d), used frozen",
        "candidate": network + (f"+lab×{augment_copies}" if augment_copies else "") + ("+looks" if looks else "")
        + ("+res " + "/".join(f"{r:g}" for r in res_copies) if res_copies else ""),
        "decision": {"threshold": decision.threshold, "review_low": decision.review_low,
                     "review_high": decision.review_high},
        "training": {"head": f"L2 logistic regression on features standardised with a std floor (0.25 x median), "
                             f"C={HEAD_C}, folded into the 1x1 convolution",
                     "augment": bool(augment_copies), "augment_recipe": "lab" if augment_copies else None,
                     "augment_copies": augment_copies, "excluded_sources": list(exclude),
                     "look_copies": looks, "res_copies_rbc_radius_px": list(res_copies),
                     "weights": weighting + (": every source the same total weight, classes equal within a source"
                                             + (" and overall" if weighting == "classes" else "")),
                     "cells_by_source": by_source, "logit_limit": limit},
        "intended_use": "Decision support for trained professionals reviewing blood smears; not a diagnosis.",
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quantization": "int8",
    }
    if "validation" in checks:
        v = checks["validation"]
        provenance["validation"] = {k: v[k] for k in ("accuracy", "count", "f1", "precision", "roc_auc", "sensitivity",
                                                      "specificity", "weighted_f1", "split")}
        provenance["validation"]["int8_float32_label_agreement"] = checks["agreement"]["label_agreement"]
    from model_conversion.export import LICENSE_CROSS_SOURCE

    model = embed_metadata(tflite, name="allscope_blast_int8", version=FROZEN_MODEL_VERSION,
                           description="ALL blast vs normal white-cell classifier for allscope (uint8, frozen "
                                       "ImageNet MobileNet + logistic head); decision support only.",
                           author=AUTHOR, labels=LABEL_NAMES,
                           license=LICENSE_CROSS_SOURCE.replace("mobilenet_v1_0.25_128_quant", EXTRACTORS[network]
                                                                .removesuffix(".tflite")).replace(
                               "MobileNet initialised from", "frozen MobileNet from"),
                           provenance=provenance)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "allscope_blast_int8.tflite", model)
    np.savez(out / "head.npz", weights=weights, bias=bias)
    fit = {"network": network, "augment_copies": augment_copies, "look_copies": looks,
           "res_copies": list(res_copies), "weighting": weighting,
           "excluded": list(exclude),
           "cells": len(samples), "logit_limit": limit, "float_p_blast_mean": float(sigmoid(logits).mean()),
           "bytes": len(model), **checks}
    (out / "fit.json").write_text(json.dumps(fit, indent=1))
    log(f"wrote {out / 'allscope_blast_int8.tflite'} ({len(model) / 1e6:.2f} MB); head fitted on {len(samples)} "
        f"cells (+{augment_copies} augmented copies each)")
    return fit
