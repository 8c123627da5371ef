"""The central server's database: enrolled devices, every received version of every record, files, errors.

SQLite by default, PostgreSQL by a database URL (``postgresql://user@host/db``):
:func:`open_central_database` binds these models, and the device's ``User``,
``LoginFailure`` and ``AuditEvent`` models (central admins log in with the same
account code as the device), to one database through ``device.store.records.db_proxy``.
A process is either a device or a central server, never both.

Idempotency: a record version is stored once per (device, entity, record_id,
version); a replay of the same content is acknowledged as a duplicate, a
different content under the same key is rejected as tampering.
"""

from __future__ import annotations

import peewee as pw

from device.store.records import AuditEvent, BaseModel, JSONField, LoginFailure, User, utcnow

DEVICE_STATES = ("enrolled", "revoked")
ENTITIES = ("patient", "sample", "capture", "report")


class Device(BaseModel):
    device_id = pw.CharField(unique=True, max_length=64)      # CN of its TLS certificate
    clinic = pw.CharField(default="", max_length=200)
    state = pw.CharField(default="enrolled", max_length=16)
    cert_fingerprint = pw.CharField(default="", max_length=95)  # SHA-256 of the TLS certificate (hex)
    signing_public_key = pw.TextField(default="")               # Ed25519, PEM; pinned at the first accepted hello
    # Ed25519 key fingerprint an admin registered (allscope central register-key; as the device prints it):
    # when set, only this key is ever pinned; a USB import is accepted only with a pinned or registered key.
    signing_key_fingerprint = pw.CharField(default="", max_length=95)
    enrolled_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)
    last_seen_at = pw.DateTimeField(null=True)
    online = pw.BooleanField(default=False)
    backlog = pw.IntegerField(default=0)                        # pending outbox entries, as last reported
    # from its status messages (sync/wire/status.py), as last reported; "" until a device sends them
    software_version = pw.CharField(default="", max_length=64)
    model_id = pw.CharField(default="", max_length=64)
    model_name = pw.CharField(default="", max_length=64)
    model_version = pw.CharField(default="", max_length=64)


class ReceivedRecord(BaseModel):
    """One version of one record from one device. Never updated, never deleted."""

    device = pw.ForeignKeyField(Device, backref="records", on_delete="RESTRICT")
    entity = pw.CharField(max_length=16)          # patient | sample | capture | report
    record_id = pw.IntegerField()                 # the row id on the device
    version = pw.IntegerField()
    content_sha256 = pw.CharField(max_length=64)
    payload = JSONField()
    created_at = pw.DateTimeField()               # when the device made this version
    received_at = pw.DateTimeField(default=utcnow)
    patient_identifier = pw.CharField(default="", max_length=64, index=True)  # for search across devices

    class Meta:
        indexes = ((("device", "entity", "record_id", "version"), True),)


class ReceivedFile(BaseModel):
    """An image (frame or cell crop) sent in chunks; complete when every chunk arrived and the hash matches."""

    device = pw.ForeignKeyField(Device, backref="files", on_delete="RESTRICT")
    sha256 = pw.CharField(max_length=64)
    name = pw.CharField(default="", max_length=255)  # the device's relative path
    size = pw.IntegerField()
    chunks = pw.IntegerField()
    received_chunks = pw.IntegerField(default=0)
    complete = pw.BooleanField(default=False)
    stored_path = pw.CharField(default="")          # relative to the central data directory, when complete
    received_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("device", "sha256"), True),)


class FileChunk(BaseModel):
    file = pw.ForeignKeyField(ReceivedFile, backref="chunk_rows", on_delete="CASCADE")
    index = pw.IntegerField()
    data = pw.BlobField()

    class Meta:
        indexes = ((("file", "index"), True),)


class IngestError(BaseModel):
    """A rejected message: unknown or revoked device, bad signature, tampering, replay, malformed, …"""

    at = pw.DateTimeField(default=utcnow, index=True)
    device_id = pw.CharField(default="", max_length=64, index=True)  # as claimed; may be unknown
    reason = pw.CharField(max_length=32, index=True)
    detail = pw.TextField(default="")


class ReceiverBeat(BaseModel):
    """One `allscope central run` process, as it last reported itself (sync/central/receivers.py)."""

    client_id = pw.CharField(unique=True, max_length=64)
    host = pw.CharField(default="", max_length=255)
    pid = pw.IntegerField(default=0)
    started_at = pw.DateTimeField(default=utcnow)
    last_seen_at = pw.DateTimeField(default=utcnow)
    stopped_at = pw.DateTimeField(null=True)      # set on a clean stop (SIGTERM); a killed one just goes stale
    handled = pw.IntegerField(default=0)          # envelopes handled since it started

    class Meta:
        table_name = "receiver"


CENTRAL_MODELS = (User, LoginFailure, AuditEvent, Device, ReceivedRecord, ReceivedFile, FileChunk, IngestError,
                  ReceiverBeat)
