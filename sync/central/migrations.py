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
    from sync.central.models import CENTRAL_MODELS

    database.create_tables(CENTRAL_MODELS)


APPEND_ONLY_TABLES = ("audit_event", "received_record")


def _v2_append_only(database: pw.Database) -> None:
    """The audit trail and the received record versions are append-only, enforced by the database itself.

    Keeping every version is the point of the central store: not even a bug in a later
    admin page may rewrite or drop what a device sent.
    """
    if isinstance(database, pw.SqliteDatabase):
        for table in APPEND_ONLY_TABLES:
            for verb in ("UPDATE", "DELETE"):
                database.execute_sql(
                    f'CREATE TRIGGER "{table}_no_{verb.lower()}" BEFORE {verb} ON "{table}" '
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")
        return
    database.execute_sql(
        "CREATE OR REPLACE FUNCTION allscope_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '%% is append-only', TG_TABLE_NAME; END $$")
    for table in APPEND_ONLY_TABLES:
        database.execute_sql(f'CREATE TRIGGER "{table}_append_only" BEFORE UPDATE OR DELETE ON "{table}" '
                             f"FOR EACH ROW EXECUTE FUNCTION allscope_append_only()")


def _v3_session_epoch(database: pw.Database) -> None:
    """The device's User model gained ``session_epoch`` (server-side session revocation); the central shares it."""
    from playhouse.migrate import SchemaMigrator, migrate

    columns = {column.name for column in database.get_columns("user")}
    if "session_epoch" not in columns:  # v1 created the table from the model, which may already have it
        migrate(SchemaMigrator.from_database(database).add_column(
            "user", "session_epoch", pw.IntegerField(default=0)))


def _v4_registered_signing_key(database: pw.Database) -> None:
    """``device.signing_key_fingerprint``: the Ed25519 key an admin registered for the device (issue 13)."""
    from playhouse.migrate import SchemaMigrator, migrate

    columns = {column.name for column in database.get_columns("device")}
    if "signing_key_fingerprint" not in columns:  # v1 made the table from the model, which may already have it
        migrate(SchemaMigrator.from_database(database).add_column(
            "device", "signing_key_fingerprint", pw.CharField(default="", max_length=95)))


def _v5_receivers(database: pw.Database) -> None:
    """``receiver``: each running `allscope central run` and its heartbeat, for the admin UI (issue 16)."""
    from sync.central.models import ReceiverBeat

    database.create_tables([ReceiverBeat], safe=True)  # v1 made it already on a new database



STATUS_COLUMNS = ("software_version", "model_id", "model_name", "model_version")


def _v6_device_status_fields(database: pw.Database) -> None:
    """``device.software_version`` and ``model_id/name/version``: what each device runs, from its status
    messages (issue 16, health at a glance)."""
    from playhouse.migrate import SchemaMigrator, migrate

    columns = {column.name for column in database.get_columns("device")}
    migrator = SchemaMigrator.from_database(database)
    missing = [name for name in STATUS_COLUMNS if name not in columns]  # v1 may have made them from the model
    if missing:
        migrate(*(migrator.add_column("device", name, pw.CharField(default="", max_length=64)) for name in missing))


MIGRATIONS = [_v1_initial, _v2_append_only, _v3_session_epoch, _v4_registered_signing_key, _v5_receivers,
              _v6_device_status_fields]


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
