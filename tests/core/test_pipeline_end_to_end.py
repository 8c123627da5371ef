"""Real pipeline, small: train on real cells → float32 + int8 TFLite with metadata → LiteRT → model card.

Runs `python -m model_conversion train|convert|evaluate` exactly as a developer
would, with a per-class cap, a tiny input and one epoch so it fits in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from device.inference.classifier import CellClassifier
from device.inference.delegates import DelegateConfig
from device.inference.model_info import read_model_info


def run_module(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "model_conversion", *args], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_convert_evaluate_on_real_cells(shared_data, tmp_path):
    env = dict(os.environ, ALLSCOPE_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
    run = tmp_path / "run"
    models = tmp_path / "models"
    run_module("train", "--data", str(shared_data), "--out", str(run), "--size", "32", "--width", "0.125",
               "--epochs", "2", "--limit", "40", env=env)
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]["subjects"]) & set(split["val"]["subjects"])
    assert (run / "last.keras").is_file() and (run / "history.csv").is_file()

    run_module("convert", "--run", str(run), "--out", str(models), "--calibration", "40", env=env)
    int8 = models / "allscope_blast_int8.tflite"
    float32 = models / "allscope_blast_float32.tflite"
    assert int8.stat().st_size < float32.stat().st_size / 2.5  # int8 weights: about a quarter of the size

    run_module("evaluate", "--run", str(run), "--models", str(models), "--frame-limit", "3", env=env)
    card = json.loads((models / "model_card.json").read_text())
    for name in ("keras", "float32", "int8"):
        metrics = card["cell_level"][name]
        assert metrics["count"] == split["val"]["count"]
        for key in ("accuracy", "precision", "sensitivity", "specificity", "f1", "weighted_f1", "roc_auc"):
            assert key in metrics
    assert card["cell_level"]["agreement_int8_vs_float32"]["label_agreement"] >= 0.8
    assert card["frame_level"]["all_idb1"]["frames"] and card["frame_level"]["bccd"]["frames"] == 3
    markdown = (models / "model_card.md").read_text()
    assert "Decision support only" in markdown and "confusion matrix" in markdown.lower()
    assert (models / card["figures"][0]).is_file()

    # The device reads everything it needs from the model file itself.
    info = read_model_info(int8)
    assert info.labels == ("normal", "blast")
    assert info.provenance["input_size"] == 32 and info.provenance["preprocessing"].startswith("cellprep")
    assert info.provenance["validation"]["count"] == split["val"]["count"]
    classifier = CellClassifier.load(int8, DelegateConfig(kind="cpu", num_threads=1))
    p = classifier.predict(np.zeros((3, 32, 32, 3), np.uint8))
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
