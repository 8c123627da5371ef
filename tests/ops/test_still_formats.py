"""`python -m device.bench.still_formats`: the measurement a camera still's format is chosen by (issue 15).

On two real 2592x1944 ALL-IDB1 frames: the lossless candidate must change nothing in the analysis, every lossy
one must be smaller than it, and the table has a row per candidate.
"""

from __future__ import annotations

import pytest

from device.bench.still_formats import CANDIDATES, measure, table
from device.resources import DEFAULT_MODEL, find_shared_data


@pytest.fixture(scope="module")
def rows():
    root = find_shared_data()
    frames = sorted((root / "all-idb1").glob("Im0[34]*_0.jpg"))[:2] if root else []
    if len(frames) < 2:
        pytest.skip("the shared data (all-idb1) is not here: no real frame to measure on")
    from device.core.analysis import Analyzer
    from device.inference.classifier import CellClassifier

    return measure(Analyzer(CellClassifier.load(DEFAULT_MODEL)), frames)


def test_lossless_changes_nothing_and_every_lossy_candidate_is_smaller(rows):
    lossless = rows["webp-lossless"]
    assert lossless["frames"] == 2 and lossless["cells"] > 0
    assert (lossless["flag"], lossless["lost"], lossless["found"], lossless["label"], lossless["review"]) == (0,) * 5
    assert max(lossless["dp"]) == 0.0 and all(p == float("inf") for p in lossless["psnr"])
    jpeg = {name: rows[name]["kb"][0] for name in CANDIDATES if name.startswith("jpeg")}
    assert jpeg["jpeg90"] < jpeg["jpeg92"] < jpeg["jpeg95"] < lossless["kb"][0]
    assert jpeg["jpeg90-420"] < jpeg["jpeg90"]
    assert all(40 < rows[name]["psnr"][0] < 60 for name in jpeg)


def test_the_table_has_a_row_per_candidate(rows):
    lines = table(rows).splitlines()
    assert len(lines) == 2 + len(CANDIDATES)
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == list(CANDIDATES)
    assert lines[-1].startswith("| webp-lossless | ") and " | lossless | " in lines[-1]
