"""What a received capture shows instead of its raw JSON: its frame and cell crops, and its lasting versions.

The device sends a capture's images as separate files (``ReceivedFile``, named by the device's relative
path, ``sync/central/files.py``); a capture payload names them (``image_path``, ``cells[].crop_path``).
A capture passes through transient states on the device (queued, analysing), each a synced version: the
record page lists the lasting ones (done, failed, and the newest whatever its state) and says how many
transient ones it leaves out; every version stays stored and reachable by its own URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.central.models import ReceivedFile, ReceivedRecord

TRANSIENT_CAPTURE_STATES = ("queued", "analysing")
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",  # issue 15
               ".tif": "image/tiff", ".tiff": "image/tiff"}  # camera stills (WebP lossless), uploads as received


@dataclass(frozen=True)
class Picture:
    caption: str
    name: str            # the device's relative path
    file_id: int | None  # None: not received (the device's media policy, or still in transit)


def capture_pictures(record: ReceivedRecord, limit: int = 200) -> list[Picture]:
    """The frame (when sent) and the cell crops a capture version names, with the received file of each."""
    payload = record.payload if isinstance(record.payload, dict) else {}
    wanted: list[tuple[str, str]] = []
    if payload.get("image_path"):
        wanted.append(("frame", str(payload["image_path"])))
    for number, cell in enumerate(payload.get("cells") or [], start=1):
        if isinstance(cell, dict) and cell.get("crop_path"):
            label = cell.get("reviewer_label") or cell.get("ai_label") or "?"
            p_blast = cell.get("p_blast")
            chance = f", p(blast) {p_blast:.2f}" if isinstance(p_blast, (int, float)) else ""
            wanted.append((f"cell {number}: {label}{chance}", str(cell["crop_path"])))
    wanted = wanted[:limit]
    names = [name for _, name in wanted]
    received = {row.name: row.id for row in ReceivedFile.select(ReceivedFile.id, ReceivedFile.name)
                .where((ReceivedFile.device == record.device_id) & ReceivedFile.name.in_(names or [""])
                       & (ReceivedFile.complete == True))}
    return [Picture(caption, name, received.get(name)) for caption, name in wanted]


def lasting_versions(versions: list[ReceivedRecord], current: ReceivedRecord) -> tuple[list[ReceivedRecord], int]:
    """(versions to list, how many transient ones were left out); non-captures are listed whole."""
    if current.entity != "capture" or not versions:
        return versions, 0
    newest = max(v.version for v in versions)
    kept = [v for v in versions if v.id == current.id or v.version == newest
            or (v.payload or {}).get("status") not in TRANSIENT_CAPTURE_STATES]
    return kept, len(versions) - len(kept)
