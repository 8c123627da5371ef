"""The device's side of sync: the outbox the triggers fill, file-chunk progress, quarantine, and agent state.

Entries are written by SQLite triggers (migration v2 in ``device/store/migrations.py``)
in the same transaction as the change they carry; this module only reads them
and removes them once the central server's signed acknowledgement arrives
(:func:`remove_acked`). An entry is never dropped otherwise. On the wire an
entry is ``record = "<entity>:<record_id>"`` at ``version`` (the per-record sync
version, counting every change), ``entry = id`` (AUTOINCREMENT: ids are never
reused, so a late ack can never match a newer entry) and the payload's bytes
as plaintext.

Quarantine: an entry the agent or the USB export cannot send (its envelope is
above the 4 MB envelope limit, or above ``max_message_bytes`` and so above what
the broker takes) is *quarantined*: it stays in the outbox, untouched, with the
reason in ``sync_state`` (key ``quarantine:<id>``), and the entries behind it go on.
The agent skips quarantined entries; the export tries them again (a USB stick has
no broker packet limit). :func:`quarantined` lists them for ``allscope sync status``
and the device's status page; an ack that removes the entry drops its quarantine too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Iterable

import peewee as pw

from device.store.records import BaseModel, db_proxy
from sync.wire.acks import DONE
from sync.wire.envelope import utc_timestamp


class OutboxEntry(BaseModel):
    entity = pw.TextField()          # patient | sample | capture | report
    record_id = pw.IntegerField()
    version = pw.IntegerField()      # sync version of (entity, record_id)
    payload = pw.TextField()         # JSON of the whole row, as the trigger wrote it
    created_at = pw.TextField()      # ISO 8601 UTC, "...Z"
    attempts = pw.IntegerField(default=0)
    last_error = pw.TextField(default="")
    sent_at = pw.TextField(null=True)

    class Meta:
        table_name = "outbox"

    @property
    def record(self) -> str:
        return f"{self.entity}:{self.record_id}"

    @property
    def plaintext(self) -> bytes:
        return self.payload.encode("utf-8")

    @property
    def content_sha256(self) -> str:
        return hashlib.sha256(self.plaintext).hexdigest()

    def data(self) -> dict:
        return json.loads(self.payload)


class SyncVersion(BaseModel):
    entity = pw.TextField()
    record_id = pw.IntegerField()
    version = pw.IntegerField()

    class Meta:
        table_name = "sync_version"
        primary_key = pw.CompositeKey("entity", "record_id")


class SyncFile(BaseModel):
    """Progress of one file (frame or crop) sent in chunks, so a restart resends only unacked chunks."""

    sha256 = pw.TextField(primary_key=True)
    name = pw.TextField()            # relative path in the data directory
    size = pw.IntegerField()
    chunks = pw.IntegerField()
    acked = pw.TextField()           # one character per chunk: "1" acked, "0" not yet
    complete = pw.BooleanField(default=False)
    updated_at = pw.TextField()

    class Meta:
        table_name = "sync_file"

    def missing(self) -> list[int]:
        return [i for i, flag in enumerate(self.acked) if flag != "1"]


class SyncState(BaseModel):
    """Small key/value facts for ``allscope sync status``: last_ack_at, last_error, last_connected_at, ..."""

    key = pw.TextField(primary_key=True)
    value = pw.TextField()
    updated_at = pw.TextField()

    class Meta:
        table_name = "sync_state"


SYNC_MODELS = (OutboxEntry, SyncVersion, SyncFile, SyncState)


# --- outbox ----------------------------------------------------------------------------------------------

def pending(limit: int = 200, after_id: int = 0) -> list[OutboxEntry]:
    """The oldest entries first (per-record order is id order); ``after_id`` pages past those in flight."""
    return list(OutboxEntry.select().where(OutboxEntry.id > after_id).order_by(OutboxEntry.id).limit(limit))


def backlog(exclude: Iterable[int] = ()) -> int:
    """Pending entries (all of them, or all but the ids in ``exclude``, e.g. the quarantined ones)."""
    exclude = list(exclude)
    query = OutboxEntry.select()
    if exclude:
        query = query.where(OutboxEntry.id.not_in(exclude))
    return query.count()


def oldest_pending() -> OutboxEntry | None:
    return OutboxEntry.select().order_by(OutboxEntry.id).first()


def oldest_age_seconds(now: dt.datetime | None = None) -> float | None:
    entry = oldest_pending()
    if entry is None:
        return None
    created = dt.datetime.fromisoformat(entry.created_at)
    return ((now or dt.datetime.now(dt.timezone.utc)) - created).total_seconds()


def mark_sent(ids: Iterable[int]) -> None:
    """Note a (re)send: the entry stays until acknowledged."""
    ids = list(ids)
    if not ids:
        return
    now = utc_timestamp()
    with db_proxy.atomic():
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            OutboxEntry.update(sent_at=now, attempts=OutboxEntry.attempts + 1) \
                .where(OutboxEntry.id.in_(ids[start:start + 500])).execute()


def remove_acked(acks: Iterable[dict]) -> int:
    """Apply verified ack items in one transaction; returns how many entries left the outbox.

    "stored"/"duplicate" remove the entry whose id, record and version all match
    (an ack for something else removes nothing); "rejected" keeps it and records
    the reason. Chunk acks (record "file:...") are not outbox entries: see
    :func:`mark_chunk_acked`. Also notes last_ack_at / last_error for the status.
    """
    removed, now, errors = 0, utc_timestamp(), []
    done: dict[int, tuple[str, int, int]] = {}  # entry id -> (entity, record_id, version) acknowledged
    rejected = []
    for item in acks:
        entity, _, key = item["record"].partition(":")
        if entity != "file" and key.isdigit():
            if item["status"] in DONE:
                done[item["entry"]] = (entity, int(key), item["version"])
            else:
                rejected.append((item, entity, int(key)))
    with db_proxy.atomic():
        removed = _remove_done(done)
        for item, entity, record_id in rejected:  # an entry removed above matches nothing here
            match = ((OutboxEntry.id == item["entry"]) & (OutboxEntry.entity == entity)
                     & (OutboxEntry.record_id == record_id) & (OutboxEntry.version == item["version"]))
            message = f"{item['record']} v{item['version']}: rejected ({item.get('reason') or 'no reason'})"
            if OutboxEntry.update(last_error=message).where(match).execute():
                errors.append(message)
        set_state("last_ack_at", now)
        if errors:
            set_state("last_error", f"{now} {errors[-1]}")
        elif removed:  # the central stores what we send (online or by USB): an older error is stale
            set_state("last_error", "")
    return removed


def _remove_done(done: dict[int, tuple[str, int, int]]) -> int:
    """Delete the entries whose id, record and version an ack named (a batch's acks: a few statements, not one
    per entry), and their quarantine marks; in the caller's transaction. Returns how many left the outbox."""
    removed = 0
    ids = list(done)
    for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
        part = ids[start:start + 500]
        rows = OutboxEntry.select(OutboxEntry.id, OutboxEntry.entity, OutboxEntry.record_id, OutboxEntry.version) \
            .where(OutboxEntry.id.in_(part)).tuples()
        matched = [entry_id for entry_id, *key in rows if tuple(key) == done[entry_id]]
        if matched:
            OutboxEntry.delete().where(OutboxEntry.id.in_(matched)).execute()
            SyncState.delete().where(SyncState.key.in_([f"{QUARANTINE}{i}" for i in matched])).execute()
            removed += len(matched)
    return removed


