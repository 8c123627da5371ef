"""The leave-one-source-out protocol on a tiny synthetic feature set (real fits, no stored results)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_conversion.crosssource import CNMC_HOLDOUT, LEARNERS, leave_one_source_out, training_weights
from model_conversion.crosssource_run import choose, rule_score
from model_conversion.data import Sample


def _synthetic(shift_cnmc: float, seed: int = 0) -> tuple[list[Sample], np.ndarray]:
    """Blasts differ from normals along feature 0 everywhere; C-NMC is offset along feature 1 by ``shift_cnmc``."""
    rng = np.random.default_rng(seed)
    samples, rows = [], []
    plan = [("all-idb2", 1, 40, None), ("all-idb2", 0, 40, None), ("pbc-normal", 0, 60, None),
            ("tecom", 0, 40, None), ("c-nmc-2019", 1, 30, "p1"), ("c-nmc-2019", 1, 30, "p2"),
            ("c-nmc-2019", 0, 30, "H1"), ("c-nmc-2019", 0, 30, "H2")]
    for source, label, n, subject in plan:
        for i in range(n):
            group = f"{source}:{subject}" if subject else f"{source}:{label}:{i}"
            samples.append(Sample(Path(f"/x/{source}/{subject}/{label}_{i}.png"), label, source, subject, "", group))
            v = rng.normal(0, 1, 8)
            v[0] += 3.0 * label
            if source == "c-nmc-2019":
                v[1] += shift_cnmc
            rows.append(v)
    return samples, np.array(rows, np.float32)


@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_separable_sources_give_high_auc_and_few_false_blasts(learner):
    samples, x = _synthetic(shift_cnmc=0.0)
    rows = {r.left_out: r for r in leave_one_source_out(samples, x, LEARNERS[learner], log=lambda *_: None)}
    assert set(rows) == {"all-idb", "pbc", "tecom", "c-nmc", CNMC_HOLDOUT}
    assert rows["all-idb"].blast_auc > 0.9 and rows["all-idb"].blasts == 40
    assert rows["all-idb"].trained_on == ["c-nmc", "pbc", "tecom"]
    assert rows["pbc"].blast_auc is None and rows["pbc"].normal_called_blast < 0.15
    held = rows[CNMC_HOLDOUT]
    assert "c-nmc" in held.trained_on and 0 < held.blasts < 120 and held.normals > 0


def test_a_domain_shortcut_shows_up_in_the_table():
    """Blasts and normals only separable by the C-NMC offset: the left-out ALL-IDB AUC must collapse."""
    samples, x = _synthetic(shift_cnmc=4.0)
    x[:, 0] = np.random.default_rng(1).normal(0, 1, len(x))  # no real blast signal anywhere
    rows = {r.left_out: r for r in leave_one_source_out(samples, x, LEARNERS["logreg"], log=lambda *_: None)}
    assert rows["all-idb"].blast_auc < 0.7


def test_excluded_source_is_not_trained_on_unless_it_holds_the_only_blasts():
    samples, x = _synthetic(shift_cnmc=0.0)
    rows = {r.left_out: r for r in leave_one_source_out(samples, x, LEARNERS["centroid"], ("c-nmc",),
                                                        log=lambda *_: None)}
    assert "c-nmc" not in rows["pbc"].trained_on
    assert "c-nmc" in rows["all-idb"].trained_on  # ALL-IDB left out: C-NMC holds the only blasts
    assert CNMC_HOLDOUT not in rows


def test_weights_balance_sources_and_classes():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    w = training_weights(["a", "a", "a", "a", "b", "b", "b", "b", "b", "b"], y)
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum())
    # Before the class balance a's one normal weighs as much as its three blasts together, and a and b
    # weigh the same; the balance then scales all normals by 1/3: one blast = a's normal = half of b.
    assert w[3] == pytest.approx(w[:3].sum() / 3)
    assert w[4:].sum() == pytest.approx(2 * w[3])


def test_rule_prefers_admissible_then_auc():
    def rows(fp_pbc, auc):
        return [{"left_out": "pbc", "normal_called_blast": fp_pbc, "blast_auc": None},
                {"left_out": "all-idb", "normal_called_blast": 0.1, "blast_auc": auc},
                {"left_out": CNMC_HOLDOUT, "normal_called_blast": 0.1, "blast_auc": auc}]
    results = {"a": {"rule": rule_score(rows(0.01, 0.70))}, "b": {"rule": rule_score(rows(0.05, 0.95))},
               "c": {"rule": rule_score(rows(0.02, 0.80))}}
    assert results["b"]["rule"]["violations"] == ["pbc"]
    assert choose(results) == "c"


def test_written_tables_keep_one_column_per_field(tmp_path):
    from model_conversion.crosssource import rows_to_json
    from model_conversion.crosssource_run import _write

    samples, x = _synthetic(shift_cnmc=0.0)
    rows = rows_to_json(leave_one_source_out(samples, x, LEARNERS["centroid"], log=lambda *_: None))
    _write(tmp_path, {"prep | centroid | all sources": {"rows": rows, "rule": rule_score(rows)}})
    text = (tmp_path / "results.md").read_text()
    summary = [line for line in text.splitlines() if line.startswith("| prep")]
    assert summary and all(line.count("|") == 7 for line in summary)
    assert "prep / centroid / all sources" in text
