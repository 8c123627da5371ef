"""The domain check tells sources apart when they differ, and not when they do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_conversion.data import Sample
from model_conversion.domaincheck import domain_check


def _cells(offset: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    samples, x = [], []
    for k, source in enumerate(("pbc-normal", "tecom", "c-nmc-2019")):
        for i in range(60):
            samples.append(Sample(Path(f"/x/{source}/{i}.png"), 0, source, None, "", f"{source}:{i // 3}"))
            v = rng.normal(0, 1, 6)
            v[k] += offset
            x.append(v)
    return samples, np.array(x, np.float32)


def test_distinct_sources_are_recognised():
    r = domain_check(*_cells(offset=4.0))
    assert r["source_balanced_accuracy"] > 0.9 and r["cnmc_vs_smear_balanced_accuracy"] > 0.9


def test_identical_sources_stay_near_chance():
    r = domain_check(*_cells(offset=0.0))
    assert abs(r["source_balanced_accuracy"] - r["source_chance"]) < 0.2
    assert r["cnmc_vs_smear_balanced_accuracy"] < 0.7