# --- quarantine: entries that cannot be sent ----------------------------------------------------------

QUARANTINE = "quarantine:"  # sync_state key prefix, followed by the outbox id


def quarantine(entry: OutboxEntry, reason: str) -> str:
    """Keep ``entry`` in the outbox but out of the send path, with ``reason``; returns the one-line message."""
    reason = " ".join(reason.split())
    info = {"record": entry.record, "version": entry.version, "bytes": len(entry.plaintext), "reason": reason}
    message = f"quarantined outbox entry {entry.id} ({entry.record} v{entry.version}): {reason}"
    with db_proxy.atomic():
        set_state(f"{QUARANTINE}{entry.id}", json.dumps(info, sort_keys=True))
        set_state("last_error", f"{utc_timestamp()} {message}")
    return message


def quarantined_ids() -> set[int]:
    """Outbox ids of the quarantined entries still in the outbox."""
    return {item["entry"] for item in quarantined()}


def quarantined() -> list[dict]:
    """The quarantined entries still in the outbox, oldest first: entry, record, version, bytes, reason, since.

    For ``allscope sync status`` and the device's status page. Stale marks (the entry has left the
    outbox some other way) are ignored.
    """
    rows = list(SyncState.select().where(SyncState.key.startswith(QUARANTINE)))
    marks = {}
    for row in rows:
        key = row.key[len(QUARANTINE):]
        if key.isdigit():
            try:
                info = json.loads(row.value)
            except ValueError:
                info = {"reason": row.value}
            marks[int(key)] = (info if isinstance(info, dict) else {"reason": str(info)}, row.updated_at)
    if not marks:
        return []
    present = {entry_id for (entry_id,) in
               OutboxEntry.select(OutboxEntry.id).where(OutboxEntry.id.in_(list(marks))).tuples()}
    return [{"entry": entry_id, "record": info.get("record", ""), "version": info.get("version"),
             "bytes": info.get("bytes"), "reason": info.get("reason", ""), "since": since}
            for entry_id, (info, since) in sorted(marks.items()) if entry_id in present]


