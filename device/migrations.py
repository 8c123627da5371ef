"""Numbered schema migrations for the device database, tracked in ``PRAGMA user_version``.

Each migration runs in one transaction. Before migrating an existing database
a consistent copy is taken with SQLite's online backup API
(``allscope.db.bak-v<N>``), so a failed upgrade can be rolled back by hand.
Add a migration by appending a function to ``MIGRATIONS``; never edit a
released one.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import peewee as pw

from device.errors import AllscopeError

log = logging.getLogger(__name__)


# Frozen SQL, not ``create_tables(models)``: a later change to a model must come
# with its own migration, and a fresh database must go through the same steps
# as an old one. tests/test_records.py checks that models and schema agree.
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


MIGRATIONS = [_v1_initial]


def schema_version(database: pw.SqliteDatabase) -> int:
    return database.execute_sql("PRAGMA user_version").fetchone()[0]


def _backup(path: Path, version: int) -> Path:
    target = path.with_name(f"{path.name}.bak-v{version}")
    source = sqlite3.connect(str(path))
    try:
        dest = sqlite3.connect(str(target))
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
