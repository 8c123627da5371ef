"""End to end on a tiny real model: train → convert (float32, int8) → embed metadata → classify on the device side.

The model (32 px, width 0.125) is trained for two epochs on synthetic crops
that are easy to separate (a large purple "blast" nucleus vs a small red
blob on a pink background), so the checks are about the pipeline, not the
task: TFLite must agree with Keras, int8 with float32, and the device side
must read back exactly what was embedded. Delegate libraries cannot exist
here, so the fallback tests point at missing libraries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from device.errors import ModelLoadError
from device.inference.classifier import CellClassifier, load_interpreter_class, load_runtime
from device.inference.delegates import DelegateConfig, DelegateConfigError
from device.inference.model_info import read_model_info

SIZE = 32
WIDTH = 0.125
REPO_ROOT = Path(__file__).resolve().parents[2]
PROVENANCE = {
    "input_size": SIZE,
    "width": WIDTH,
    "preprocessing": "synthetic-test-v1",
    "thresholds": {"blast": 0.5, "review_band": [0.3, 0.7]},
    "training_data": {"source": "synthetic discs", "n_train": 256, "classes": {"normal": 128, "blast": 128}},
    "metrics": {"note": "test model, no clinical meaning"},
}


def synthetic_crops(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Pink background; label 1 = large purple disc ("blast"), label 0 = small red disc."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.float32)
    for i, label in enumerate(labels):
        image = np.array([225, 195, 205], np.float32) + rng.normal(0, 12, (size, size, 3))
        cy, cx = rng.uniform(10, size - 10, 2)
        radius, colour = (rng.uniform(6, 10), (90, 50, 150)) if label else (rng.uniform(3, 5), (200, 100, 110))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        image[disc] = np.array(colour, np.float32) + rng.normal(0, 12, (int(disc.sum()), 3))
        images[i] = image
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Train once, convert to float32 / int8 / dynamic-batch float32, embed metadata, write to disk."""
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    from model_conversion.convert import convert_keras_model, write_atomic
    from model_conversion.metadata import embed_metadata
    from model_conversion.model import build_model

    keras.utils.set_random_seed(0)
    x_train, y_train = synthetic_crops(256, seed=1)
    x_test, y_test = synthetic_crops(200, seed=2)

    model = build_model(input_size=SIZE, width=WIDTH)
    for layer in model.layers:  # two short epochs: let the BN moving statistics catch up
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", jit_compile=False)
    model.fit(x_train.astype(np.float32), y_train, batch_size=16, epochs=2, verbose=0)
    keras_p = np.asarray(model(x_test.astype(np.float32), training=False))[:, 1]

    out = tmp_path_factory.mktemp("models")
    card = dict(version="0.0.1-test", description="allscope test model", author="allscope tests",
                license="Apache-2.0", provenance=PROVENANCE)
    raw_int8 = convert_keras_model(model, x_train[:64], quantize=True)
    raw_float = convert_keras_model(model, x_train[:64], quantize=False)
    dynamic = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # batch left dynamic on purpose

    paths = {}
    for name, raw in (("int8", raw_int8), ("float32", raw_float), ("dynamic", dynamic)):
        paths[name] = out / f"allscope_{name}.tflite"
        write_atomic(paths[name], embed_metadata(raw, name=f"allscope-{name}", **card))
    paths["no_metadata"] = out / "plain.tflite"
    write_atomic(paths["no_metadata"], raw_int8)
    return types.SimpleNamespace(paths=paths, x_test=x_test, y_test=y_test, keras_p=keras_p, dir=out)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a >= 0.5) == (b >= 0.5)))


def test_int8_model_takes_uint8_pixels_and_returns_uint8(artifacts):
    interpreter = load_interpreter_class()(model_path=str(artifacts.paths["int8"]))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    assert list(inp["shape"]) == [1, SIZE, SIZE, 3]
    # Uint8 pixels feed straight in (scale ~1, zero point ~0) because rescaling is in the graph.
    assert inp["quantization"][0] == pytest.approx(1.0, rel=0.05) and abs(inp["quantization"][1]) <= 2


