"""Frame flags and decision settings: how per-cell probabilities become what a technician sees."""

from __future__ import annotations

import pytest

from device.core.analysis import (
    FLAG_BLASTS_SEEN,
    FLAG_NEEDS_REVIEW,
    FLAG_NO_BLASTS_SEEN,
    FLAG_NO_CELLS_FOUND,
    FLAG_UNUSABLE_IMAGE,
    CellVerdict,
    FrameResult,
    frame_flag,
)
from device.core.decision import DecisionSettings, verdict_label


def cell(p: float, edge: bool = False, decision: DecisionSettings = DecisionSettings()) -> CellVerdict:
    label, review = verdict_label(p, decision)
    return CellVerdict(10, 10, 5, 5, p, label, review, edge)


def frame(*cells: CellVerdict) -> FrameResult:
    return FrameResult(path="f", width=100, height=100, quality={}, cells=list(cells))


@pytest.mark.parametrize("ps, expected", [
    ((), FLAG_NO_CELLS_FOUND),
    ((0.05, 0.1), FLAG_NO_BLASTS_SEEN),
    ((0.05, 0.3), FLAG_NEEDS_REVIEW),
    ((0.05, 0.6), FLAG_NEEDS_REVIEW),  # a blast call inside the uncertain band is not a confident blast
    ((0.05, 0.3, 0.9), FLAG_BLASTS_SEEN),
])
def test_frame_flag(ps, expected):
    assert frame_flag(frame(*(cell(p) for p in ps)), usable=True) == expected


def test_unusable_wins_and_edge_cells_are_not_counted():
    assert frame_flag(frame(cell(0.99)), usable=False) == FLAG_UNUSABLE_IMAGE
    result = frame(cell(0.99, edge=True), cell(0.1))
    assert frame_flag(result, usable=True) == FLAG_NO_BLASTS_SEEN
    assert (result.cell_count, result.blast_count, result.blast_fraction) == (1, 0, 0.0)
    assert len(result.to_dict()["cells"]) == 2  # listed, for the reviewer


def test_counts_and_fraction():
    result = frame(cell(0.9), cell(0.8), cell(0.1), cell(0.2))
    assert (result.cell_count, result.blast_count, result.blast_fraction) == (4, 2, 0.5)
    assert "decision support" in result.to_dict()["disclaimer"].lower()


def test_decision_settings_validate_and_come_from_model():
    with pytest.raises(ValueError):
        DecisionSettings(threshold=0.5, review_low=0.6, review_high=0.9)
    d = DecisionSettings.from_model({"decision": {"threshold": 0.4, "review_low": 0.2, "review_high": 0.7}})
    assert d == DecisionSettings(0.4, 0.2, 0.7)
    assert verdict_label(0.45, d) == ("blast", True)
    assert verdict_label(0.75, d) == ("blast", False)
    assert verdict_label(0.1, d) == ("normal", False)
    assert DecisionSettings.from_model({}) == DecisionSettings()
