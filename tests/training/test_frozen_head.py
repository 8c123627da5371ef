"""The frozen-backbone model: Google's uint8 MobileNet cut at the pool, our logistic head in its classifier's place.

Real files (``../shared/pretrained``), real cells (``../shared/data``), real LiteRT: the cut must be bit
for bit the original's pooled tensor, the head must compute the logistic regression it was given, and the
device's classifier must feed such a model the pixels it was fitted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_conversion.crosssource import STD_FLOOR, floored_scaler
from model_conversion.surgery import cut_at_pool, pooled_width, with_logistic_head

PRETRAINED = ("mobilenet_v1_0.25_128_quant.tflite", 128)


@pytest.fixture(scope="module")
def classifier() -> bytes:
    from model_conversion.embed import find_pretrained

    try:
        return (find_pretrained() / PRETRAINED[0]).read_bytes()
    except FileNotFoundError:
        pytest.skip("../shared/pretrained not found (set ALLSCOPE_PRETRAINED)")


@pytest.fixture(scope="module")
def cells(shared_data) -> np.ndarray:
    """40 real cells of four laboratories, prepared as the device prepares them for this model."""
    from model_conversion.frozen_checks import prepared
    from model_conversion.sources import load_bccd_cells, load_wbc_segmentation

    picks = load_bccd_cells(shared_data)[:20] + load_wbc_segmentation(shared_data, "tecom")[:20]
    return prepared(picks, PRETRAINED[1])


def _interpreter(model: bytes, **kwargs):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _pooled(model: bytes, images: np.ndarray) -> np.ndarray:
    interpreter = _interpreter(model)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"]).reshape(-1))
    return np.array(rows)


def test_the_cut_is_the_original_pooled_tensor_bit_for_bit(classifier, cells):
    original = _interpreter(classifier, experimental_preserve_all_tensors=True)
    pool = next(d for d in original.get_tensor_details() if d["name"].endswith("AvgPool_1a/AvgPool"))
    cut = cut_at_pool(classifier)
    got = _pooled(cut, cells)
    assert got.shape == (len(cells), pooled_width(classifier)) == (len(cells), 256)
    for image, row in zip(cells, got):
        original.set_tensor(original.get_input_details()[0]["index"], image[None])
        original.invoke()
        assert np.array_equal(original.get_tensor(pool["index"]).reshape(-1), row)
    assert got.std(axis=0).max() > 0  # real features, not a constant


def test_the_head_computes_the_logistic_regression_it_was_given(classifier, cells):
    from model_conversion.frozen_checks import run_tflite

    cut = cut_at_pool(classifier)
    details = _interpreter(cut).get_output_details()[0]
    scale, zero = details["quantization"]
    x = (_pooled(cut, cells).astype(np.float64) - zero) * scale
    rng = np.random.default_rng(3)
    _, spread = floored_scaler(x)
    weights = rng.normal(0, 1, x.shape[1]) / spread / np.sqrt(x.shape[1])
    bias = -float(np.median(x @ weights))  # about half the cells on each side of 0.5
    expected = 1 / (1 + np.exp(-(x @ weights + bias)))
    got = run_tflite(with_logistic_head(classifier, weights, bias, logit_limit=8.0), cells)
    assert 0.2 < (expected >= 0.5).mean() < 0.8
    assert np.abs(got - expected).max() < 0.06
    assert ((got >= 0.5) == (expected >= 0.5)).mean() >= 0.9
    flipped = run_tflite(with_logistic_head(classifier, -weights, -bias, logit_limit=8.0), cells)
    assert np.abs(flipped - (1 - expected)).max() < 0.06  # the blast column really is the head's


def test_surgery_refuses_what_it_cannot_edit(classifier):
    with pytest.raises(ValueError, match="256"):
        with_logistic_head(classifier, np.zeros(10), 0.0, 8.0)
    with pytest.raises(ValueError, match="not a MobileNet v1 classifier"):
        cut_at_pool(cut_at_pool(classifier))


def test_the_floor_bounds_the_scale_of_dead_channels():
    x = np.random.default_rng(0).normal(0, 1, (200, 6))
    x[:, 0] *= 1e-4  # a nearly dead channel
    _, scale = floored_scaler(x)
    assert scale[0] == pytest.approx(STD_FLOOR * np.median(x.std(0)))
    assert np.allclose(scale[1:], x.std(0)[1:])


def test_the_device_feeds_a_raw_uint8_model_its_pixels(classifier, cells, tmp_path):
    """Google's input quantisation is [-1, 1] (scale 1/128, zero 128): the device must not re-quantise pixels."""
    from device.inference.classifier import CellClassifier
    from model_conversion.frozen_checks import run_tflite
    from model_conversion.metadata import embed_metadata

    weights = np.random.default_rng(5).normal(0, 0.2, 256)
    raw = with_logistic_head(classifier, weights, -1.0, 8.0)
    provenance = {"input_size": 128, "preprocessing": "field-v1", "field_radii": 7.0, "input_encoding": "raw-uint8"}
    path = tmp_path / "frozen.tflite"
    path.write_bytes(embed_metadata(raw, name="frozen_test", version="0", description="d", author="a", license="l",
                                    provenance=provenance))
    model = CellClassifier.load(path)
    assert model.input_size == 128
    assert np.allclose(model.predict(cells), run_tflite(raw, cells), atol=1e-6)
    provenance.pop("input_encoding")
    path.write_bytes(embed_metadata(raw, name="frozen_test", version="0", description="d", author="a", license="l",
                                    provenance=provenance))
    assert not np.allclose(CellClassifier.load(path).predict(cells), run_tflite(raw, cells), atol=1e-3)


def test_gptq_rounding_moves_the_logits_less_than_nearest_rounding(classifier, cells):
    """On real pooled features (calibration set), GPTQ's codes shift the logits far less than nearest codes."""
    from model_conversion.surgery import gptq_round

    cut = cut_at_pool(classifier)
    scale_in, zero_in = _interpreter(cut).get_output_details()[0]["quantization"]
    features = (_pooled(cut, cells).astype(np.float64) - zero_in) * scale_in
    weights = np.random.default_rng(5).normal(0, 0.3, features.shape[1])
    w_min, w_max = min(weights.min(), 0.0), max(weights.max(), 0.0)
    scale = (w_max - w_min) / 255.0
    zero = int(round(-w_min / scale))
    nearest = np.clip(np.round(weights / scale) + zero, 0, 255)
    gptq = gptq_round(weights, scale, zero, features).astype(np.float64)
    assert gptq.min() >= 0 and gptq.max() <= 255

    def drift(codes):
        return float(np.sqrt(np.mean((features @ ((codes - zero) * scale - weights)) ** 2)))

    assert drift(gptq) < 0.5 * drift(nearest)
