"""Numbered schema migrations for the device database, tracked in ``PRAGMA user_version``.

Each migration runs in one transaction. Before migrating an existing database
a consistent copy is taken with SQLite's online backup API
(``allscope.db.bak-v<N>``), so a failed upgrade can be rolled back by hand.
Add a migration by appending a function to ``MIGRATIONS``; never edit a
released one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import peewee as pw

from device.errors import AllscopeError

log = logging.getLogger(__name__)


# Frozen SQL, not ``create_tables(models)``: a later change to a model must come
# with its own migration, and a fresh database must go through the same steps
# as an old one. tests/store/test_records.py checks that models and schema agree.
V1_SCHEMA = (
    'CREATE TABLE "audit_event" ("id" INTEGER NOT NULL PRIMARY KEY, "at" DATETIME NOT NULL, "username" VARCHAR(64) NOT NULL, "action" VARCHAR(32) NOT NULL, "entity" VARCHAR(32) NOT NULL, "entity_id" VARCHAR(64) NOT NULL, "before" TEXT, "after" TEXT, "address" VARCHAR(64) NOT NULL, "detail" TEXT NOT NULL)',
    'CREATE INDEX "audit_event_at" ON "audit_event" ("at")',
    'CREATE TABLE "patient" ("id" INTEGER NOT NULL PRIMARY KEY, "identifier" VARCHAR(64) NOT NULL, "name" VARCHAR(200) NOT NULL, "date_of_birth" DATE, "sex" VARCHAR(16) NOT NULL, "referring_clinician" VARCHAR(200) NOT NULL, "symptoms" TEXT NOT NULL, "wbc" REAL, "hemoglobin" REAL, "platelets" REAL, "notes" TEXT NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL, "version" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "patient_identifier" ON "patient" ("identifier")',
    'CREATE TABLE "sample" ("id" INTEGER NOT NULL PRIMARY KEY, "patient_id" INTEGER NOT NULL, "collected_at" DATETIME, "specimen_type" VARCHAR(64) NOT NULL, "stain" VARCHAR(64) NOT NULL, "notes" TEXT NOT NULL, "created_at" DATETIME NOT NULL, "created_by" VARCHAR(64) NOT NULL, "version" INTEGER NOT NULL, FOREIGN KEY ("patient_id") REFERENCES "patient" ("id") ON DELETE RESTRICT)',
    'CREATE INDEX "sample_patient_id" ON "sample" ("patient_id")',
    'CREATE TABLE "capture" ("id" INTEGER NOT NULL PRIMARY KEY, "sample_id" INTEGER NOT NULL, "image_path" VARCHAR(255) NOT NULL, "sha256" VARCHAR(64) NOT NULL, "source" VARCHAR(16) NOT NULL, "original_name" VARCHAR(255) NOT NULL, "width" INTEGER NOT NULL, "height" INTEGER NOT NULL, "camera_meta" TEXT, "quality" TEXT, "status" VARCHAR(16) NOT NULL, "error" TEXT NOT NULL, "flag" VARCHAR(32) NOT NULL, "cell_count" INTEGER NOT NULL, "blast_count" INTEGER NOT NULL, "review_count" INTEGER NOT NULL, "model_id" VARCHAR(128) NOT NULL, "timings_ms" TEXT, "created_at" DATETIME NOT NULL, "created_by" VARCHAR(64) NOT NULL, "analysed_at" DATETIME, "version" INTEGER NOT NULL, FOREIGN KEY ("sample_id") REFERENCES "sample" ("id") ON DELETE RESTRICT)',
    'CREATE INDEX "capture_sample_id" ON "capture" ("sample_id")',
    'CREATE INDEX "capture_sha256" ON "capture" ("sha256")',
    'CREATE TABLE "cell" ("id" INTEGER NOT NULL PRIMARY KEY, "capture_id" INTEGER NOT NULL, "x" REAL NOT NULL, "y" REAL NOT NULL, "w" REAL NOT NULL, "h" REAL NOT NULL, "crop_path" VARCHAR(255) NOT NULL, "ai_label" VARCHAR(16) NOT NULL, "p_blast" REAL NOT NULL, "needs_review" INTEGER NOT NULL, "edge" INTEGER NOT NULL, "reviewer_label" VARCHAR(16), "reviewed_by" VARCHAR(64), "reviewed_at" DATETIME, FOREIGN KEY ("capture_id") REFERENCES "capture" ("id") ON DELETE CASCADE)',
    'CREATE INDEX "cell_capture_id" ON "cell" ("capture_id")',
    'CREATE TABLE "login_failure" ("id" INTEGER NOT NULL PRIMARY KEY, "key" VARCHAR(255) NOT NULL, "at" DATETIME NOT NULL)',
    'CREATE INDEX "login_failure_key" ON "login_failure" ("key")',
    'CREATE INDEX "login_failure_at" ON "login_failure" ("at")',
    'CREATE TABLE "report" ("id" INTEGER NOT NULL PRIMARY KEY, "sample_id" INTEGER NOT NULL, "version" INTEGER NOT NULL, "status" VARCHAR(16) NOT NULL, "ai_summary" TEXT, "conclusion" TEXT NOT NULL, "amendment_reason" TEXT NOT NULL, "supersedes_id" INTEGER, "created_at" DATETIME NOT NULL, "created_by" VARCHAR(64) NOT NULL, "signed_by" VARCHAR(64), "signed_at" DATETIME, FOREIGN KEY ("sample_id") REFERENCES "sample" ("id") ON DELETE RESTRICT, FOREIGN KEY ("supersedes_id") REFERENCES "report" ("id") ON DELETE RESTRICT)',
    'CREATE INDEX "report_sample_id" ON "report" ("sample_id")',
    'CREATE INDEX "report_supersedes_id" ON "report" ("supersedes_id")',
    'CREATE UNIQUE INDEX "report_sample_id_version" ON "report" ("sample_id", "version")',
    'CREATE TABLE "setting" ("key" VARCHAR(64) NOT NULL PRIMARY KEY, "value" TEXT NOT NULL, "updated_at" DATETIME NOT NULL, "updated_by" VARCHAR(64) NOT NULL)',
    'CREATE TABLE "user" ("id" INTEGER NOT NULL PRIMARY KEY, "username" VARCHAR(64) NOT NULL, "full_name" VARCHAR(200) NOT NULL, "password_hash" VARCHAR(255) NOT NULL, "roles" VARCHAR(255) NOT NULL, "disabled" INTEGER NOT NULL, "created_at" DATETIME NOT NULL, "last_login_at" DATETIME)',
    'CREATE UNIQUE INDEX "user_username" ON "user" ("username")',
)


def _v1_initial(database: pw.SqliteDatabase) -> None:
    for statement in V1_SCHEMA:
        database.execute_sql(statement)
    # The audit trail is append-only, enforced by the database itself.
    for verb in ("UPDATE", "DELETE"):
        database.execute_sql(
            f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
            f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END")


# v2: the sync outbox (issue 4). Triggers, not application code, enqueue every
# change of a synced row: the entry is written by the statement that changes
# the row, inside its transaction, so no code path can forget it and a rolled
# back change leaves no entry. A payload is the whole row as JSON (JSON
# columns embedded as JSON) plus "patient_identifier" for the central's search;
# a capture's payload embeds its cells (code that changes cells bumps the
# capture's version, which re-sends it). An UPDATE that changes no column
# enqueues nothing. sync/agent/outbox.py holds the models; tests/sync_device/test_outbox.py
# fails when a model gains a column these payloads do not carry.
_V2_TABLES = (
    'CREATE TABLE "sync_version" ("entity" TEXT NOT NULL, "record_id" INTEGER NOT NULL, "version" INTEGER NOT NULL, PRIMARY KEY ("entity", "record_id"))',
    'CREATE TABLE "outbox" ("id" INTEGER PRIMARY KEY AUTOINCREMENT, "entity" TEXT NOT NULL, "record_id" INTEGER NOT NULL, "version" INTEGER NOT NULL, "payload" TEXT NOT NULL, "created_at" TEXT NOT NULL, "attempts" INTEGER NOT NULL DEFAULT 0, "last_error" TEXT NOT NULL DEFAULT \'\', "sent_at" TEXT)',
    'CREATE INDEX "outbox_entity_record_id" ON "outbox" ("entity", "record_id")',
    'CREATE TABLE "sync_file" ("sha256" TEXT NOT NULL PRIMARY KEY, "name" TEXT NOT NULL, "size" INTEGER NOT NULL, "chunks" INTEGER NOT NULL, "acked" TEXT NOT NULL, "complete" INTEGER NOT NULL DEFAULT 0, "updated_at" TEXT NOT NULL)',
    'CREATE TABLE "sync_state" ("key" TEXT NOT NULL PRIMARY KEY, "value" TEXT NOT NULL, "updated_at" TEXT NOT NULL)',
)
_V2_JSON = "CASE WHEN json_valid({r}.{c}) THEN json({r}.{c}) ELSE {r}.{c} END"
_V2_COLUMNS = {  # entity -> (plain columns, JSON columns, extra payload members); {r} is the row
    "patient": ("id identifier name date_of_birth sex referring_clinician symptoms wbc hemoglobin platelets notes "
                "created_at updated_at version", "",
                "'patient_identifier', {r}.identifier"),
    "sample": ("id patient_id collected_at specimen_type stain notes created_at created_by version", "",
               "'patient_identifier', (SELECT p.identifier FROM patient AS p WHERE p.id = {r}.patient_id)"),
    "capture": ("id sample_id image_path sha256 source original_name width height status error flag cell_count "
                "blast_count review_count model_id created_at created_by analysed_at version",
                "camera_meta quality timings_ms",
                "'patient_identifier', (SELECT p.identifier FROM patient AS p JOIN sample AS s ON s.patient_id = p.id "
                "WHERE s.id = {r}.sample_id), 'cells', json((SELECT json_group_array(json_object('id', c.id, "
                "'capture_id', c.capture_id, 'x', c.x, 'y', c.y, 'w', c.w, 'h', c.h, 'crop_path', c.crop_path, "
                "'ai_label', c.ai_label, 'p_blast', c.p_blast, 'needs_review', c.needs_review, 'edge', c.edge, "
                "'reviewer_label', c.reviewer_label, 'reviewed_by', c.reviewed_by, 'reviewed_at', c.reviewed_at)) "
                "FROM (SELECT * FROM cell WHERE capture_id = {r}.id ORDER BY id) AS c))"),
    "report": ("id sample_id version status conclusion amendment_reason supersedes_id created_at created_by signed_by "
               "signed_at", "ai_summary",
               "'patient_identifier', (SELECT p.identifier FROM patient AS p JOIN sample AS s ON s.patient_id = p.id "
               "WHERE s.id = {r}.sample_id)"),
}
_V2_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _v2_payload(entity: str, row: str, columns: dict = _V2_COLUMNS) -> str:
    plain, as_json, extra = columns[entity]
    members = [f"'{c}', {row}.{c}" for c in plain.split()]
    members += [f"'{c}', " + _V2_JSON.format(r=row, c=c) for c in as_json.split()]
    return "json_object(" + ", ".join(members + [extra.format(r=row)]) + ")"


def _v2_sync_outbox(database: pw.SqliteDatabase) -> None:
    for statement in _V2_TABLES:
        database.execute_sql(statement)
    for entity, (plain, as_json, _) in _V2_COLUMNS.items():  # parents first, so the backlog arrives in order
        # Rows recorded before the upgrade are queued too: nothing recorded may stay behind.
        database.execute_sql(f'INSERT INTO sync_version (entity, record_id, version) '
                             f'SELECT \'{entity}\', id, 1 FROM "{entity}"')
        database.execute_sql(f'INSERT INTO outbox (entity, record_id, version, payload, created_at) '
                             f'SELECT \'{entity}\', r.id, 1, {_v2_payload(entity, "r")}, {_V2_NOW} '
                             f'FROM "{entity}" AS r ORDER BY r.id')
        _sync_triggers(database, entity, _V2_COLUMNS)


def _sync_triggers(database: pw.SqliteDatabase, entity: str, columns: dict) -> None:
    """The insert and update triggers that enqueue ``entity``'s rows with the payload columns of ``columns``."""
    plain, as_json, _ = columns[entity]
    enqueue = (f"INSERT INTO sync_version (entity, record_id, version) VALUES ('{entity}', NEW.id, 1) "
               f"ON CONFLICT (entity, record_id) DO UPDATE SET version = version + 1; "
               f"INSERT INTO outbox (entity, record_id, version, payload, created_at) "
               f"SELECT '{entity}', NEW.id, v.version, {_v2_payload(entity, 'NEW', columns)}, {_V2_NOW} "
               f"FROM sync_version AS v WHERE v.entity = '{entity}' AND v.record_id = NEW.id;")
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in (plain + " " + as_json).split())
    database.execute_sql(f"CREATE TRIGGER sync_{entity}_insert AFTER INSERT ON \"{entity}\" BEGIN {enqueue} END")
    database.execute_sql(f"CREATE TRIGGER sync_{entity}_update AFTER UPDATE ON \"{entity}\" "
                         f"WHEN {changed} BEGIN {enqueue} END")


