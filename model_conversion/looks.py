"""A laboratory's *look*, and training cells rendered in another laboratory's look.

Blasts come from two laboratories only (ALL-IDB and C-NMC), so a head fitted
on pooled sources can learn their look (stain, light, camera) as "blast"
(CROSS_SOURCE.md, fourth step). Rendering each smear cell again in every
other training laboratory's look takes that power away: the look then no
longer predicts the class, and the head must use the cell.

The look of a source is the median, over its cells' fields
(``views.physical_field``), of each field's CIE L*a*b* channel means and
standard deviations; a field is rendered in another look by Reinhard
transfer (Reinhard et al. 2001) of the whole field, background included.
C-NMC cells (cut out on black, no background) are left as they are.

Statistics are computed once and kept in ``<cache>/looks_v1.json``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

LOOKS_VERSION = "v1"
UNCHANGED_SOURCES = ("c-nmc",)


def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the image's L*a*b* channels (OpenCV's 8-bit scaling, as floats)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    return lab.mean(0), lab.std(0)


def recolour(rgb: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> np.ndarray:
    """Reinhard transfer of ``rgb`` to the target L*a*b* statistics (uint8 RGB, same shape)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    mean, std = lab_stats(rgb)
    out = (lab - mean) / np.maximum(std, 1.0) * np.asarray(target_std) + np.asarray(target_mean)
    return cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def looks_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"looks_{LOOKS_VERSION}.json"


def source_looks(samples, cache_dir: Path, field_of, size: int = 128, log=print) -> dict[str, dict[str, list[float]]]:
    """{source unit: {"mean": [L, a, b], "std": [L, a, b]}} of the smear sources, cached.

    ``field_of(rgb, sample, size)``: the sample's field (``views.physical_field``; passed in, since the
    views module renders looks with this one).
    """
    path = looks_path(cache_dir)
    if path.is_file():
        return json.loads(path.read_text())
    from device.core.imageio import load_image
    from device.store.atomic import write_atomic
    from model_conversion.sources import SOURCE_OF

    by_file = defaultdict(list)
    for sample in samples:
        unit = SOURCE_OF.get(sample.source, sample.source)
        if unit not in UNCHANGED_SOURCES:
            by_file[sample.path].append((unit, sample))
    stats = defaultdict(list)
    for path_, cells in by_file.items():
        rgb = load_image(path_)
        for unit, sample in cells:
            stats[unit].append(np.concatenate(lab_stats(field_of(rgb, sample, size))))
    looks = {unit: {"mean": np.median(v, 0)[:3].tolist(), "std": np.median(v, 0)[3:].tolist(), "cells": len(v)}
             for unit, v in sorted(stats.items())}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(looks, indent=1).encode())
    log(f"looks of {', '.join(looks)} written to {path}")
    return looks


def load_looks(cache_dir: Path) -> dict[str, dict[str, list[float]]]:
    path = looks_path(cache_dir)
    if not path.is_file():
        raise SystemExit(f"{path}: no laboratory looks yet; run crosssource with --look-copies once to compute them")
    return json.loads(path.read_text())
