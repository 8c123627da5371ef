"""From a frame (or a single-cell crop) to per-cell verdicts and a frame flag.

Decision support for a professional, never a diagnosis on its own: every
result carries that statement, cells in the uncertain band are flagged for a
human to look at, and an unusable frame is reported as such instead of being
classified.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.core.cellprep import PREPROCESSING_ID as CELLPREP_ID
from device.core.cellprep import prepare_cell
from device.core.decision import DecisionSettings, verdict_label
from device.core.detect import DetectionParams, find_cells
from device.core.fieldprep import (
    Scale,
    crop_field_window,
    field_window,
    frame_rbc_radius,
    preparation_for,
    resize_field,
)
from device.core.morphology import Halvings
from device.core.quality import QualityThresholds, assess_quality
from device.errors import ModelLoadError

DISCLAIMER = ("Decision support only: every result must be reviewed by a qualified professional; "
              "allscope does not make a diagnosis.")

FLAG_BLASTS_SEEN = "blasts_seen"
FLAG_NO_BLASTS_SEEN = "no_blasts_seen"
FLAG_NEEDS_REVIEW = "needs_review"
FLAG_UNUSABLE_IMAGE = "unusable_image"
FLAG_NO_CELLS_FOUND = "no_cells_found"

# Field windows resized per hand-over to the classifier (see Analyzer._classify_fields).
CHUNK = 4


@dataclass(frozen=True)
class CellVerdict:
    x: float
    y: float
    w: float
    h: float
    p_blast: float
    label: str  # "blast" | "normal"
    needs_review: bool
    edge: bool  # cut by the frame border: listed, not counted

    def to_dict(self) -> dict:
        return {"x": round(self.x, 1), "y": round(self.y, 1), "w": round(self.w, 1), "h": round(self.h, 1),
                "label": self.label, "p_blast": round(self.p_blast, 4),
                "needs_review": self.needs_review, "edge": self.edge}


@dataclass
class FrameResult:
    path: str
    width: int
    height: int
    quality: dict
    cells: list[CellVerdict] = field(default_factory=list)
    flag: str = FLAG_NO_CELLS_FOUND
    timings_ms: dict = field(default_factory=dict)
    # How cells were prepared and at which physical scale (see device.core.fieldprep).
    scale: dict | None = None

    @property
    def counted(self) -> list[CellVerdict]:
        return [c for c in self.cells if not c.edge]

    @property
    def cell_count(self) -> int:
        return len(self.counted)

    @property
    def blast_count(self) -> int:
        return sum(1 for c in self.counted if c.label == "blast")

    @property
    def blast_fraction(self) -> float:
        return round(self.blast_count / self.cell_count, 4) if self.cell_count else 0.0

    @property
    def review_count(self) -> int:
        return sum(1 for c in self.counted if c.needs_review)

    def to_dict(self) -> dict:
        return {"path": self.path, "width": self.width, "height": self.height, "quality": self.quality,
                "cells": [c.to_dict() for c in self.cells], "cell_count": self.cell_count,
                "blast_count": self.blast_count, "blast_fraction": self.blast_fraction,
                "review_count": self.review_count, "flag": self.flag,
                "timings_ms": self.timings_ms, "scale": self.scale, "disclaimer": DISCLAIMER}


def frame_flag(result: FrameResult, usable: bool) -> str:
    """One flag per frame: unusable, no cells, blasts, uncertain cells, or none seen."""
    if not usable:
        return FLAG_UNUSABLE_IMAGE
    counted = result.counted
    if not counted:
        return FLAG_NO_CELLS_FOUND
    if any(c.label == "blast" and not c.needs_review for c in counted):
        return FLAG_BLASTS_SEEN
    if any(c.needs_review for c in counted):
        return FLAG_NEEDS_REVIEW
    return FLAG_NO_BLASTS_SEEN


class Analyzer:
    """Holds the loaded classifier and the settings; analyses frames and crops."""

    def __init__(self, classifier, decision: DecisionSettings | None = None,
                 detection: DetectionParams | None = None, quality: QualityThresholds | None = None):
        self.classifier = classifier
        self.decision = decision or DecisionSettings.from_model(classifier.info.provenance)
        self.detection = detection or DetectionParams()
        self.quality = quality or QualityThresholds()
        provenance = classifier.info.provenance
        try:
            # "cellprep" (masked, fill the input) or "field" (fixed physical field): the model says which.
            self.preparation = preparation_for(provenance)
        except ValueError as exc:
            raise ModelLoadError(f"{classifier.info.path}: {exc}") from None
        self.preprocessing_id = provenance.get("preprocessing", CELLPREP_ID)
        self.field_radii = float(provenance.get("field_radii", Scale(1.0, "").field_radii))
        self._helper_pool: ThreadPoolExecutor | None = None
        self._helper_lock = threading.Lock()

    def prepare(self, crops: list[np.ndarray], excludes: list[np.ndarray | None] | None = None) -> np.ndarray:
        """Canonical model inputs under the model's preparation.

        cellprep: ``crops`` are the crops cell finding cut, ``excludes`` mask out neighbouring cells'
        nuclei per crop. field: ``crops`` are field windows (``fieldprep.field_window``), resized here.
        """
        size = self.classifier.input_size
        batch = np.zeros((len(crops), size, size, 3), np.uint8)
        if self.preparation == "field":
            for i, window in enumerate(crops):
                batch[i] = resize_field(window, size)
            return batch
        excludes = excludes or [None] * len(crops)
        for i, (crop, exclude) in enumerate(zip(crops, excludes)):
            batch[i] = prepare_cell(crop, size, exclude, self.preprocessing_id).image
        return batch

    def prepare_crops(self, crops: list[np.ndarray]) -> tuple[np.ndarray, list[dict]]:
        """Model inputs for single-cell crops, and the scale used for each."""
        if self.preparation == "cellprep":
            return self.prepare(crops), [self._scale_dict(None) for _ in crops]
        windows, scales = zip(*(crop_field_window(crop, self.field_radii) for crop in crops)) if crops else ((), ())
        return self.prepare(list(windows)), [self._scale_dict(s) for s in scales]

    def classify_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """p_blast for each single-cell crop."""
        if not crops:
            return np.zeros((0,), np.float32)
        return self.classifier.predict(self.prepare_crops(crops)[0])

    def _scale_dict(self, scale: Scale | None) -> dict:
        if scale is None:
            return {"preprocessing": self.preprocessing_id, "method": "cell-fills-input", "rbc_radius_px": None}
        return {"preprocessing": self.preprocessing_id, **scale.to_dict()}

    def prepare_frame(self, rgb: np.ndarray, candidates) -> tuple[np.ndarray, dict]:
        """Model inputs for the cells found in a frame, and the scale used (one per frame)."""
        if self.preparation == "cellprep":
            return self.prepare([c.crop for c in candidates], [c.neighbours for c in candidates]), \
                self._scale_dict(None)
        scale = Scale(frame_rbc_radius(rgb, self.detection), "frame-estimate", self.field_radii)
        windows = [field_window(rgb, c.x, c.y, scale.rbc_radius_px, scale.field_radii) for c in candidates]
        return self.prepare(windows), self._scale_dict(scale)

    def on_classifying(self, count: int) -> None:
        """Called once per frame before its ``count`` cells are prepared and classified (a progress hook)."""

    def _helper(self) -> ThreadPoolExecutor:
        """One helper thread per analyzer: the red-cell scale while cells are found, crops while others
        are classified (OpenCV and LiteRT release the GIL; the results are those of the serial path)."""
        with self._helper_lock:
            if self._helper_pool is None:
                self._helper_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="allscope-prep")
            return self._helper_pool

    def _classify_fields(self, rgb: np.ndarray, candidates, radius: Future) -> tuple[np.ndarray, dict, float]:
        """p_blast of the field preparation, the scale, and when the crops were cut (perf_counter).

        The same inputs as ``prepare_frame`` (bit for bit): the windows are views of the frame, resized
        CHUNK at a time on the helper thread into one preallocated batch while the main thread classifies
        the chunk before.
        """
        scale = Scale(radius.result(), "frame-estimate", self.field_radii)
        windows = [field_window(rgb, c.x, c.y, scale.rbc_radius_px, scale.field_radii) for c in candidates]
        cut = time.perf_counter()
        size = self.classifier.input_size
        batch = np.empty((len(windows), size, size, 3), np.uint8)

        def resize(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                resize_field(windows[i], size, out=batch[i])

        chunks = [(lo, min(lo + CHUNK, len(windows))) for lo in range(0, len(windows), CHUNK)]
        pending = [self._helper().submit(resize, lo, hi) for lo, hi in chunks]
        probabilities = np.zeros((len(windows),), np.float32)
        try:
            for (lo, hi), done in zip(chunks, pending):
                done.result()
                probabilities[lo:hi] = self.classifier.predict(batch[lo:hi])
        finally:
            for future in pending:
                future.cancel()
        return probabilities, self._scale_dict(scale), cut

    def analyze_frame(self, rgb: np.ndarray, path: str | Path = "") -> FrameResult:
        started = time.perf_counter()
        height, width = rgb.shape[:2]
        halvings = Halvings(rgb)  # quality and cell finding start from the same halved copy
        report = assess_quality(rgb, self.quality, halvings)
        result = FrameResult(path=str(path), width=width, height=height, quality=report.to_dict())
        t_quality = time.perf_counter()
        if not report.usable:
            result.flag = FLAG_UNUSABLE_IMAGE
            result.timings_ms = {"quality": _ms(started, t_quality), "total": _ms(started, t_quality)}
            return result
        field = self.preparation == "field"
        # The red-cell scale of the field preparation is measured on the helper thread while cells are found.
        radius = self._helper().submit(frame_rbc_radius, rgb, self.detection) if field else None
        candidates = find_cells(rgb, self.detection, halvings)
        del halvings
        t_detect = time.perf_counter()
        self.on_classifying(len(candidates))
        if field:
            probabilities, result.scale, t_prepare = self._classify_fields(rgb, candidates, radius)
        else:
            batch, result.scale = self.prepare_frame(rgb, candidates)
            t_prepare = time.perf_counter()
            probabilities = self.classifier.predict(batch) if len(batch) else np.zeros((0,), np.float32)
        t_classify = time.perf_counter()
        for candidate, p in zip(candidates, probabilities):
            label, review = verdict_label(float(p), self.decision)
            result.cells.append(CellVerdict(float(candidate.x), float(candidate.y), float(candidate.w),
                                            float(candidate.h), float(p), label, review,
                                            bool(candidate.touches_edge)))
        result.flag = frame_flag(result, usable=True)
        # Field preparation: "prepare" is waiting for the scale and cutting the windows; their resizing runs
        # on the helper thread alongside "classify".
        result.timings_ms = {"quality": _ms(started, t_quality), "detect": _ms(t_quality, t_detect),
                             "prepare": _ms(t_detect, t_prepare), "classify": _ms(t_prepare, t_classify),
                             "total": _ms(started, t_classify)}
        return result


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 1)
