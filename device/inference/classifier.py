"""Classify white blood cell crops with the allscope LiteRT model: one small interface.

``CellClassifier.load(path, DelegateConfig(...))`` once, then
``predict(crops) -> p_blast`` per frame. The runtime (ai-edge-litert, or
tflite_runtime on boards that only have that) is imported on first load, so
importing this module is cheap and needs neither.

Input and output types are read from the model, not assumed: uint8, int8 and
float32 inputs are fed raw 0..255 pixels through the input's own scale and
zero point (the graph rescales internally), and quantised outputs are
dequantised with the output's scale and zero point. A model whose provenance
says ``"input_encoding": "raw-uint8"`` (Google's quantisation-aware
MobileNets: scale 1/128, zero point 128, i.e. [-1, 1]) takes the uint8
pixels themselves as its input values, as it was trained.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from device.errors import ModelLoadError
from device.inference.delegates import BackendChoice, DelegateConfig, choose_backend, cpu_fallback
from device.inference.model_info import ModelInfo, model_info_from_bytes, read_model_file

log = logging.getLogger("allscope.inference")

SUPPORTED_TYPES = (np.uint8, np.int8, np.float32)
POSITIVE_LABEL = "blast"
INSTALL_HINT = "install the device runtime: pip install ai-edge-litert (or tflite-runtime where that is the only wheel)"


@dataclass(frozen=True)
class Runtime:
    name: str
    interpreter_class: type
    load_delegate: Callable[..., Any]


def load_runtime() -> Runtime:
    """ai_edge_litert if importable, else tflite_runtime (with a warning), else ModelLoadError."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
        return Runtime("ai-edge-litert", Interpreter, load_delegate)
    except ImportError as litert_error:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate
        except ImportError:
            raise ModelLoadError(f"no LiteRT runtime found; {INSTALL_HINT}") from None
        log.warning("ai_edge_litert unavailable (%s); using tflite_runtime", litert_error)
        return Runtime("tflite_runtime", Interpreter, load_delegate)


