"""Read the labels and provenance packed into an allscope .tflite, with the standard library only.

``model_conversion/metadata.py`` embeds ``labels.txt`` and ``allscope.json``
with tflite-support's metadata populator, which appends them to the
flatbuffer as a zip archive. zipfile finds an archive from its end, so
``zipfile.ZipFile`` reads them without tensorflow or tflite-support (the
appliance has only a LiteRT runtime). The metadata's name and version (the
``TFLITE_METADATA`` flatbuffer inside the model) are read with ``struct``.

:meth:`ModelInfo.identity` is what a capture records about the model that
analysed it (see ``device/services/report_model.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
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
    name: str = ""     # the TFLite metadata's name, e.g. "allscope_blast_int8" ("" when the file has none)
    version: str = ""  # the TFLite metadata's version, e.g. "1.0.0"

    @property
    def short_id(self) -> str:
        """First 12 hex digits of the sha256, for logs and result records."""
        return self.sha256[:12]

    def identity(self) -> dict[str, Any]:
        """Which model this is, as JSON: what a capture records about the model that produced its results.

        Everything comes from the file itself (its bytes' hash, its metadata and embedded provenance), never
        from the shipped model card: a report can then name any model, shipped or not.
        """
        p = self.provenance
        training = p.get("training") if isinstance(p.get("training"), dict) else {}
        validation = p.get("validation") if isinstance(p.get("validation"), dict) else None
        return {
            "name": self.name or self.path.stem, "variant": str(p.get("quantization") or ""),
            "version": self.version, "created": str(p.get("created") or ""),
            "file": self.path.name, "sha256": self.sha256, "short_id": self.short_id, "size_bytes": self.size_bytes,
            "input_size": p.get("input_size"), "preprocessing": str(p.get("preprocessing") or ""),
            "architecture": str(p.get("model") or ""), "intended_use": str(p.get("intended_use") or ""),
            "labels": list(self.labels), "decision": p.get("decision") if isinstance(p.get("decision"), dict) else None,
            "training_cells_by_source": training.get("cells_by_source") or {},
            "validation": validation,  # the headline figures embedded in the file (None when it has none)
        }


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
    general = tflite_metadata_general(data)
    return ModelInfo(path=path, labels=labels, provenance=provenance,
                     sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                     name=general.get("name", ""), version=general.get("version", ""))


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


# --- the TFLite metadata's name and version (flatbuffers, read with struct) ------------------------------
# tflite schema: Model { version 0, operator_codes 1, subgraphs 2, description 3, buffers 4, metadata_buffer 5,
# metadata 6 }, Metadata { name 0, buffer 1 }, Buffer { data 0, offset 1, size 2 }; metadata schema:
# ModelMetadata { name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5 }.
TFLITE_METADATA = "TFLITE_METADATA"
_GENERAL_FIELDS = {"name": 0, "description": 1, "version": 2, "author": 4, "license": 5}


def _unpack(data: bytes, fmt: str, pos: int) -> int:
    if pos < 0 or pos + struct.calcsize(fmt) > len(data):
        raise ValueError("flatbuffer offset out of range")
    return struct.unpack_from(fmt, data, pos)[0]


def _field(data: bytes, table: int, index: int) -> int | None:
    """Absolute position of a table's field, None when absent."""
    vtable = table - _unpack(data, "<i", table)
    if 4 + 2 * index >= _unpack(data, "<H", vtable):
        return None
    offset = _unpack(data, "<H", vtable + 4 + 2 * index)
    return table + offset if offset else None


def _deref(data: bytes, pos: int) -> int:
    return pos + _unpack(data, "<I", pos)


def _vector(data: bytes, table: int, index: int) -> tuple[int, int]:
    """(position of the first element, length) of a vector field; (0, 0) when absent."""
    pos = _field(data, table, index)
    if pos is None:
        return 0, 0
    start = _deref(data, pos)
    return start + 4, _unpack(data, "<I", start)


def _string(data: bytes, table: int, index: int) -> str:
    start, length = _vector(data, table, index)
    if start + length > len(data):
        raise ValueError("flatbuffer string out of range")
    return data[start:start + length].decode("utf-8") if length else ""


def tflite_metadata_general(data: bytes) -> dict[str, str]:
    """Name, description, version, author and licence of a .tflite's TFLite metadata ({} when it has none)."""
    try:
        model = _deref(data, 0)
        buffers, buffer_count = _vector(data, model, 4)
        entries, count = _vector(data, model, 6)
        for i in range(count):
            entry = _deref(data, entries + 4 * i)
            if _string(data, entry, 0) != TFLITE_METADATA:
                continue
            index_pos = _field(data, entry, 1)
            index = _unpack(data, "<I", index_pos) if index_pos is not None else 0
            if index >= buffer_count:
                return {}
            buffer = _deref(data, buffers + 4 * index)
            start, length = _vector(data, buffer, 0)
            if not length:  # a model over 2 GB keeps buffers after the flatbuffer: offset and size
                offset_pos, size_pos = _field(data, buffer, 1), _field(data, buffer, 2)
                if offset_pos is None or size_pos is None:
                    return {}
                start, length = _unpack(data, "<Q", offset_pos), _unpack(data, "<Q", size_pos)
            blob = data[start:start + length]
            root = _deref(blob, 0)
            return {key: _string(blob, root, index) for key, index in _GENERAL_FIELDS.items()}
    except (ValueError, UnicodeDecodeError, struct.error):
        return {}
    return {}
