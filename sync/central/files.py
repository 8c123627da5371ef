"""Files sent in chunks (frames and cell crops): stored idempotently, assembled, hash-checked, written atomically.

A chunk envelope has kind "chunk", record "file:<sha256>" and extra {index, count, size, name}.
The agent cuts a file into equal chunks with a shorter (or equal) last one (``sync/agent/media.py``),
so every chunk's length is checked against the others and the declared size as it arrives. A
chunk is stored once per (file, index): a resend with the same bytes is a "duplicate", other
bytes a "replay_conflict". When the last missing chunk arrives the file is joined, its size and
SHA-256 checked, written under ``<data dir>/files/ab/<sha256><suffix>`` with ``write_atomic``,
and its chunk rows dropped (the file on disk is then the reference for later duplicates).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import peewee as pw

from device.store.atomic import write_atomic
from device.store.records import db_proxy
from sync.central.models import FileChunk, ReceivedFile
from sync.wire.acks import ack_item
from sync.wire.envelope import EnvelopeError as Rejected

log = logging.getLogger("allscope.central")

MAX_FILE_BYTES = 256 * 1024 * 1024     # a full microscope frame is a few MiB; anything near this is hostile
MAX_CHUNKS = 65_536
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def store_chunk(device_id: int, envelope, data: bytes, data_dir: Path) -> dict:
    """Store one chunk (idempotent per file and index); assemble the file when it was the last one missing."""
    sha, index, count, size, name = _chunk_header(envelope)
    file_key = (ReceivedFile.device == device_id) & (ReceivedFile.sha256 == sha)
    received = ReceivedFile.get_or_none(file_key)
    if received is None:
        try:
            with db_proxy.atomic():
                received = ReceivedFile.create(device=device_id, sha256=sha, name=name, size=size, chunks=count)
        except pw.IntegrityError:
            received = ReceivedFile.get(file_key)
    if (received.size, received.chunks) != (size, count):
        raise Rejected("chunk_mismatch", f"file {sha[:12]}: chunk says {count} chunks/{size} bytes, first "
                                         f"chunk said {received.chunks}/{received.size}")
    if received.complete:
        return _chunk_of_complete_file(received, envelope, index, data, data_dir)
    existing = FileChunk.get_or_none((FileChunk.file == received) & (FileChunk.index == index))
    if existing is not None:
        ack = _same_chunk(envelope, bytes(existing.data) == data, sha, index)
        _assemble_if_all_there(received, envelope, count, data_dir)  # a receiver may have died before assembling
        return ack
    stored_lengths = {row.index: row.length for row in FileChunk.select(
        FileChunk.index, pw.fn.LENGTH(FileChunk.data).alias("length")).where(FileChunk.file == received)}
    _check_chunk_length(size, count, index, len(data), stored_lengths)
    try:
        with db_proxy.atomic():
            FileChunk.create(file=received, index=index, data=data)
            ReceivedFile.update(received_chunks=ReceivedFile.received_chunks + 1).where(
                ReceivedFile.id == received.id).execute()
    except pw.IntegrityError:
        existing = FileChunk.get((FileChunk.file == received) & (FileChunk.index == index))
        return _same_chunk(envelope, bytes(existing.data) == data, sha, index)
    _assemble_if_all_there(received, envelope, count, data_dir)
    return ack_item(envelope, "stored")


def _assemble_if_all_there(received: ReceivedFile, envelope, count: int, data_dir: Path) -> None:
    """Assemble once every chunk is stored: after the last new chunk, and after a duplicate too, since a
    receiver killed between committing the last chunk and assembling leaves all chunks stored and acked
    (the device then never sends them again), and only the broker's redelivery comes back."""
    if FileChunk.select().where(FileChunk.file == received).count() == count:
        _assemble(received, envelope, data_dir)


def _same_chunk(envelope, same: bool, sha: str, index: int) -> dict:
    if same:
        return ack_item(envelope, "duplicate")
    raise Rejected("replay_conflict", f"file {sha[:12]} chunk {index} already stored with other content")


