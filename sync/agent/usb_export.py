"""USB sync for clinics without connectivity: ``allscope sync export`` and ``allscope sync import-acks``.

``export`` writes every pending outbox entry, sealed exactly as the agent would
publish it (encrypted to the central, signed by this device), into
``DIR/allscope-export-<device>-<time>/`` as numbered ``.env`` files with a
``manifest.json``; a capture's files go as chunk envelopes before its record,
as online. The folder is assembled under a hidden temporary name and renamed
when complete, so a stick pulled out too early never holds a half export that
looks whole. Nothing leaves the outbox: the central imports the folder
(``allscope central import``) and writes signed ``acks.json`` beside the
manifest; ``import-acks`` then applies those acks exactly like online ones
(signature checked with the bundle's central key). Without it, the next online
sync resends the entries and the central answers "duplicate", so it never
stores anything twice.

An entry that cannot be sealed (its envelope would exceed the 4 MB envelope
limit) is quarantined as the agent does (``sync.agent.outbox.quarantine``): it
stays in the outbox with its reason, the export carries everything else, and
``ExportResult.quarantined`` holds one line per such entry. Entries the agent
quarantined for the broker's packet limit are exported when they fit an envelope.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import AllscopeError
from device.store.atomic import fsync_dir
from device.store.records import open_database
from sync.agent import outbox
from sync.agent.config import SIGNING_KEY, AgentConfig
from sync.agent.media import FileIndex, file_names
from sync.agent.sealer import Sealer
from sync.wire import acks as acks_mod
from sync.wire import envelope as env_mod
from sync.wire import keys

EXPORT_FORMAT = "allscope-export"
MANIFEST = "manifest.json"
ACKS = "acks.json"


@dataclass
class ExportResult:
    directory: Path
    entries: int = 0
    chunks: int = 0
    missing_files: list = field(default_factory=list)
    quarantined: list = field(default_factory=list)  # one line per entry that could not be exported

    def line(self) -> str:
        missing = f"; {len(self.missing_files)} files missing on this device" if self.missing_files else ""
        held = (f"; {len(self.quarantined)} entries quarantined, not exported (see allscope sync status)"
                if self.quarantined else "")
        return (f"exported {self.entries} pending entries and {self.chunks} file chunks to {self.directory}"
                f"{missing}{held} (they stay queued until acknowledged)")


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())



def export_pending(config: AgentConfig, to: str | Path) -> ExportResult:
    """Write the outbox's pending entries (and their files' missing chunks) as a sealed export folder."""
    target_root = Path(to).expanduser()
    if not target_root.is_dir():
        raise AllscopeError(f"{target_root}: not a directory (mount the USB stick and give its folder)")
    open_database(config.database)
    sealer = Sealer.from_config(config)
    files = FileIndex(config.data_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"allscope-export-{config.device_id}-{stamp}"
    final, work = target_root / name, target_root / f".{name}.partial"
    if final.exists():
        raise AllscopeError(f"{final} already exists: wait a second and export again")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    result = ExportResult(final)
    items: list[dict] = []

    def add(data: bytes, **info) -> None:
        filename = f"{len(items) + 1:06d}.env"
        _write(work / filename, data)
        items.append({"file": filename, **info})

    try:
        # The hello first: a device that never reached the central online gets its key pinned by the import.
        add(sealer.hello({"backlog": outbox.backlog(), "export": True}), kind="hello", record=env_mod.HELLO_RECORD)
        sent_chunks: set[tuple[str, int]] = set()
        cursor = 0
        while batch := outbox.pending(500, after_id=cursor):
            for entry in batch:
                cursor = entry.id
                try:  # sealed first: an entry that cannot go must not take its files along
                    sealed = sealer.entry(entry)
                except env_mod.EnvelopeError as error:
                    result.quarantined.append(outbox.quarantine(entry, f"cannot be exported: {error}"))
                    continue
                if entry.entity == "capture" and config.media != "none":
                    for file_name in file_names(entry.data(), config.media):
                        media = files.describe(file_name)
                        if media is None:
                            result.missing_files.append(file_name)
                            continue
                        if outbox.file_complete(media.sha256):
                            continue
                        progress = outbox.file_progress(media.sha256, name=media.name, size=media.size,
                                                        chunks=media.count(sealer.chunk))
                        for index in progress.missing():
                            if (media.sha256, index) in sent_chunks:
                                continue
                            sent_chunks.add((media.sha256, index))
                            add(sealer.file_chunk(media, index, entry), kind="chunk",
                                record=f"file:{media.sha256}", index=index, entry=entry.id)
                            result.chunks += 1
                add(sealed, kind="record", record=entry.record, version=entry.version, entry=entry.id)
                result.entries += 1
        manifest = {"format": EXPORT_FORMAT, "v": 1, "device": config.device_id,
                    "created": env_mod.utc_timestamp(), "media": config.media, "entries": result.entries,
                    "chunks": result.chunks, "envelopes": items}
        _write(work / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
        fsync_dir(work)
        os.rename(work, final)
        fsync_dir(target_root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return result


@dataclass
class AckImport:
    folders: int = 0
    removed: int = 0
    rejected: int = 0
    chunks: int = 0
    ignored: list = field(default_factory=list)

    def line(self) -> str:
        ignored = f"; ignored {len(self.ignored)}: {'; '.join(self.ignored)}" if self.ignored else ""
        return (f"applied acks of {self.folders} export(s): {self.removed} entries left the outbox, "
                f"{self.rejected} rejected (kept), {self.chunks} file chunks confirmed{ignored}")


def import_acks(config: AgentConfig, path: str | Path) -> AckImport:
    """Apply the central's signed acks.json of each export folder under ``path`` to this device's outbox."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise AllscopeError(f"{path}: not a directory")
    folders = [path] if (path / ACKS).is_file() else sorted(
        child for child in path.iterdir() if child.is_dir() and (child / ACKS).is_file())
    if not folders:
        raise AllscopeError(f"{path}: no {ACKS} found (import the export on the central server first)")
    open_database(config.database)
    central_public = keys.load_ed25519_public(config.path("central_sign_ed25519.pub"))
    fingerprint = keys.fingerprint(keys.load_ed25519_private(config.path(SIGNING_KEY)))
    result = AckImport()
    for folder in folders:
        try:
            ack = acks_mod.parse_ack((folder / ACKS).read_bytes(), central_public, device_id=config.device_id)
        except acks_mod.AckError as error:
            result.ignored.append(f"{folder.name}: {error}")
            continue
        except OSError as error:
            result.ignored.append(f"{folder.name}: {error.strerror or error}")
            continue
        result.folders += 1
        records = []
        for item in ack.acks:
            done = item["status"] in acks_mod.DONE
            if item["record"] == env_mod.HELLO_RECORD:
                if done:
                    outbox.set_state("hello_key", fingerprint)
            elif item["record"].startswith("file:"):
                if done and isinstance(item.get("index"), int):
                    outbox.mark_chunk_acked(item["record"][5:], item["index"])
                    result.chunks += 1
            else:
                records.append(item)
                result.rejected += not done
        result.removed += outbox.remove_acked(records)
    return result