# --- files -----------------------------------------------------------------------------------------------

def file_progress(sha256: str, *, name: str, size: int, chunks: int) -> SyncFile:
    """The chunk progress of a file, created (or restarted, when the chunking changed) as needed."""
    with db_proxy.atomic():
        row = SyncFile.get_or_none(SyncFile.sha256 == sha256)
        if row is not None and row.size == size and row.chunks == chunks:
            return row
        fields = dict(name=name, size=size, chunks=chunks, acked="0" * chunks, complete=False,
                      updated_at=utc_timestamp())
        if row is None:
            return SyncFile.create(sha256=sha256, **fields)
        SyncFile.update(**fields).where(SyncFile.sha256 == sha256).execute()
        return SyncFile.get_by_id(sha256)


def mark_chunk_acked(sha256: str, index: int) -> bool:
    """Tick one chunk off; True when the file is now complete. Unknown files and indexes change nothing."""
    with db_proxy.atomic():
        row = SyncFile.get_or_none(SyncFile.sha256 == sha256)
        if row is None or not 0 <= index < row.chunks:
            return False
        acked = row.acked[:index] + "1" + row.acked[index + 1:]
        complete = "0" not in acked
        SyncFile.update(acked=acked, complete=complete, updated_at=utc_timestamp()) \
            .where(SyncFile.sha256 == sha256).execute()
        return complete


def file_complete(sha256: str) -> bool:
    row = SyncFile.get_or_none(SyncFile.sha256 == sha256)
    return bool(row and row.complete)


# --- state -----------------------------------------------------------------------------------------------

def set_state(key: str, value: str) -> None:
    SyncState.insert(key=key, value=value, updated_at=utc_timestamp()) \
        .on_conflict(conflict_target=[SyncState.key], update={SyncState.value: value,
                                                              SyncState.updated_at: utc_timestamp()}).execute()


def get_state(key: str, default: str = "") -> str:
    row = SyncState.get_or_none(SyncState.key == key)
    return row.value if row else default


def status() -> dict:
    """What ``allscope sync status`` prints."""
    age = oldest_age_seconds()
    held = quarantined()
    return {"pending": backlog(), "oldest_pending_seconds": None if age is None else round(age, 1),
            "last_ack_at": get_state("last_ack_at") or None, "last_error": get_state("last_error") or None,
            "quarantined": len(held), "quarantined_entries": held}
