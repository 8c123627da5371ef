"""The device database: migrations agree with the models, the audit trail is append-only, upgrades back up."""

from __future__ import annotations

import sqlite3

import peewee as pw
import pytest

from device.errors import AllscopeError
from device.store import migrations, records
from device.store.records import AuditEvent, Patient, audit, open_database


def _columns(database, table: str) -> set[str]:
    return {row[1] for row in database.execute_sql(f'PRAGMA table_info("{table}")').fetchall()}


def test_migrated_schema_matches_every_model(tmp_path):
    database = open_database(tmp_path / "allscope.db")
    for model in records.ALL_MODELS:
        expected = {field.column_name for field in model._meta.sorted_fields}
        assert _columns(database, model._meta.table_name) == expected, \
            f"{model.__name__}: model and migrations disagree (add a migration for the change)"
    assert migrations.schema_version(database) == len(migrations.MIGRATIONS)
    assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopening_is_idempotent_and_keeps_rows(tmp_path):
    open_database(tmp_path / "allscope.db")
    Patient.create(identifier="P-1", name="A")
    database = open_database(tmp_path / "allscope.db")
    assert Patient.select().count() == 1
    assert not list(tmp_path.glob("*.bak-*"))  # nothing to migrate, no backup
    database.close()


def test_audit_trail_refuses_update_and_delete(tmp_path):
    open_database(tmp_path / "allscope.db")
    event = audit("create", "patient", 1, username="tech", after={"name": "A"})
    with pytest.raises(pw.IntegrityError, match="append-only"):
        AuditEvent.update(username="someone-else").where(AuditEvent.id == event.id).execute()
    with pytest.raises(pw.IntegrityError, match="append-only"):
        AuditEvent.delete().execute()
    assert AuditEvent.get_by_id(event.id).username == "tech"


def test_upgrade_backs_up_first_and_a_failed_step_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "allscope.db"
    open_database(path).close()
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO patient (identifier, name, sex, referring_clinician, symptoms, notes, "
                       "created_at, updated_at, version) VALUES ('P-9', 'B', 'unknown', '', '', '', 0, 0, 1)")
    connection.commit()
    connection.close()

    def broken_next(database):
        database.execute_sql('ALTER TABLE patient ADD COLUMN "ward" TEXT')
        raise RuntimeError("disk pulled mid-migration")

    current = len(migrations.MIGRATIONS)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [broken_next])
    with pytest.raises(RuntimeError, match="mid-migration"):
        open_database(path)
    backup = path.with_name(f"allscope.db.bak-v{current}")
    assert backup.exists()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == current    # not upgraded
    assert "ward" not in {r[1] for r in check.execute("PRAGMA table_info(patient)")}  # rolled back
    assert check.execute("SELECT identifier FROM patient").fetchall() == [("P-9",)]
    check.close()
    assert sqlite3.connect(backup).execute("SELECT identifier FROM patient").fetchall() == [("P-9",)]


def test_a_database_from_newer_software_is_refused(tmp_path):
    path = tmp_path / "allscope.db"
    open_database(path).close()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(AllscopeError, match="newer than this software"):
        open_database(path)
