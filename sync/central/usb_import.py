"""`allscope central import DIR`: USB exports through the same ingestion as MQTT, with signed acks written back.

An export (written by ``allscope sync export --to DIR`` on an offline device)::

    DIR/allscope-export-<device>-<time>/
        manifest.json   {"format": "allscope-export", "v": 1, "device": "<id>", "created": "...",
                         "envelopes": [{"file": "000001.env", ...}, ...]}   (items may also be plain file names)
        000001.env ...  one sealed envelope each, exactly as the agent would publish it, in outbox order

Each envelope goes through :meth:`Ingestor.handle` with the manifest's device in
place of the MQTT topic (so every check applies: enrolment, revocation, pinned
key, signature, decryption, replay), except that an export's hello never pins
a key: the device's signing key must already be pinned (it synced online once) or
registered by an admin (``allscope central register-key``), else every envelope
is refused with that reason. The signed ``acks.json`` is written
atomically beside the manifest; the device can drop what it acknowledges, and
a later online sync of the same entries is answered "duplicate".
"""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import AllscopeError
from device.store.atomic import write_atomic
from sync.central.ingest import USB, Ingestor
from sync.wire.acks import make_ack

MANIFEST = "manifest.json"
ACKS = "acks.json"
EXPORT_FORMAT = "allscope-export"
_FILE_RE = re.compile(r"^[0-9]{6,12}\.env$")


@dataclass
class ImportResult:
    directory: Path
    device: str
    envelopes: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    reasons: collections.Counter = field(default_factory=collections.Counter)

    def line(self) -> str:
        counts = ", ".join(f"{self.statuses[s]} {s}" for s in ("stored", "duplicate", "rejected"))
        reasons = f" ({', '.join(f'{r}: {n}' for r, n in sorted(self.reasons.items()))})" if self.reasons else ""
        return f"{self.directory.name}: {self.envelopes} envelopes from {self.device}: {counts}{reasons}"


def find_exports(path: str | Path) -> list[Path]:
    """The export directories at ``path``: the directory itself when it holds a manifest, else its children."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return [path]
    if not path.is_dir():
        raise AllscopeError(f"{path}: not a directory")
    found = sorted(child for child in path.iterdir() if child.is_dir() and (child / MANIFEST).is_file())
    if not found:
        raise AllscopeError(f"{path}: no export found (expected {MANIFEST} in it or in allscope-export-* folders)")
    return found


def read_manifest(directory: Path) -> tuple[str, list[Path]]:
    """(device id, envelope files in order); one-line AllscopeError for anything unexpected."""
    where = directory / MANIFEST
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise AllscopeError(f"{where}: not readable as JSON ({' '.join(str(error).split())})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT or manifest.get("v") != 1:
        raise AllscopeError(f"{where}: not an allscope export of version 1")
    device = manifest.get("device")
    items = manifest.get("envelopes")
    if not isinstance(device, str) or not device or not isinstance(items, list):
        raise AllscopeError(f"{where}: needs a device and a list of envelopes")
    files = []
    for item in items:
        name = item.get("file") if isinstance(item, dict) else item
        # Plain numbered names only: a manifest must not point outside its folder.
        if not isinstance(name, str) or not _FILE_RE.match(name):
            raise AllscopeError(f"{where}: envelope file name {str(name)[:60]!r} is not like 000001.env")
        files.append(directory / name)
    return device, files


def import_export(directory: Path, ingestor: Ingestor, sign_key) -> ImportResult:
    """Ingest one export directory and write its signed acks.json; returns the counts."""
    device, files = read_manifest(directory)
    result = ImportResult(directory, device)
    acks: list[dict] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise AllscopeError(f"{path}: {error.strerror or error} (is the export complete?)") from None
        answered = ingestor.handle(device, data, via=USB)
        if not answered:  # not even an entry could be read from it: counted, nothing to acknowledge
            result.statuses["rejected"] += 1
            result.reasons["malformed"] += 1
        for ack in answered:
            acks.append(ack)
            result.statuses[ack["status"]] += 1
            if ack["status"] == "rejected":
                result.reasons[ack["reason"]] += 1
        result.envelopes += 1
    write_atomic(directory / ACKS, make_ack(device_id=device, acks=acks, signing_key=sign_key))
    return result