def _chunk_of_complete_file(received: ReceivedFile, envelope, index: int, data: bytes, data_dir: Path) -> dict:
    content = (data_dir / received.stored_path).read_bytes()
    offset = received.size - len(data) if index == received.chunks - 1 else index * len(data)
    return _same_chunk(envelope, offset >= 0 and content[offset:offset + len(data)] == data, received.sha256,
                       index)


def _assemble(received: ReceivedFile, envelope, data_dir: Path) -> None:
    """Join the chunks, check size and hash, write the file atomically, then drop the chunk rows."""
    rows = FileChunk.select(FileChunk.data).where(FileChunk.file == received).order_by(FileChunk.index)
    content = b"".join(bytes(row.data) for row in rows)
    if len(content) != received.size or hashlib.sha256(content).hexdigest() != received.sha256:
        with db_proxy.atomic():  # start over: the device resends the file from its first chunk
            FileChunk.delete().where(FileChunk.file == received).execute()
            dropped = ReceivedFile.delete().where((ReceivedFile.id == received.id)
                                                  & (ReceivedFile.complete == False)).execute()  # noqa: E712
        if not dropped:  # another receiver assembled it meanwhile: its chunk rows were gone when these were read
            return
        raise Rejected("file_hash_mismatch", f"file {received.sha256[:12]}: assembled {len(content)} bytes do "
                                             f"not match the declared size and SHA-256; chunks discarded")
    suffix = Path(received.name).suffix.lower()
    relative = f"files/{received.sha256[:2]}/{received.sha256}{suffix if suffix in IMAGE_SUFFIXES else ''}"
    write_atomic(data_dir / relative, content)
    with db_proxy.atomic():
        ReceivedFile.update(complete=True, stored_path=relative, received_chunks=received.chunks).where(
            ReceivedFile.id == received.id).execute()
        FileChunk.delete().where(FileChunk.file == received).execute()
    received.complete, received.stored_path = True, relative
    log.info("file %s from %s complete (%d bytes)", received.sha256[:12], envelope.device, received.size)


def _chunk_header(envelope) -> tuple[str, int, int, int, str]:
    if not envelope.record.startswith("file:") or not _SHA_RE.match(envelope.record[5:]):
        raise Rejected("malformed", f"chunk record {envelope.record[:80]!r} is not file:<sha256>")
    extra = envelope.extra
    values = [extra.get(key) for key in ("index", "count", "size")]
    if not all(type(value) is int for value in values):
        raise Rejected("malformed", "chunk extra needs integer index, count and size")
    index, count, size = values
    if not (1 <= count <= MAX_CHUNKS and 0 <= index < count and 0 <= size <= MAX_FILE_BYTES):
        raise Rejected("malformed", f"chunk {index} of {count} for {size} bytes is out of range")
    name = extra.get("name", "")
    if not isinstance(name, str):
        raise Rejected("malformed", "chunk name must be a string")
    return envelope.record[5:], index, count, size, name[:255]


def _check_chunk_length(size: int, count: int, index: int, length: int, stored: dict[int, int]) -> None:
    """Chunks are equal except a shorter (or equal) non-empty last one; refuse a length that cannot fit."""
    last = count - 1
    lengths = dict(stored)
    lengths[index] = length
    full = {value for key, value in lengths.items() if key != last}
    if len(full) > 1:
        raise Rejected("chunk_size", f"chunk {index} has {length} bytes, other chunks {sorted(full)}")
    if full:
        chunk = full.pop()
    elif count > 1:  # only the last chunk known: the others' length follows from it
        remainder = size - lengths[last]
        if remainder <= 0 or remainder % (count - 1):
            raise Rejected("chunk_size", f"last chunk of {lengths[last]} bytes cannot end a {count}-chunk file of "
                                         f"{size} bytes")
        chunk = remainder // (count - 1)
    else:
        chunk = size
    last_length = size - last * chunk
    if chunk <= 0 and size > 0 or not (0 < last_length <= chunk or size == 0) or \
            (last in lengths and lengths[last] != last_length):
        raise Rejected("chunk_size", f"chunk {index} has {length} bytes, which does not fit {count} chunks of a "
                                     f"{size}-byte file")