def load_interpreter_class() -> type:
    """The Interpreter class of the available runtime (see ``load_runtime``)."""
    return load_runtime().interpreter_class


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the runtime's native INFO lines ("Created TensorFlow Lite XNNPACK delegate for CPU.").

    They are written by C++ straight to file descriptor 2, where they would
    break the one-line-per-problem contract of the CLI. Kept when the
    allscope logger is at DEBUG level.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded use): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _make_interpreter(runtime: Runtime, data: bytes, choice: BackendChoice, num_threads: int):
    try:
        with _quiet_native_stderr():
            interpreter = runtime.interpreter_class(
                model_content=data, experimental_delegates=list(choice.delegates) or None, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        raise ModelLoadError(f"{choice.model_path}: not a loadable TFLite model ({reason})") from None
    return interpreter


def _quantization(details: dict, what: str, path: Path) -> tuple[float, int]:
    scale, zero_point = details["quantization"]
    if details["dtype"] != np.float32 and not scale > 0:
        raise ModelLoadError(f"{path}: {what} is {np.dtype(details['dtype']).name} without quantisation parameters")
    return float(scale), int(zero_point)


class CellClassifier:
    """A loaded allscope model. Use ``CellClassifier.load``; ``predict`` is safe to call from several threads."""

    def __init__(self, interpreter: Any, info: ModelInfo, backend: str, *, model_data: bytes,
                 runtime: str = "", fallback_reason: str | None = None):
        self._interpreter = interpreter
        self._model_data = model_data  # the interpreter reads from this buffer: keep it alive
        self._info = info
        self._backend = backend
        self._runtime = runtime
        self._fallback_reason = fallback_reason
        self._lock = threading.Lock()
        self._validate()

    @classmethod
    def load(cls, model_path: str | Path, delegate: DelegateConfig = DelegateConfig()) -> CellClassifier:
        """Load the model once, on the configured delegate or the CPU fallback.

        Raises ModelLoadError (one line naming the file) for a missing,
        corrupt or non-allscope model or one with unexpected tensors.
        """
        runtime = load_runtime()
        choice = choose_backend(delegate, model_path, runtime.load_delegate)
        data = read_model_file(choice.model_path)
        info = model_info_from_bytes(data, choice.model_path)
        try:
            interpreter = _make_interpreter(runtime, data, choice, delegate.num_threads)
        except ModelLoadError as exc:
            if not choice.delegates:
                raise
            choice = cpu_fallback(delegate, model_path, f"{choice.backend} delegate rejected the model ({exc})")
            data = read_model_file(choice.model_path)
            info = model_info_from_bytes(data, choice.model_path)
            interpreter = _make_interpreter(runtime, data, choice, delegate.num_threads)
        classifier = cls(interpreter, info, choice.backend, model_data=data, runtime=runtime.name,
                         fallback_reason=choice.fallback_reason)
        log.info("loaded %s (sha256 %s) on %s via %s", info.path.name, info.short_id, choice.backend, runtime.name)
        return classifier

    def _validate(self) -> None:
        path = self._info.path
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{path}: expected 1 input and 1 output tensor, found {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]

        shape = [int(d) for d in self._input["shape"]]
        signature = [int(d) for d in self._input.get("shape_signature", shape)]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] <= 0:
            raise ModelLoadError(f"{path}: expected input shape (batch, S, S, 3), found {tuple(shape)}")
        self._size = shape[1]
        self._dynamic_batch = signature[0] == -1
        self._batch = shape[0]
        if self._batch < 1:
            raise ModelLoadError(f"{path}: invalid input batch size {self._batch}")

        out_shape = [int(d) for d in self._output["shape"]]
        if len(out_shape) != 2 or out_shape[0] != shape[0] or out_shape[1] != len(self._info.labels):
            raise ModelLoadError(f"{path}: expected output shape ({shape[0]}, {len(self._info.labels)}) "
                                 f"for labels {list(self._info.labels)}, found {tuple(out_shape)}")
        for what, details in (("input", self._input), ("output", self._output)):
            if details["dtype"] not in SUPPORTED_TYPES:
                raise ModelLoadError(f"{path}: unsupported {what} type {np.dtype(details['dtype']).name} "
                                     "(expected uint8, int8 or float32)")
        self._in_scale, self._in_zero = _quantization(self._input, "input", path)
        self._raw_uint8 = self._info.provenance.get("input_encoding") == "raw-uint8"
        if self._raw_uint8 and self._input["dtype"] != np.uint8:
            raise ModelLoadError(f"{path}: provenance says input_encoding raw-uint8 but the input is "
                                 f"{np.dtype(self._input['dtype']).name}")
        self._out_scale, self._out_zero = _quantization(self._output, "output", path)

        if POSITIVE_LABEL not in self._info.labels:
            raise ModelLoadError(f"{path}: labels {list(self._info.labels)} have no {POSITIVE_LABEL!r} class")
        self._blast_index = self._info.labels.index(POSITIVE_LABEL)
        declared = self._info.provenance.get("input_size")
        if isinstance(declared, int) and declared != self._size:
            raise ModelLoadError(f"{path}: provenance says input_size {declared} but the model takes {self._size}")

    @property
    def input_size(self) -> int:
        return self._size

    @property
    def labels(self) -> tuple[str, ...]:
        return self._info.labels

    @property
    def backend(self) -> str:
        """What actually runs, e.g. "cpu-xnnpack/2 threads", "edgetpu", "external:/path/lib.so"."""
        return self._backend

    @property
    def fallback_reason(self) -> str | None:
        """Why the configured delegate is not in use (None when it is)."""
        return self._fallback_reason

    @property
    def runtime(self) -> str:
        return self._runtime

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _quantize_input(self, images: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._input["dtype"])
        if dtype == np.float32:
            return images.astype(np.float32)
        if dtype == np.uint8 and (self._in_scale == 1.0 and self._in_zero == 0 or self._raw_uint8):
            return images  # the usual case: raw pixels are the quantised values
        limits = np.iinfo(dtype)
        q = np.round(images.astype(np.float32) / self._in_scale) + self._in_zero
        return np.clip(q, limits.min, limits.max).astype(dtype)

    def _dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if raw.dtype == np.float32:
            return raw
        return (raw.astype(np.float32) - self._out_zero) * self._out_scale

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter
        interpreter.set_tensor(self._input["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(self._output["index"])

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, len(labels)) for uint8 crops (N, S, S, 3)."""
        images = np.asarray(images)
        size = self._size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 crops of shape (N, {size}, {size}, 3), got {images.dtype} {images.shape}")
        n = len(images)
        if n == 0:
            return np.empty((0, len(self.labels)), np.float32)
        x = self._quantize_input(images)
        with self._lock:
            if self._dynamic_batch:
                if self._batch != n:
                    self._interpreter.resize_tensor_input(self._input["index"], [n, size, size, 3])
                    self._interpreter.allocate_tensors()
                    self._batch = n
                raw = self._invoke(x)
            else:
                # Fixed batch (normally 1): run in chunks, padding the last one.
                step = self._batch
                parts = []
                for start in range(0, n, step):
                    chunk = x[start:start + step]
                    if len(chunk) < step:
                        chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], chunk.dtype)])
                    parts.append(self._invoke(chunk))
                raw = np.concatenate(parts)[:n]
        return self._dequantize_output(raw)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """p_blast (N,) float32 for uint8 crops (N, S, S, 3) of one frame."""
        return self.predict_proba(images)[:, self._blast_index].astype(np.float32)