def _v3_session_epoch(database: pw.SqliteDatabase) -> None:
    database.execute_sql('ALTER TABLE "user" ADD COLUMN "session_epoch" INTEGER NOT NULL DEFAULT 0')


# v4: a capture records the model that produced its results and the decision settings in force (issue 11:
# a report names the model that ran, not the shipped one). Both JSON, NULL for captures analysed before:
# reports say "model not recorded" for those. The capture's sync triggers are remade so both travel.
_V4_COLUMNS = {"capture": (_V2_COLUMNS["capture"][0], _V2_COLUMNS["capture"][1] + " model_identity decision",
                           _V2_COLUMNS["capture"][2])}


def _v4_capture_model(database: pw.SqliteDatabase) -> None:
    database.execute_sql('ALTER TABLE "capture" ADD COLUMN "model_identity" TEXT')
    database.execute_sql('ALTER TABLE "capture" ADD COLUMN "decision" TEXT')
    for verb in ("insert", "update"):
        database.execute_sql(f"DROP TRIGGER sync_capture_{verb}")
    _sync_triggers(database, "capture", _V4_COLUMNS)


# v5 (issue 14): the reviewer's differential and what a signature overrode. A cell records how its reviewed label
# came about (``label_source``: "reviewer", or "ai_accepted" when the reviewer accepted the AI's label as it was);
# labels given before v5 were the reviewer's own. A report records why it was signed below the minimum white
# cell count (``override_reason``, NULL when no override was needed). Both travel: the capture's payload embeds its cells (label_source added to
# each), the report's payload carries the reason; the central keeps payloads as they come (additive members).
_V5_CELL = "'reviewed_at', c.reviewed_at)"
_V5_COLUMNS = {
    "capture": (_V4_COLUMNS["capture"][0], _V4_COLUMNS["capture"][1],
                _V2_COLUMNS["capture"][2].replace(_V5_CELL, "'reviewed_at', c.reviewed_at, "
                                                            "'label_source', c.label_source)")),
    "report": (_V2_COLUMNS["report"][0] + " override_reason", _V2_COLUMNS["report"][1], _V2_COLUMNS["report"][2]),
}


