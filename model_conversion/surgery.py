"""Edit Google's uint8 MobileNet v1 classifiers as flatbuffers: cut at the pool, or swap in our head.

Google's ``mobilenet_v1_*_quant.tflite`` (``../shared/pretrained``, Apache-2.0)
were trained quantisation-aware: their uint8 network *is* the reference, and
rebuilding it in Keras and re-quantising it after training loses ~12 % of the
pooled features (median relative error on prepared cells; see
CROSS_SOURCE.md). So the frozen backbone is not rebuilt: the file itself is
edited with the TFLite schema's object API.

Both files end the same way: ``AVERAGE_POOL_2D`` (pooled features, uint8,
scale 0.0235) -> ``CONV_2D`` 1x1 (1001 ImageNet logits) -> ``RESHAPE`` ->
``SOFTMAX``.

* :func:`cut_at_pool`: the pooled features become the output (the ops after
  the pool are dropped): a frozen feature extractor.
* :func:`with_logistic_head`: the 1x1 convolution keeps its place but holds
  two classes, ``normal`` (all-zero weights, logit 0) and ``blast`` (the
  logistic head's weights), so the softmax gives exactly the logistic
  regression's sigmoid: p_blast = 1 / (1 + exp(-(w.x + b))). Weights are
  uint8 (per-tensor, asymmetric, as the rest of the file), the bias int32 at
  input scale x weight scale, the logits' scale set from the range the head
  reaches on its training cells.

Everything before the head is Google's network bit for bit.
"""

from __future__ import annotations

import numpy as np

POOL, HEAD, RESHAPE, SOFTMAX = "AVERAGE_POOL_2D", "CONV_2D", "RESHAPE", "SOFTMAX"
SOFTMAX_SCALE = 1.0 / 256.0  # TFLite's fixed uint8 softmax output quantisation


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def _load(model_bytes: bytes):
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_bytes), 0))


def _pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _op_names(model) -> list[str]:
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append(names[max(code.builtinCode, code.deprecatedBuiltinCode)])
    return out


def _tail(model):
    """(pool op, head op, reshape op, softmax op) of a MobileNet v1 classifier, checked."""
    ops = model.subgraphs[0].operators
    names = _op_names(model)
    if len(ops) < 4 or names[-4:] != [POOL, HEAD, RESHAPE, SOFTMAX]:
        raise ValueError(f"not a MobileNet v1 classifier ending in pool/conv/reshape/softmax: {names[-4:]}")
    return ops[-4:]


def _drop_metadata(model) -> None:
    """Google's TFLITE_METADATA describes 1001 ImageNet labels: wrong once the output changes."""
    model.metadata = [m for m in (model.metadata or []) if m.name != b"TFLITE_METADATA"]


def pooled_width(model_bytes: bytes) -> int:
    model = _load(model_bytes)
    pool = _tail(model)[0]
    return int(model.subgraphs[0].tensors[pool.outputs[0]].shape[-1])


def cut_at_pool(classifier: bytes) -> bytes:
    """The classifier with its pooled features (uint8, 1x1x1xC) as the only output."""
    model = _load(classifier)
    graph = model.subgraphs[0]
    pool = _tail(model)[0]
    graph.operators = graph.operators[:-3]
    graph.outputs = [pool.outputs[0]]
    _drop_metadata(model)
    return _pack(model)


def _set(graph, model, index: int, data: np.ndarray, shape: tuple[int, ...]) -> None:
    tensor = graph.tensors[index]
    tensor.shape = list(shape)
    tensor.shapeSignature = None
    model.buffers[tensor.buffer].data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)


def _quant(tensor, scale: float, zero: int) -> None:
    tensor.quantization.scale = [float(scale)]
    tensor.quantization.zeroPoint = [int(zero)]
    tensor.quantization.min = None
    tensor.quantization.max = None


