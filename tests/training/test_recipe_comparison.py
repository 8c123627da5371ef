"""Recipes compared on held-out cells are recorded in the model card, and only on the same split."""

from __future__ import annotations

import json

import pytest

from model_conversion.evaluate import recipes_compared
from model_conversion.model_card import _recipes_compared


def _card(recipe: str | None, subjects: list[str], wf1: float, per_subject: dict[str, float]) -> dict:
    training = {"validation_subjects": subjects, "train_subjects": ["16"]}
    if recipe:
        training["augment_recipe"] = recipe
    int8 = {"weighted_f1": wf1, "sensitivity": 0.7, "specificity": 0.9, "roc_auc": 0.92}
    return {"provenance": {"training": training, "created": "2026-11-22T00:00:00Z"},
            "cell_level": {"int8": int8, "int8_by_subject": {s: {"accuracy": a} for s, a in per_subject.items()}}}


def test_earlier_recipes_come_first_and_this_one_last(tmp_path):
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(_card(None, ["30", "H14"], 0.81, {"30": 0.45, "H14": 0.8})))
    this = _card("od-stain", ["30", "H14"], 0.86, {"30": 0.6, "H14": 0.85})
    rows = recipes_compared(this, [earlier], None)
    assert [r["recipe"] for r in rows] == ["colour-jitter", "od-stain"]  # a card without a recipe predates them
    assert rows[1]["weighted_f1"] == 0.86 and rows[0]["per_subject_accuracy"]["30"] == 0.45
    table = "\n".join(_recipes_compared(rows))
    assert "somewhat optimistic" in table
    assert "| od-stain | 0.860 | 0.700 | 0.900 | 0.920 | 0.600 | 0.850 |" in table


def test_recipes_validated_on_other_subjects_are_refused(tmp_path):
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(_card(None, ["23", "H10"], 0.81, {})))
    with pytest.raises(SystemExit, match="other subjects"):
        recipes_compared(_card("od-stain", ["30", "H14"], 0.86, {}), [earlier], None)


def test_a_refit_carries_its_validated_runs_comparison(tmp_path):
    holdout = tmp_path / "holdout.json"
    rows = [{"recipe": "colour-jitter"}, {"recipe": "od-stain"}]
    holdout.write_text(json.dumps({"recipes_compared": rows}))
    assert recipes_compared({}, [], holdout) == rows
    assert recipes_compared(_card("od-stain", ["30"], 0.8, {}), [], None) == []
