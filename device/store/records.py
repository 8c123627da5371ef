"""The device's clinical records: SQLite through peewee, shared by the web UI and the sync agent.

Models are unbound (a ``DatabaseProxy``) and bound once at start-up by
:func:`open_database`, which also sets WAL mode and runs the numbered
migrations of ``device/store/migrations.py``. Images live on disk under the data
directory (see ``device/store/datadir.py``); rows hold their relative path and hash.

The audit trail is append-only: SQLite triggers refuse UPDATE and DELETE on it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import peewee as pw

from device.config.choices import CELL_LABELS  # noqa: F401  (re-exported: one list, in choices.py)
from device.store.atomic import private_database_file, private_dir

db_proxy = pw.DatabaseProxy()

ROLES = ("technician", "pathologist", "admin")
CLINICAL_ROLES = ("technician", "pathologist")
SEXES = ("female", "male", "other", "unknown")
CAPTURE_STATES = ("queued", "analysing", "done", "failed", "discarded")  # discarded: kept, never counted
REPORT_STATES = ("draft", "signed", "amended")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class JSONField(pw.TextField):
    """A JSON document stored as text."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = db_proxy
        legacy_table_names = False


class User(BaseModel):
    username = pw.CharField(unique=True, max_length=64)
    full_name = pw.CharField(default="", max_length=200)
    password_hash = pw.CharField()
    roles = pw.CharField()  # comma-separated subset of ROLES
    disabled = pw.BooleanField(default=False)
    created_at = pw.DateTimeField(default=utcnow)
    last_login_at = pw.DateTimeField(null=True)
    # Bumped at logout, password change and disabling: every session signed with an older epoch is dead,
    # including a copied cookie (sessions are client-side signed cookies; this is their server-side revocation).
    session_epoch = pw.IntegerField(default=0)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r for r in self.roles.split(",") if r)

    def has_any_role(self, *roles: str) -> bool:
        return bool(self.role_set.intersection(roles))

    # flask-login's user protocol, kept here so the web UI needs no wrapper class.
    @property
    def is_active(self) -> bool:
        return not self.disabled

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)


class LoginFailure(BaseModel):
    """One failed login; counted per username and per client address for throttling and lock-out."""

    key = pw.CharField(index=True)  # "user:<name>" or "addr:<ip>"
    at = pw.DateTimeField(default=utcnow, index=True)


class Patient(BaseModel):
    identifier = pw.CharField(unique=True, max_length=64)  # hospital / clinic number
    name = pw.CharField(max_length=200)
    date_of_birth = pw.DateField(null=True)
    sex = pw.CharField(default="unknown", max_length=16)
    referring_clinician = pw.CharField(default="", max_length=200)
    symptoms = pw.TextField(default="")
    wbc = pw.FloatField(null=True)        # white cells, 10^9/L
    hemoglobin = pw.FloatField(null=True)  # g/dL
    platelets = pw.FloatField(null=True)  # 10^9/L
    notes = pw.TextField(default="")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    version = pw.IntegerField(default=1)


class Sample(BaseModel):
    patient = pw.ForeignKeyField(Patient, backref="samples", on_delete="RESTRICT")
    collected_at = pw.DateTimeField(null=True)
    specimen_type = pw.CharField(default="peripheral blood", max_length=64)
    stain = pw.CharField(default="May-Grünwald-Giemsa", max_length=64)
    notes = pw.TextField(default="")
    created_at = pw.DateTimeField(default=utcnow)
    created_by = pw.CharField(default="", max_length=64)
    version = pw.IntegerField(default=1)


class Capture(BaseModel):
    sample = pw.ForeignKeyField(Sample, backref="captures", on_delete="RESTRICT")
    image_path = pw.CharField()  # relative to the data directory
    sha256 = pw.CharField(max_length=64, index=True)
    source = pw.CharField(max_length=16)  # "camera" | "upload"
    original_name = pw.CharField(default="", max_length=255)
    width = pw.IntegerField(default=0)
    height = pw.IntegerField(default=0)
    camera_meta = JSONField(null=True)
    quality = JSONField(null=True)
    status = pw.CharField(default="queued", max_length=16)
    error = pw.TextField(default="")
    flag = pw.CharField(default="", max_length=32)
    cell_count = pw.IntegerField(default=0)
    blast_count = pw.IntegerField(default=0)
    review_count = pw.IntegerField(default=0)
    model_id = pw.CharField(default="", max_length=128)
    timings_ms = JSONField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    created_by = pw.CharField(default="", max_length=64)
    analysed_at = pw.DateTimeField(null=True)
    version = pw.IntegerField(default=1)
    # v4: which model produced the results (ModelInfo.identity(): name, variant, version, sha256, embedded
    # provenance and validation figures) and the decision settings in force (threshold, review band).
    # None for captures analysed before v4: reports say "model not recorded".
    model_identity = JSONField(null=True)
    decision = JSONField(null=True)
    # v7 (issue 15): what the frame file is ("jpeg", "png", "tiff", "webp"; "" before v7: a PNG of the decoded
    # pixels), the hash of the decoded pixels (duplicates), the thumbnail, the bytes kept on disk, and when the
    # retention policy pruned the full frame (None: kept). See device/services/frame_files.py and retention.py.
    # Defaults in SQL only (migration v7), so rows written by older code paths still insert (peewee omits them).
    original_format = pw.CharField(max_length=16, constraints=[pw.SQL("DEFAULT ''")])
    pixels_sha256 = pw.CharField(max_length=64, constraints=[pw.SQL("DEFAULT ''")])
    thumb_path = pw.CharField(constraints=[pw.SQL("DEFAULT ''")])
    stored_bytes = pw.IntegerField(constraints=[pw.SQL("DEFAULT 0")])
    frame_pruned_at = pw.DateTimeField(null=True)


