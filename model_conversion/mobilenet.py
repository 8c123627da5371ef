"""MobileNet v1 (Howard et al. 2017) for the device, initialised from Google's ImageNet int8 model.

``build_mobilenet(size, alpha=0.25)`` is a flat functional Keras model (so
``convert.with_batch_size_one`` can pin its batch): input rescaling inside
the graph (raw 0..255 pixels -> [-1, 1], as the pretrained model's uint8
input with scale 1/128, zero point 128), conv 3x3/2, thirteen depthwise-
separable blocks, global average pooling, dropout and a 2-class softmax.

``load_pretrained(model, tflite)`` reads the convolution weights of
``../shared/pretrained/mobilenet_v1_0.25_128_quant.tflite`` (Apache-2.0,
Google's Coral test_data) back as float: LiteRT's ``get_tensor_details()`` /
``get_tensor()`` with each tensor's quantisation (per-axis scales where
there are several). The file holds batch norm folded into the convolution
weights and a bias, so each Keras BatchNormalization starts as the identity
(gamma 1, moving mean 0, moving variance 1 - epsilon) with beta = the folded
bias; training then adapts them. The ImageNet classifier is not used.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# (pointwise filters at alpha 1, stride of the depthwise conv) of blocks 1..13.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
PRETRAINED_FILE = "mobilenet_v1_0.25_128_quant.tflite"
BN_EPSILON = 1e-3


def build_mobilenet(input_size: int = 128, alpha: float = 0.25, num_classes: int = 2, dropout: float = 0.3,
                    batch_size: int | None = None, bn_momentum: float = 0.9):
    """Keras MobileNet v1 taking raw 0..255 RGB, returning softmax (layer names follow the TF checkpoint)."""
    import keras
    from keras import layers

    def bn_relu(x, name):
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu")(x)

    inputs = keras.Input(shape=(input_size, input_size, 3), batch_size=batch_size, name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    x = layers.Conv2D(int(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="Conv2d_0")(x)
    x = bn_relu(x, "Conv2d_0")
    for i, (filters, stride) in enumerate(BLOCKS, start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                   name=f"Conv2d_{i}_depthwise")(x)
        x = bn_relu(x, f"Conv2d_{i}_depthwise")
        x = layers.Conv2D(int(filters * alpha), 1, use_bias=False, name=f"Conv2d_{i}_pointwise")(x)
        x = bn_relu(x, f"Conv2d_{i}_pointwise")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_v1_{alpha:g}_s{input_size}")


def _dequantise(details: dict, raw: np.ndarray) -> np.ndarray:
    q = details["quantization_parameters"]
    scales, zeros, axis = np.asarray(q["scales"], np.float64), np.asarray(q["zero_points"]), q["quantized_dimension"]
    if scales.size == 0:
        return raw.astype(np.float32)
    shape = [1] * raw.ndim
    if scales.size > 1:
        shape[axis] = scales.size
    return ((raw.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def read_pretrained(tflite_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{"Conv2d_N[_depthwise|_pointwise]": {"weights": float array (TFLite layout), "bias": float}}."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    out: dict[str, dict[str, np.ndarray]] = {}
    for details in interpreter.get_tensor_details():
        name = details["name"]
        weights = re.search(r"MobilenetV1/(Conv2d_\d+(?:_depthwise|_pointwise)?)/weights_quant/", name)
        bias = re.fullmatch(r"MobilenetV1/MobilenetV1/(Conv2d_\d+(?:_depthwise|_pointwise)?)/BatchNorm_Fold/bias",
                            name)
        if weights and ";" in name and "Relu" in name:
            continue  # an activation whose fused name mentions the weights
        if weights:
            out.setdefault(weights.group(1), {})["weights"] = _dequantise(details, interpreter.get_tensor(details["index"]))
        elif bias:
            out.setdefault(bias.group(1), {})["bias"] = _dequantise(details, interpreter.get_tensor(details["index"]))
    return out


def load_pretrained(model, tflite_path: str | Path) -> int:
    """Copy the pretrained convolutions into ``model`` (from ``build_mobilenet``); returns layers set."""
    tensors = read_pretrained(tflite_path)
    loaded = 0
    for name, parts in tensors.items():
        if "weights" not in parts or "bias" not in parts:
            continue
        try:
            conv = model.get_layer(name)
            bn = model.get_layer(f"{name}_bn")
        except ValueError:
            continue
        w = parts["weights"]
        if name.endswith("_depthwise"):
            kernel = np.transpose(w, (1, 2, 3, 0))  # (1, h, w, c) -> (h, w, c, 1)
        else:
            kernel = np.transpose(w, (1, 2, 3, 0))  # (out, h, w, in) -> (h, w, in, out)
        expected = tuple(conv.get_weights()[0].shape)
        if kernel.shape != expected:
            raise ValueError(f"{name}: pretrained kernel {kernel.shape} does not fit {expected}")
        conv.set_weights([kernel])
        channels = kernel.shape[2] if name.endswith("_depthwise") else kernel.shape[3]
        bn.set_weights([np.ones(channels, np.float32), parts["bias"].astype(np.float32),
                        np.zeros(channels, np.float32), np.full(channels, 1.0 - BN_EPSILON, np.float32)])
        loaded += 1
    return loaded