def _v5_differential(database: pw.SqliteDatabase) -> None:
    database.execute_sql('ALTER TABLE "cell" ADD COLUMN "label_source" VARCHAR(16)')
    database.execute_sql('ALTER TABLE "report" ADD COLUMN "override_reason" TEXT')
    database.execute_sql("UPDATE cell SET label_source = 'reviewer' WHERE reviewer_label IS NOT NULL")
    for entity in ("capture", "report"):
        for verb in ("insert", "update"):
            database.execute_sql(f"DROP TRIGGER sync_{entity}_{verb}")
        _sync_triggers(database, entity, _V5_COLUMNS)


# v6: patient identifiers are unique ignoring case and surrounding spaces ("mrn-2024-0117" and
# "MRN-2024-0117 " are one patient); the identifier is kept as typed. No new column (so no sync payload
# change): a unique index on the normalised expression, which the application's own check
# (webui/forms/patients.py) uses too. A database may already hold such duplicates: both records are kept as
# they are (merging patients is a clinical decision, not a migration's), the later ones are left out of the
# index by id, and every new or changed identifier is checked against all records, the kept duplicates
# included (the first of each group is in the index; the form also compares against every row).
IDENTIFIER_KEY = "lower(trim(identifier))"


def _v6_patient_identifier_nocase(database: pw.SqliteDatabase) -> None:
    rows = database.execute_sql(
        "SELECT id FROM patient AS p WHERE EXISTS (SELECT 1 FROM patient AS q WHERE q.id < p.id AND "
        "lower(trim(q.identifier)) = lower(trim(p.identifier))) ORDER BY id").fetchall()
    kept = [int(row[0]) for row in rows]
    if kept:
        log.warning("patient identifiers differing only in case or spaces are kept as they are (later records "
                    "%s): new ones are refused", ", ".join(map(str, kept)))
    where = f" WHERE id NOT IN ({', '.join(map(str, kept))})" if kept else ""
    database.execute_sql(f'CREATE UNIQUE INDEX "patient_identifier_nocase" ON "patient" ({IDENTIFIER_KEY}){where}')


