"""Cross-source training of the device network: pretrained MobileNet, loss weights, folds, lab augmentation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="tensorflow-cpu (the train extra) is not installed")

from model_conversion.cnn_crosssource import cap_indices, folds, loss_weights  # noqa: E402
from model_conversion.data import Sample  # noqa: E402


@pytest.fixture(scope="module")
def pretrained() -> Path:
    from model_conversion.embed import find_pretrained
    from model_conversion.mobilenet import PRETRAINED_FILE

    try:
        path = find_pretrained() / PRETRAINED_FILE
    except FileNotFoundError:
        pytest.skip("../shared/pretrained not found (set ALLSCOPE_PRETRAINED)")
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


def test_pretrained_weights_reproduce_the_int8_imagenet_classifier(pretrained, shared_data):
    """Dequantised weights in the Keras MobileNet give the int8 model's ImageNet top class on real cells."""
    import cv2
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from device.core.imageio import load_image
    from model_conversion.mobilenet import _dequantise, build_mobilenet, load_pretrained

    model = build_mobilenet(128)
    assert load_pretrained(model, pretrained) == 27  # conv 0 + 13 depthwise + 13 pointwise
    features = keras.Model(model.input, model.get_layer("gap").output)
    interpreter = Interpreter(model_path=str(pretrained), num_threads=1)
    interpreter.allocate_tensors()
    for d in interpreter.get_tensor_details():
        if "Logits" in d["name"] and "weights_quant" in d["name"] and len(d["shape"]) == 4:
            w = _dequantise(d, interpreter.get_tensor(d["index"])).reshape(1001, -1)
        if "Logits" in d["name"] and d["name"].endswith("biases"):
            b = _dequantise(d, interpreter.get_tensor(d["index"]))
    with open(shared_data / "all-idb2" / "labels.csv", newline="") as handle:
        files = [row["file"] for row in csv.DictReader(handle)][::40][:5]
    agree = 0
    for name in files:
        image = cv2.resize(load_image(shared_data / "all-idb2" / name), (128, 128))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
        logits = w @ features(image[None].astype(np.float32)).numpy()[0] + b
        agree += int(np.argmax(logits) == np.argmax(reference))
    assert agree >= 4, f"top-1 agreed on {agree}/5 cells only: weights mis-mapped"


def test_untrained_init_does_not_reproduce_it(pretrained):
    """The same check must fail without the pretrained weights (the test above can fail)."""
    from model_conversion.mobilenet import build_mobilenet, read_pretrained

    model = build_mobilenet(128)
    kernel = model.get_layer("Conv2d_1_pointwise").get_weights()[0]
    stored = np.transpose(read_pretrained(pretrained)["Conv2d_1_pointwise"]["weights"], (1, 2, 3, 0))
    assert kernel.shape == stored.shape and not np.allclose(kernel, stored, atol=1e-3)


def test_loss_weights_make_sources_and_classes_equal_with_cnmc_halved():
    units = ["all-idb"] * 10 + ["c-nmc"] * 40 + ["pbc"] * 50
    y = np.array([1] * 5 + [0] * 5 + [1] * 30 + [0] * 10 + [0] * 50)
    w = loss_weights(units, y, cnmc_weight=0.5)
    assert w.mean() == pytest.approx(1.0)
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum())
    u = np.array(units)
    # Blasts: ALL-IDB (weight 1) teaches twice as much as C-NMC (weight 0.5).
    assert w[(u == "all-idb") & (y == 1)].sum() == pytest.approx(2 * w[(u == "c-nmc") & (y == 1)].sum())


def _samples():
    out = []
    for i in range(30):
        out.append(Sample(Path(f"a{i}.png"), i % 2, "all-idb2", None, "x", f"a{i}"))
    for i in range(50):
        out.append(Sample(Path(f"p{i}.png"), 0, "pbc-normal", None, "x", f"p{i}"))
    for i in range(40):
        subject = f"S{i % 5}" if i % 4 else f"H{i % 3}"
        out.append(Sample(Path(f"c{i}.png"), int(subject.startswith("S")), "c-nmc-2019", subject, "x", subject))
    return out


def test_folds_never_train_on_what_they_test_and_cnmc_is_subject_disjoint():
    samples = _samples()
    plan = folds(samples)
    names = [name for name, _, _ in plan]
    assert names[0] == "all-idb" and names[-1].startswith("c-nmc")
    for name, train, test in plan:
        assert not set(train) & set(test)
        if len(test):
            assert len(set(train) | set(test)) == len(samples)
    _, train, test = plan[-1]
    assert {samples[i].subject for i in train} & {samples[i].subject for i in test} == set()
    assert all(samples[i].source == "c-nmc-2019" for i in test)


def test_cap_keeps_small_collections_whole():
    samples = _samples() + [Sample(Path(f"x{i}.png"), 0, "pbc-normal", None, "x", f"x{i}") for i in range(700)]
    kept = cap_indices(samples, np.arange(len(samples)))
    sources = [samples[i].source for i in kept]
    assert sources.count("pbc-normal") == 600 and sources.count("all-idb2") == 30
    np.testing.assert_array_equal(kept, cap_indices(samples, np.arange(len(samples))))  # seeded


def test_lab_augmentation_keeps_the_field_and_the_range():
    from model_conversion.augment import augment_batch

    tf.random.set_seed(3)
    rng = np.random.default_rng(0)
    cells = rng.uniform(60, 230, (16, 64, 64, 3)).astype(np.float32)
    for recipe in ("lab", "lab-light"):
        out = augment_batch(tf.constant(cells), recipe).numpy()
        assert out.shape == cells.shape and out.min() >= 0.0 and out.max() <= 255.0
        # No black mask: the smear background of a field stays (nearly no pure-black pixels).
        assert (out.max(axis=-1) == 0).mean() < 0.01
        assert np.abs(out - cells).mean() > 1.0
    grey = augment_batch(tf.constant(np.repeat(cells[:1], 64, axis=0)), "lab").numpy()
    # Noise and JPEG come after the greyscale step: "grey" = channels within a few levels on average.
    is_grey = np.abs(grey[..., 0] - grey[..., 2]).reshape(64, -1).mean(axis=1) < 8.0
    assert 0 < is_grey.sum() < 32  # the greyscale share (15 %) is there, not everywhere


def test_card_predictions_are_probabilities_of_the_shipped_int8_model(shared_data):
    """The card's int8 figures dequantise the uint8 output (raw 0..255 would pass as 'probabilities')."""
    from device.core.cellprep import prepare_cell
    from device.core.imageio import load_image
    from device.resources import PAPER_MODEL as DEFAULT_MODEL  # the paper's network: a cellprep model at 96 px
    from model_conversion.cnn_crosssource import int8_predict
    from model_conversion.cross_card import _tflite_predict, ms_per_cell

    with open(shared_data / "all-idb2" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::26]
    cells = np.stack([prepare_cell(load_image(shared_data / "all-idb2" / r["file"]), 96).image for r in rows])
    p = _tflite_predict(DEFAULT_MODEL, cells)
    assert 0.0 <= p.min() and p.max() <= 1.0 and p.max() > p.min()
    np.testing.assert_allclose(p, int8_predict(DEFAULT_MODEL.read_bytes(), cells), atol=1e-6)
    assert 0.0 < ms_per_cell(DEFAULT_MODEL, cells, repeats=1) < 50.0
