"""Images that travel with a capture: which files, cut into chunks that fit one message, and resume state.

Policy ``frames`` sends the capture's full frame and its cell crops, ``crops``
only the crops, ``none`` nothing (the record still travels). A file goes as
chunk envelopes (kind "chunk", record ``file:<sha256>``, extra
{index, count, size, name}); all chunks but the last have the same length, as
the central checks. The device remembers which chunks the central acknowledged
(``sync_file``, see :func:`sync.agent.outbox.file_progress`), so an agent restarted
mid-file resumes, and a file already complete (a crop shared by two versions of
a capture) is never sent again.
The capture's own record is sent only once every one of its files is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from device.errors import AllscopeError
from device.store import atrest
from device.store.datadir import DataDir
from sync.wire.envelope import max_plaintext_bytes

log = logging.getLogger("allscope.sync")

# The widest extra a chunk can carry (name up to 255 characters, 64-bit numbers): sizes the chunks.
_WIDEST_EXTRA = {"index": 2**63 - 1, "count": 2**63 - 1, "size": 2**63 - 1, "name": "n" * 255}


def chunk_bytes(max_message_bytes: int) -> int:
    """Plaintext bytes per chunk so that a sealed chunk never exceeds ``max_message_bytes``."""
    return max_plaintext_bytes(max_message_bytes, _WIDEST_EXTRA)


@dataclass(frozen=True)
class MediaFile:
    name: str       # the device's relative path (images/..png, crops/<capture>/NNNN.png)
    path: Path
    sha256: str
    size: int
    content: bytes | None = None  # the decrypted bytes, when the data directory is encrypted at rest

    def count(self, chunk: int) -> int:
        return max(1, -(-self.size // chunk))

    def read_chunk(self, index: int, chunk: int) -> bytes:
        if self.content is not None:
            return self.content[index * chunk:(index + 1) * chunk]
        with open(self.path, "rb") as handle:
            handle.seek(index * chunk)
            return handle.read(chunk)

    def extra(self, index: int, chunk: int) -> dict:
        return {"index": index, "count": self.count(chunk), "size": self.size, "name": self.name[:255]}


def file_names(payload: dict, policy: str) -> list[str]:
    """Relative paths a capture payload refers to under ``policy`` (frames | crops | none), in a stable order."""
    if policy == "none":
        return []
    names = []
    if policy == "frames" and payload.get("image_path") and not payload.get("frame_pruned_at"):  # pruned: gone
        names.append(payload["image_path"])
    for cell in payload.get("cells") or []:
        if isinstance(cell, dict) and cell.get("crop_path"):
            names.append(cell["crop_path"])
    seen, ordered = set(), []
    for name in names:
        if name not in seen:
            seen.add(name)
            ordered.append(name)
    return ordered


class FileIndex:
    """Hashes of the data directory's files, cached by (size, mtime) so a large frame is hashed once."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: dict[str, tuple[int, int, str]] = {}

    def describe(self, name: str) -> MediaFile | None:
        """The file, or None when it is missing or outside the data directory (logged by the caller)."""
        target = (self.root / name).resolve()
        if self.root.resolve() not in target.parents:
            return None
        try:
            stat = os.stat(target)
        except OSError:
            return None
        if atrest.keys_for(self.root) is not None:  # encrypted at rest: the central gets the image itself
            try:
                content = DataDir(self.root.resolve()).read_bytes(name)
            except (OSError, ValueError, AllscopeError):
                return None
            return MediaFile(name, target, hashlib.sha256(content).hexdigest(), len(content), content)
        cached = self._cache.get(name)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return MediaFile(name, target, cached[2], stat.st_size)
        digest = hashlib.sha256()
        with open(target, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self._cache[name] = (stat.st_size, stat.st_mtime_ns, digest.hexdigest())
        return MediaFile(name, target, digest.hexdigest(), stat.st_size)