# v7 (issue 15, storage growth): a capture keeps the file as it arrived (an upload's own bytes; a camera still as
# WebP lossless) instead of a PNG of the decoded pixels. ``sha256`` stays the hash of the stored frame file (so of
# the original from v7 on); ``original_format`` says what it is ("" for frames stored before v7: a PNG of the
# decoded pixels); ``pixels_sha256`` is the hash of the decoded pixels (the duplicate check; "" before v7);
# ``thumb_path`` the small picture written at analysis time; ``stored_bytes`` what the capture keeps on disk
# (frame, crops, thumbnail: the disk-space guard's rate of writes); ``frame_pruned_at`` when the retention policy
# deleted the full frame (device/services/retention.py). All travel (the central keeps payloads as they come).
_V7_CAPTURE = {"capture": (_V5_COLUMNS["capture"][0] + " original_format pixels_sha256 thumb_path stored_bytes "
                                                       "frame_pruned_at",
                           _V5_COLUMNS["capture"][1], _V5_COLUMNS["capture"][2])}


def _v7_frame_storage(database: pw.SqliteDatabase) -> None:
    for statement in ('ADD COLUMN "original_format" VARCHAR(16) NOT NULL DEFAULT \'\'',
                      'ADD COLUMN "pixels_sha256" VARCHAR(64) NOT NULL DEFAULT \'\'',
                      'ADD COLUMN "thumb_path" VARCHAR(255) NOT NULL DEFAULT \'\'',
                      'ADD COLUMN "stored_bytes" INTEGER NOT NULL DEFAULT 0',
                      'ADD COLUMN "frame_pruned_at" DATETIME'):
        database.execute_sql(f'ALTER TABLE "capture" {statement}')
    for verb in ("insert", "update"):
        database.execute_sql(f"DROP TRIGGER sync_capture_{verb}")
    _sync_triggers(database, "capture", _V7_CAPTURE)


