"""Read the labels and provenance packed into an allscope .tflite, with the standard library only.

``model_conversion/metadata.py`` embeds ``labels.txt`` and ``allscope.json``
with tflite-support's metadata populator, which appends them to the
flatbuffer as a zip archive. zipfile finds an archive from its end, so
``zipfile.ZipFile`` reads them without tensorflow or tflite-support (the
appliance has only a LiteRT runtime).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.errors import ModelLoadError

LABELS_FILE = "labels.txt"
PROVENANCE_FILE = "allscope.json"
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8
MAX_METADATA_FILE_BYTES = 1 << 20  # labels and provenance are tiny; refuse anything odd


@dataclass(frozen=True)
class ModelInfo:
    """What the model file says about itself, and which exact file it is."""

    path: Path
    labels: tuple[str, ...]
    provenance: dict[str, Any] = field(hash=False)
    sha256: str
    size_bytes: int

    @property
    def short_id(self) -> str:
        """First 12 hex digits of the sha256, for logs and result records."""
        return self.sha256[:12]


def read_model_file(path: str | Path) -> bytes:
    """The model's bytes; ModelLoadError (one line naming the file) when it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{path}: is a directory, not a model file") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read model file ({exc.strerror or exc})") from None


def model_info_from_bytes(data: bytes, path: str | Path) -> ModelInfo:
    """Parse the metadata of a model already read into memory (so the hash matches what is run)."""
    path = Path(path)
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelLoadError(f"{path}: not a TFLite model file")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ModelLoadError(
            f"{path}: no allscope metadata (file truncated, or not written by model_conversion.metadata)") from None
    with archive:
        labels_text = _read_member(archive, LABELS_FILE, path)
        provenance_text = _read_member(archive, PROVENANCE_FILE, path)

    labels = tuple(line.strip() for line in labels_text.splitlines() if line.strip())
    if not labels:
        raise ModelLoadError(f"{path}: {LABELS_FILE} in the model is empty")
    try:
        provenance = json.loads(provenance_text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: {PROVENANCE_FILE} in the model is not valid JSON ({exc.msg})") from None
    if not isinstance(provenance, dict):
        raise ModelLoadError(f"{path}: {PROVENANCE_FILE} in the model is not a JSON object")
    return ModelInfo(path=path, labels=labels, provenance=provenance,
                     sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def read_model_info(path: str | Path) -> ModelInfo:
    """Labels, provenance, sha256 and size of the allscope model at ``path``."""
    return model_info_from_bytes(read_model_file(path), path)


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> str:
    try:
        member = archive.getinfo(name)
    except KeyError:
        raise ModelLoadError(f"{path}: no allscope metadata ({name} missing from the model)") from None
    if member.file_size > MAX_METADATA_FILE_BYTES:
        raise ModelLoadError(f"{path}: {name} in the model is implausibly large ({member.file_size} bytes)")
    try:
        return archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: {name} in the model is corrupt ({exc})") from None