def gptq_round(weights: np.ndarray, scale: float, zero: int, features: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """uint8 codes of ``weights`` rounded so that ``features @ weights`` moves least (OPTQ/GPTQ, one row).

    Rounding each weight to its nearest code ignores that the errors add up over
    the features: with a per-tensor scale the head's logit then drifts by up to
    ~0.1 on real cells (uint8 vs float labels disagreed on 1.8 % of cells). GPTQ
    (Frantar et al., ICLR 2023) rounds one weight at a time and moves the weights
    not yet rounded to cancel the error, weighted by the inverse of the features'
    second-moment matrix (damped by ``damp`` x its mean diagonal).
    """
    x = np.asarray(features, np.float64)
    h = x.T @ x / len(x)
    h += damp * float(np.mean(np.diag(h))) * np.eye(len(h))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T
    w = np.asarray(weights, np.float64).copy()
    codes = np.zeros(len(w), np.float64)
    for i in range(len(w)):
        codes[i] = np.clip(np.round(w[i] / scale) + zero, 0, 255)
        err = (w[i] - (codes[i] - zero) * scale) / upper[i, i]
        w[i + 1:] -= err * upper[i, i + 1:]
    return codes.astype(np.uint8)


def with_logistic_head(classifier: bytes, weights: np.ndarray, bias: float, logit_limit: float,
                       calibration: np.ndarray | None = None) -> bytes:
    """The classifier answering (normal, blast) with p_blast = sigmoid(weights . pooled + bias).

    ``weights`` act on the dequantised pooled features (length C); ``logit_limit``
    bounds |logit| for the logits' uint8 scale (beyond it the softmax saturates
    anyway: sigmoid(12) = 0.999994). ``calibration``: pooled features of real
    cells (N x C); given, the weights are rounded by ``gptq_round`` instead of
    to the nearest code.
    """
    model = _load(classifier)
    graph = model.subgraphs[0]
    pool, head, reshape, softmax = _tail(model)
    width = int(graph.tensors[pool.outputs[0]].shape[-1])
    weights = np.asarray(weights, np.float64).reshape(-1)
    if weights.size != width:
        raise ValueError(f"head has {weights.size} weights, the pooled features have {width}")
    in_scale = float(graph.tensors[pool.outputs[0]].quantization.scale[0])

    w_min, w_max = min(float(weights.min()), 0.0), max(float(weights.max()), 0.0)
    w_scale = max(w_max - w_min, 1e-12) / 255.0
    w_zero = int(np.clip(round(-w_min / w_scale), 0, 255))
    rows = np.zeros((2, width), np.float64)
    rows[1] = weights
    q_weights = np.clip(np.round(rows / w_scale) + w_zero, 0, 255).astype(np.uint8)
    if calibration is not None:
        q_weights[1] = gptq_round(weights, w_scale, w_zero, calibration)
    q_bias = np.array([0, round(bias / (in_scale * w_scale))], np.int32)

    kernel, bias_index = head.inputs[1], head.inputs[2]
    _set(graph, model, kernel, q_weights.reshape(2, 1, 1, width), (2, 1, 1, width))
    _quant(graph.tensors[kernel], w_scale, w_zero)
    _set(graph, model, bias_index, q_bias, (2,))
    _quant(graph.tensors[bias_index], in_scale * w_scale, 0)

    logit_scale = 2.0 * float(logit_limit) / 255.0
    for index in (head.outputs[0], reshape.outputs[0]):
        graph.tensors[index].shape = [1, 1, 1, 2] if index == head.outputs[0] else [1, 2]
        graph.tensors[index].shapeSignature = None
        _quant(graph.tensors[index], logit_scale, 128)
    _set(graph, model, reshape.inputs[1], np.array([1, 2], np.int32), (2,))
    out = graph.tensors[softmax.outputs[0]]
    out.shape, out.shapeSignature = [1, 2], None
    _quant(out, SOFTMAX_SCALE, 0)
    _drop_metadata(model)
    return _pack(model)