MIGRATIONS = [_v1_initial, _v2_sync_outbox, _v3_session_epoch, _v4_capture_model, _v5_differential,
              _v6_patient_identifier_nocase, _v7_frame_storage]


def schema_version(database: pw.SqliteDatabase) -> int:
    return database.execute_sql("PRAGMA user_version").fetchone()[0]


def _backup(path: Path, version: int) -> Path:
    """A consistent copy through SQLite's online backup API (keyed like the original when encrypted at rest)."""
    from device.store import atrest

    target = path.with_name(f"{path.name}.bak-v{version}")
    source = atrest.connect(path)
    try:
        dest = atrest.connect(target, root=path.parent)
        with dest:
            source.backup(dest)
        dest.close()
    finally:
        source.close()
    return target


def migrate(database: pw.SqliteDatabase, path: Path) -> int:
    """Bring the database to the newest schema; returns the version."""
    current = schema_version(database)
    target = len(MIGRATIONS)
    if current > target:
        raise AllscopeError(f"database {path} has schema version {current}, newer than this software "
                            f"({target}): upgrade allscope or restore a backup")
    if current and current < target:
        log.warning("backing up %s before migrating from v%d to v%d", path, current, target)
        _backup(path, current)
    for number in range(current + 1, target + 1):
        with database.atomic():
            MIGRATIONS[number - 1](database)
            database.execute_sql(f"PRAGMA user_version = {number}")
    return target