def test_float32_and_int8_agree_with_keras_and_separate_classes(artifacts):
    float_clf = CellClassifier.load(artifacts.paths["float32"])
    int8_clf = CellClassifier.load(artifacts.paths["int8"])
    p_float = float_clf.predict(artifacts.x_test)
    p_int8 = int8_clf.predict(artifacts.x_test)
    assert p_float.shape == p_int8.shape == (len(artifacts.x_test),)
    assert p_int8.dtype == np.float32
    np.testing.assert_allclose(p_float, artifacts.keras_p, atol=1e-3)
    assert agreement(p_float, artifacts.keras_p) >= 0.99
    assert agreement(p_int8, p_float) >= 0.9
    accuracy = np.mean((p_int8 >= 0.5) == artifacts.y_test)
    assert accuracy >= 0.9, f"int8 accuracy {accuracy:.2f}"
    assert p_int8[artifacts.y_test == 1].mean() - p_int8[artifacts.y_test == 0].mean() > 0.5


def test_dynamic_batch_model_predicts_whole_batch_like_batch_one(artifacts):
    dynamic = CellClassifier.load(artifacts.paths["dynamic"])
    fixed = CellClassifier.load(artifacts.paths["float32"])
    crops = artifacts.x_test[:7]
    np.testing.assert_allclose(dynamic.predict(crops), fixed.predict(crops), atol=1e-5)
    np.testing.assert_allclose(dynamic.predict(crops[:3]), fixed.predict(crops[:3]), atol=1e-5)


def test_classifier_properties_and_input_checks(artifacts):
    clf = CellClassifier.load(artifacts.paths["int8"], DelegateConfig(num_threads=2))
    assert clf.input_size == SIZE
    assert clf.labels == ("normal", "blast")
    assert clf.backend == "cpu-xnnpack/2 threads"
    assert clf.fallback_reason is None
    assert clf.predict(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0,)
    probs = clf.predict_proba(artifacts.x_test[:4])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict(artifacts.x_test[:2].astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        clf.predict(np.zeros((2, SIZE + 1, SIZE + 1, 3), np.uint8))


def test_model_info_reads_labels_provenance_and_hash(artifacts):
    path = artifacts.paths["int8"]
    info = read_model_info(path)
    data = path.read_bytes()
    assert info.labels == ("normal", "blast")
    assert info.provenance == PROVENANCE
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)
    assert info.path == path
    assert CellClassifier.load(path).info == info


def test_standard_tflite_metadata_is_written(artifacts):
    pytest.importorskip("tensorflow_lite_support")
    import json

    from tensorflow_lite_support.metadata.python import metadata as _metadata

    displayer = _metadata.MetadataDisplayer.with_model_file(str(artifacts.paths["int8"]))
    meta = json.loads(displayer.get_metadata_json())
    assert meta["name"] == "allscope-int8" and meta["version"] == "0.0.1-test"
    assert meta["license"] == "Apache-2.0"
    norm = meta["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"][0]["options"]
    assert norm == {"mean": [0.0], "std": [1.0]}
    assert sorted(displayer.get_packed_associated_file_list()) == ["allscope.json", "labels.txt"]


