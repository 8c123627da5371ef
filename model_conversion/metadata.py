"""Pack model card, labels and provenance into the .tflite (TFLite Metadata).

What goes in:

* the standard TFLite metadata flatbuffer written with tflite-support's
  ImageClassifier writer (name, version, description, author, licence, RGB
  input with normalisation mean 0 / std 1, classification output), so stock
  tools (Model Maker viewers, the Task library, Netron) understand the model;
* ``labels.txt`` — one label per line, index order (0 = normal, 1 = blast),
  attached to the output tensor as TENSOR_AXIS_LABELS;
* ``allscope.json`` — the caller's provenance dict (input size, width,
  preprocessing id, decision thresholds, training data and metrics summaries),
  attached to the model as a DESCRIPTIONS file.

Mean 0 / std 1 because the graph itself rescales 0..255 to 0..1: the model
(int8 with uint8 input, or float32) wants raw pixels, and a consumer applying
``(x - mean) / std`` must leave them untouched.

The populator stores associated files as a zip archive appended to the
flatbuffer, which is how ``device/inference/model_info.py`` reads them back with only
the standard library.

tflite-support 0.4.4 pins protobuf<4, which conflicts with tensorflow 2.21, so
it is installed with ``--no-deps``; its metadata module also links against
libusb-1.0 (``apt-get install libusb-1.0-0``). Only the writer modules are
imported, never the package's top level.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("allscope.metadata")

LABELS_FILE = "labels.txt"
PROVENANCE_FILE = "allscope.json"
DEFAULT_LABELS = ("normal", "blast")


def _import_writer():
    try:
        from tensorflow_lite_support.metadata import metadata_schema_py_generated as metadata_fb
        from tensorflow_lite_support.metadata.python.metadata_writers import (
            image_classifier,
            metadata_info,
            writer_utils,
        )
    except ImportError as exc:  # pragma: no cover - depends on the machine
        hint = " (apt-get install libusb-1.0-0)" if "libusb" in str(exc) else \
            " (pip install --no-deps tflite-support==0.4.4)"
        raise ImportError(f"tflite-support metadata writer unavailable: {exc}{hint}") from exc
    return metadata_fb, image_classifier, metadata_info, writer_utils


def _json_default(value: Any) -> Any:
    """Let numpy scalars/arrays and paths in the provenance serialise as plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"provenance value of type {type(value).__name__} is not JSON serialisable")


def provenance_json(provenance: Mapping[str, Any]) -> bytes:
    """The exact bytes stored as allscope.json (sorted keys, UTF-8)."""
    return json.dumps(dict(provenance), indent=2, sort_keys=True, ensure_ascii=False,
                      default=_json_default, allow_nan=False).encode("utf-8") + b"\n"


def embed_metadata(tflite_bytes: bytes, *, name: str, version: str, description: str, author: str,
                   license: str, labels: Sequence[str] = DEFAULT_LABELS,
                   provenance: Mapping[str, Any]) -> bytes:
    """Return ``tflite_bytes`` with TFLite metadata, labels.txt and allscope.json embedded.

    Raises ValueError when the labels do not match the output tensor, and
    RuntimeError if the result no longer loads in LiteRT.
    """
    metadata_fb, image_classifier, metadata_info, writer_utils = _import_writer()
    labels = [str(label) for label in labels]
    if not labels or any(not label or "\n" in label or label != label.strip() for label in labels):
        raise ValueError(f"labels must be non-empty single-line strings, got {labels!r}")
    model_buffer = bytearray(tflite_bytes)
    _check_label_count(model_buffer, len(labels))

    with tempfile.TemporaryDirectory(prefix="allscope-metadata-") as tmp:
        # The writer takes file paths and stores their basenames.
        labels_path = Path(tmp) / LABELS_FILE
        labels_path.write_text("\n".join(labels) + "\n", encoding="utf-8")
        provenance_path = Path(tmp) / PROVENANCE_FILE
        provenance_path.write_bytes(provenance_json(provenance))

        general = metadata_info.GeneralMd(name=name, version=version, description=description,
                                          author=author, licenses=license).create_metadata()
        provenance_file = metadata_info.AssociatedFileMd(
            file_path=str(provenance_path),
            description="allscope provenance: input size, width, preprocessing, thresholds, "
                        "training data and metrics summaries (JSON).",
            file_type=metadata_fb.AssociatedFileType.DESCRIPTIONS,
        ).create_metadata()
        general.associatedFiles = [provenance_file]

        input_md = metadata_info.InputImageTensorMd(
            name="image",
            description="RGB white blood cell crop, raw 0..255 pixels (scaling is inside the graph).",
            norm_mean=[0.0], norm_std=[1.0],
            color_space_type=metadata_fb.ColorSpaceType.RGB,
            tensor_type=writer_utils.get_input_tensor_types(model_buffer)[0],
        ).create_metadata()
        output_md = metadata_info.ClassificationTensorMd(
            name="probability",
            description="Softmax probabilities in label order (" + ", ".join(labels) + ").",
            label_files=[metadata_info.LabelFileMd(file_path=str(labels_path))],
            tensor_type=writer_utils.get_output_tensor_types(model_buffer)[0],
        ).create_metadata()

        writer = image_classifier.MetadataWriter.create_from_metadata(
            model_buffer, model_metadata=general, input_metadata=[input_md],
            output_metadata=[output_md], associated_files=[str(labels_path), str(provenance_path)])
        populated = bytes(writer.populate())

    _check_loads(populated)
    log.info("embedded metadata %s %s (%d labels, %d provenance keys): %d bytes",
             name, version, len(labels), len(provenance), len(populated))
    return populated


def _check_label_count(model_buffer: bytearray, num_labels: int) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(model_buffer))
    outputs = interpreter.get_output_details()
    if len(outputs) != 1 or int(outputs[0]["shape"][-1]) != num_labels:
        shapes = [tuple(int(d) for d in o["shape"]) for o in outputs]
        raise ValueError(f"{num_labels} labels do not match the model's output shape(s) {shapes}")


def _check_loads(tflite_bytes: bytes) -> None:
    """The populated model must still load and allocate in LiteRT (the runtime the device uses)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=tflite_bytes).allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise RuntimeError(f"model with embedded metadata no longer loads in LiteRT: {exc}") from exc
