"""Figures of a frozen-backbone model that the card and the model file carry.

* ``heldout_validation``: the C-NMC held-out-subjects row of the protocol
  (same 30 % subject split, seed 2025, as ``crosssource``), scored with the
  uint8 model itself: the head is fitted without those subjects, written
  into Google's file like the shipped one, and run on their prepared cells.
* ``int8_agreement``: the shipped uint8 file against its float head on the
  same uint8 features, over every prepared cell (the backbone is uint8 by
  construction: the only rounding the file adds is the head's).
* ``ms_per_cell``: LiteRT invoke time per cell, one thread, batch 1.
"""

from __future__ import annotations

import numpy as np

from model_conversion.crosssource import training_weights


def run_tflite(model: bytes, images: np.ndarray) -> np.ndarray:
    """p_blast (softmax[:, 1], dequantised) of a two-class uint8 model, one thread, one cell at a time."""
    from model_conversion.cnn_crosssource import int8_predict

    return int8_predict(model, images)


def prepared(samples, size: int) -> np.ndarray:
    from collections import defaultdict

    from device.core.imageio import load_image
    from model_conversion.views import prepare

    by_file = defaultdict(list)
    for i, s in enumerate(samples):
        by_file[s.path].append(i)
    out = np.empty((len(samples), size, size, 3), np.uint8)
    for path, indices in by_file.items():
        rgb = load_image(path)
        for i in indices:
            out[i] = prepare("field", rgb, samples[i], size)
    return out


def heldout_validation(samples, units, x, copies, y, classifier: bytes, size: int, weighting: str,
                       fit_head, limit: float, seed: int = 2025, fraction: float = 0.3) -> dict:
    from model_conversion.data import split_by_group
    from model_conversion.metrics import binary_metrics
    from model_conversion.surgery import with_logistic_head

    cnmc = [i for i, u in enumerate(units) if u == "c-nmc"]
    _, held = split_by_group([samples[i] for i in cnmc], fraction, seed)
    held_paths = {s.path for s in held}
    test = np.array([u == "c-nmc" and s.path in held_paths for u, s in zip(units, samples)])
    train = ~test
    n = 1 + len(copies)
    w = training_weights([units[i] for i in np.flatnonzero(train)], y[train], weighting) / n
    weights, bias = fit_head(np.concatenate([x[train]] + [c[train] for c in copies]), np.tile(y[train], n),
                             np.tile(w, n))
    model = with_logistic_head(classifier, weights, bias, limit, calibration=x[train])
    held_samples = [s for s, t in zip(samples, test) if t]
    p = run_tflite(model, prepared(held_samples, size))
    metrics = binary_metrics(y[test], p)
    metrics.update(count=int(test.sum()), blasts=int(y[test].sum()), normals=int((y[test] == 0).sum()),
                   split=("C-NMC subjects held out of the head's fit (30 %, seed 2025, as the cross-source "
                          "protocol), scored with the uint8 model; the shipped file is the refit on every cell"),
                   validation_subjects=sorted({s.subject for s in held}))
    return metrics


def int8_agreement(model: bytes, samples, x: np.ndarray, weights: np.ndarray, bias: float, size: int) -> dict:
    from model_conversion.metrics import agreement

    p_int8 = run_tflite(model, prepared(samples, size))
    p_float = 1.0 / (1.0 + np.exp(-(x @ weights + bias)))
    return {**agreement(p_int8, p_float), "cells": len(samples)}


def ms_per_cell(model: bytes, images: np.ndarray, repeats: int = 3) -> float:
    """LiteRT invoke time per cell, one thread, batch 1 (``cross_card.ms_per_cell``)."""
    from model_conversion.cross_card import ms_per_cell as timed

    return timed(model, images, repeats)
