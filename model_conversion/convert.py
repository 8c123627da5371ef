"""Keras → LiteRT (.tflite) conversion: float32, or full-integer int8 with uint8 I/O.

The quantised model takes **uint8** pixels (0..255) and returns **uint8**
probabilities. uint8 rather than int8 input because camera crops already are
uint8: with the representative data spanning 0..255 the input scale is close to
1 and the zero point 0, so the device feeds pixels with no arithmetic. The
rescaling to [0, 1] stays inside the graph (see ``model.build_model``).

Conversion needs a fixed batch of 1: a dynamic batch dimension makes LiteRT
keep shape-polymorphic ops that XNNPACK does not take as a single partition.
``TFLiteConverter.from_concrete_functions`` cannot be used to pin the shape
with Keras 3 variables, so the model is cloned from its config with the batch
fixed and the weights copied over.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from device.store.atomic import write_atomic  # noqa: F401  (re-exported: export and evaluate write through it)

log = logging.getLogger("allscope.convert")


def _input_shape(model) -> tuple:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"expected a square RGB image model, input shape is {shape}")
    return shape


def with_batch_size_one(model):
    """Return ``model`` itself if its batch is already 1, else a clone with batch 1 and the same weights.

    The clone is made from the functional config with the InputLayer's batch
    pinned, so it works for any functional model (``build_model`` at any
    width) without having to infer the width from layer sizes or the name.
    """
    import keras

    if _input_shape(model)[0] == 1:
        return model
    config = model.get_config()
    pinned = 0
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            batch_shape = list(layer["config"]["batch_shape"])
            batch_shape[0] = 1
            layer["config"]["batch_shape"] = batch_shape
            pinned += 1
    if pinned != 1:
        raise ValueError(f"expected a functional model with one input, found {pinned} input layers")
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def _representative_dataset(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    for image in images:
        yield [image[np.newaxis].astype(np.float32)]


def convert_keras_model(model, representative_images: np.ndarray, quantize: bool) -> bytes:
    """Convert a Keras image classifier to a .tflite flatbuffer.

    ``quantize=False``: float32 model, float32 input in 0..255, float32 softmax.
    ``quantize=True``: full-integer int8 ops with uint8 input (raw pixels) and
    uint8 output; ``representative_images`` (N, S, S, 3) uint8 calibrate the
    activation ranges, so they should be real crops prepared exactly as on the
    device (a few hundred is plenty). Not used for float32, but validated.
    """
    import tensorflow as tf

    _, size, _, _ = _input_shape(model)
    images = np.asarray(representative_images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(
            f"representative_images must be uint8 (N, {size}, {size}, 3), got {images.dtype} {images.shape}")
    if quantize and len(images) == 0:
        raise ValueError("int8 quantisation needs at least one representative image")

    fixed = with_batch_size_one(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative_dataset(images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    tflite = converter.convert()
    log.info("converted %s to %s TFLite (%d bytes)", model.name, "int8" if quantize else "float32", len(tflite))
    return bytes(tflite)
