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

log = logging.getLogger(__name__)


def _v1_initial(database: pw.SqliteDatabase) -> None:
    from device import records

    database.create_tables(records.ALL_MODELS)
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
        raise RuntimeError(f"database {path} has schema version {current}, newer than this software ({target})")
    if current and current < target:
        log.warning("backing up %s before migrating from v%d to v%d", path, current, target)
        _backup(path, current)
    for number in range(current + 1, target + 1):
        with database.atomic():
            MIGRATIONS[number - 1](database)
            database.execute_sql(f"PRAGMA user_version = {number}")
    return target