def test_device_side_needs_no_tensorflow(artifacts):
    code = ("import sys, numpy as np\n"
            "from device.inference.classifier import CellClassifier\n"
            f"c = CellClassifier.load({str(artifacts.paths['int8'])!r})\n"
            f"c.predict(np.zeros((2, {SIZE}, {SIZE}, 3), np.uint8))\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_lite_support', 'keras')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("damage", ["missing", "text", "truncated", "broken_flatbuffer", "no_metadata"])
def test_bad_model_files_raise_one_line_model_load_error(artifacts, tmp_path, damage):
    good = artifacts.paths["int8"].read_bytes()
    path = tmp_path / "model.tflite"
    if damage == "text":
        path.write_text("not a model\n")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "broken_flatbuffer":
        # Root table offset pointing past the end: the identifier and appended zip are intact.
        path.write_bytes(b"\xff\xff\xff\x7f" + good[4:])
    elif damage == "no_metadata":
        path = artifacts.paths["no_metadata"]
    with pytest.raises(ModelLoadError) as excinfo:
        CellClassifier.load(path)
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message
    if damage != "broken_flatbuffer":
        with pytest.raises(ModelLoadError):
            read_model_info(path)


def warnings_from(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "allscope.inference" and r.levelno == logging.WARNING]


def test_edgetpu_without_library_falls_back_to_cpu_with_one_warning(artifacts, tmp_path, caplog):
    cpu_model = tmp_path / "allscope.tflite"
    cpu_model.write_bytes(artifacts.paths["int8"].read_bytes())
    (tmp_path / "allscope_edgetpu.tflite").write_bytes(cpu_model.read_bytes())
    config = DelegateConfig(kind="edgetpu", num_threads=2, library=str(tmp_path / "libedgetpu.so.1"),
                            options={"device": "usb"})
    with caplog.at_level(logging.WARNING, logger="allscope.inference"):
        clf = CellClassifier.load(cpu_model, config)
    assert clf.backend == "cpu-xnnpack/2 threads"
    assert clf.info.path == cpu_model
    assert "edgetpu" in clf.fallback_reason and "libedgetpu.so.1" in clf.fallback_reason
    (warning,) = warnings_from(caplog)
    assert "falling back to cpu-xnnpack/2 threads" in warning and "\n" not in warning
    reference = CellClassifier.load(artifacts.paths["int8"])
    np.testing.assert_array_equal(clf.predict(artifacts.x_test[:8]), reference.predict(artifacts.x_test[:8]))


def test_edgetpu_without_compiled_model_falls_back_to_cpu(artifacts, caplog):
    with caplog.at_level(logging.WARNING, logger="allscope.inference"):
        clf = CellClassifier.load(artifacts.paths["int8"], DelegateConfig(kind="edgetpu"))
    assert clf.backend == "cpu-xnnpack/1 thread"
    (warning,) = warnings_from(caplog)
    assert "allscope_int8_edgetpu.tflite" in warning


def test_edgetpu_model_without_cpu_model_is_a_model_load_error(artifacts, tmp_path):
    compiled = tmp_path / "only_edgetpu.tflite"
    compiled.write_bytes(artifacts.paths["int8"].read_bytes())
    config = DelegateConfig(kind="edgetpu", library=str(tmp_path / "missing.so"))
    with pytest.raises(ModelLoadError, match="only.tflite"):
        CellClassifier.load(compiled, config)


def test_external_delegate_missing_library_falls_back_to_cpu(artifacts, tmp_path, caplog):
    library = str(tmp_path / "libvendor_delegate.so")
    with caplog.at_level(logging.WARNING, logger="allscope.inference"):
        clf = CellClassifier.load(artifacts.paths["int8"], DelegateConfig(kind="external", library=library,
                                                                          options={"cache": "/tmp"}))
    assert clf.backend == "cpu-xnnpack/1 thread"
    (warning,) = warnings_from(caplog)
    assert f"external:{library} delegate unavailable" in warning


def test_delegate_config_validation():
    with pytest.raises(DelegateConfigError, match="unknown delegate kind"):
        DelegateConfig(kind="gpu-magic")
    with pytest.raises(DelegateConfigError, match="library"):
        DelegateConfig(kind="external")
    with pytest.raises(DelegateConfigError, match="num_threads"):
        DelegateConfig(num_threads=0)
    with pytest.raises(DelegateConfigError, match="threads"):
        DelegateConfig.from_mapping({"kind": "cpu", "threads": 2})
    assert DelegateConfig.from_mapping({"kind": "cpu", "num_threads": 2}) == DelegateConfig(num_threads=2)


def test_runtime_falls_back_to_tflite_runtime_then_errors(monkeypatch, caplog):
    real_class = load_interpreter_class()
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter, fake.load_delegate = real_class, lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # None makes the import fail
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    with caplog.at_level(logging.WARNING, logger="allscope.inference"):
        runtime = load_runtime()
    assert runtime.name == "tflite_runtime" and runtime.interpreter_class is real_class
    assert len(warnings_from(caplog)) == 1
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ModelLoadError, match="pip install ai-edge-litert"):
        load_interpreter_class()


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path):
    from model_conversion.convert import write_atomic

    target = tmp_path / "model.tflite"
    write_atomic(target, b"first")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    os.chmod(target, 0o640)
    write_atomic(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
