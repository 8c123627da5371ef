"""Numbered migrations of the central database (SQLite or PostgreSQL).

The version is kept in a one-row table ``central_schema`` (portable across
both backends). v1 creates the tables from the models with peewee, which
writes each backend's own SQL; later migrations must use
``playhouse.migrate`` (backend-neutral) and never edit v1's models silently:
``tests/test_central_*`` compare the models with the migrated schema.
"""

from __future__ import annotations

import peewee as pw


def _v1_initial(database: pw.Database) -> None:
    from sync.central_models import CENTRAL_MODELS

    database.create_tables(CENTRAL_MODELS)


MIGRATIONS = [_v1_initial]


def schema_version(database: pw.Database) -> int:
    database.execute_sql("CREATE TABLE IF NOT EXISTS central_schema (version INTEGER NOT NULL)")
    row = database.execute_sql("SELECT MAX(version) FROM central_schema").fetchone()
    return int(row[0] or 0)


def migrate(database: pw.Database) -> int:
    current = schema_version(database)
    for number in range(current + 1, len(MIGRATIONS) + 1):
        with database.atomic():
            MIGRATIONS[number - 1](database)
            database.execute_sql("INSERT INTO central_schema (version) VALUES (%d)" % number)
    return len(MIGRATIONS)