class Cell(BaseModel):
    capture = pw.ForeignKeyField(Capture, backref="cells", on_delete="CASCADE")
    x = pw.FloatField()
    y = pw.FloatField()
    w = pw.FloatField()
    h = pw.FloatField()
    crop_path = pw.CharField(default="")
    ai_label = pw.CharField(max_length=16)
    p_blast = pw.FloatField()
    needs_review = pw.BooleanField(default=False)
    edge = pw.BooleanField(default=False)
    reviewer_label = pw.CharField(null=True, max_length=16)
    reviewed_by = pw.CharField(null=True, max_length=64)
    reviewed_at = pw.DateTimeField(null=True)
    # v5: "reviewer" (the reviewer's own label) or "ai_accepted" (the reviewer accepted the AI's label as it was,
    # with "accept the remaining AI labels"); None while not reviewed.
    label_source = pw.CharField(null=True, max_length=16)

    @property
    def final_label(self) -> str:
        return self.reviewer_label or self.ai_label


class Report(BaseModel):
    """A diagnosis for a sample. Amending creates a new version; the old row is kept, marked amended."""

    sample = pw.ForeignKeyField(Sample, backref="reports", on_delete="RESTRICT")
    version = pw.IntegerField(default=1)
    status = pw.CharField(default="draft", max_length=16)
    ai_summary = JSONField(null=True)
    conclusion = pw.TextField(default="")
    amendment_reason = pw.TextField(default="")
    supersedes = pw.ForeignKeyField("self", null=True, backref="superseded_by", on_delete="RESTRICT")
    created_at = pw.DateTimeField(default=utcnow)
    created_by = pw.CharField(default="", max_length=64)
    signed_by = pw.CharField(null=True, max_length=64)
    signed_at = pw.DateTimeField(null=True)
    # v5: why the pathologist signed with fewer white cells counted than the minimum (None: no override given)
    override_reason = pw.TextField(null=True)

    class Meta:
        indexes = ((("sample", "version"), True),)


class AuditEvent(BaseModel):
    at = pw.DateTimeField(default=utcnow, index=True)
    username = pw.CharField(default="", max_length=64)  # text, not a key: users may be renamed or disabled
    action = pw.CharField(max_length=32)  # create | update | view | sign | amend | login | ...
    entity = pw.CharField(default="", max_length=32)
    entity_id = pw.CharField(default="", max_length=64)
    before = JSONField(null=True)
    after = JSONField(null=True)
    address = pw.CharField(default="", max_length=64)
    detail = pw.TextField(default="")


class Setting(BaseModel):
    """Device settings changed from the admin pages (thresholds, camera, model)."""

    key = pw.CharField(primary_key=True, max_length=64)
    value = JSONField()
    updated_at = pw.DateTimeField(default=utcnow)
    updated_by = pw.CharField(default="", max_length=64)


ALL_MODELS = (User, LoginFailure, Patient, Sample, Capture, Cell, Report, AuditEvent, Setting)


def open_database(path: str | Path, synchronous: str | None = None) -> pw.SqliteDatabase:
    """Open (creating if needed) the device database, bind the models and migrate it.

    ``synchronous`` is "full" (default: every commit is on disk before it returns, so a power cut never
    loses a committed clinical record) or "normal" (WAL: a crash may lose the last commits, never
    consistency); None takes the process-wide storage options of ``device/store/atrest.py`` (the config's
    ``storage.synchronous``). An encrypted data directory opens through SQLCipher with its key.
    """
    from device.store import atrest
    from device.store.migrations import migrate

    path = Path(path)
    private_dir(path.parent)
    database = atrest.database_for(path, pragmas={
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": (synchronous or atrest.options().synchronous).lower(),
        "busy_timeout": 10_000,
    })
    db_proxy.initialize(database)
    database.connect(reuse_if_open=True)
    migrate(database, path)
    private_database_file(path)  # 0600 (and its -wal, -shm): patient records are for the service user only
    return database


def audit(action: str, entity: str = "", entity_id: object = "", *, username: str = "", before=None,
          after=None, address: str = "", detail: str = "") -> AuditEvent:
    """Append one audit event. Call inside the same transaction as the change it records."""
    return AuditEvent.create(action=action, entity=entity, entity_id=str(entity_id), username=username,
                             before=before, after=after, address=address, detail=detail)


def row_dict(row: pw.Model, exclude: tuple[str, ...] = ("password_hash",)) -> dict:
    """A JSON-ready dict of a row's own columns (foreign keys as ids), for audit before/after and the API."""
    out = {}
    for name, field in row._meta.fields.items():
        if name in exclude:
            continue
        value = getattr(row, field.column_name if isinstance(field, pw.ForeignKeyField) else name)
        if isinstance(field, pw.ForeignKeyField):
            value = row.__data__.get(name)
        if isinstance(value, (dt.datetime, dt.date)):
            value = value.isoformat()
        out[name] = value
    return out


def changes(before: dict, after: dict) -> tuple[dict, dict]:
    """Only the keys that differ, for a compact before/after in the audit trail."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}
