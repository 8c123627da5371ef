"""Schema v6 (issue 14): patient identifiers are unique ignoring case and surrounding spaces, kept as typed.

An existing database holding "mrn-1" and "MRN-1" (allowed before v6) migrates without failing: both records
are kept as they are, and any new identifier equal to them up to case is refused."""

from __future__ import annotations

import peewee as pw
import pytest

from device.store import migrations
from device.store.records import Patient, open_database


def _database_at_v4(path, identifiers: list[str]) -> None:
    """A database as the software before v5/v6 left it, holding patients with ``identifiers``."""
    database = pw.SqliteDatabase(str(path), pragmas={"foreign_keys": 1})
    database.connect()
    for number, step in enumerate(migrations.MIGRATIONS[:4], start=1):
        with database.atomic():
            step(database)
            database.execute_sql(f"PRAGMA user_version = {number}")
    for identifier in identifiers:
        database.execute_sql("INSERT INTO patient (identifier, name, sex, referring_clinician, symptoms, notes, "
                             "created_at, updated_at, version) VALUES (?, 'X', 'unknown', '', '', '', 0, 0, 1)",
                             (identifier,))
    database.close()


def test_identifiers_differing_in_case_or_spaces_are_one_patient(tmp_path):
    open_database(tmp_path / "allscope.db")
    Patient.create(identifier="mrn-2024-0117", name="A")
    for other in ("MRN-2024-0117", "Mrn-2024-0117", " mrn-2024-0117 "):
        with pytest.raises(pw.IntegrityError):
            Patient.create(identifier=other, name="B")
    Patient.create(identifier="MRN-2024-0118", name="C")
    assert [p.identifier for p in Patient.select().order_by(Patient.id)] == ["mrn-2024-0117", "MRN-2024-0118"]


def test_existing_case_duplicates_migrate_and_stay_while_new_ones_are_refused(tmp_path):
    path = tmp_path / "allscope.db"
    _database_at_v4(path, ["mrn-1", "MRN-1", "other", "Mrn-1 "])
    database = open_database(path)  # must not fail
    assert migrations.schema_version(database) == len(migrations.MIGRATIONS)
    assert path.with_name("allscope.db.bak-v4").exists()
    assert [p.identifier for p in Patient.select().order_by(Patient.id)] == ["mrn-1", "MRN-1", "other", "Mrn-1 "]
    with pytest.raises(pw.IntegrityError):
        Patient.create(identifier="mRN-1", name="new")
    with pytest.raises(pw.IntegrityError):
        Patient.create(identifier="OTHER", name="new")
    kept = Patient.get(Patient.identifier == "MRN-1")
    kept.name = "edited"  # a kept duplicate can still be edited
    kept.save()
    index = database.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'patient_identifier_nocase'").fetchone()
    assert "lower(trim(identifier))" in index[0] and "NOT IN (2, 4)" in index[0]


def test_a_database_without_duplicates_gets_a_plain_unique_index(tmp_path):
    path = tmp_path / "allscope.db"
    _database_at_v4(path, ["a-1", "b-2"])
    database = open_database(path)
    index = database.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'patient_identifier_nocase'").fetchone()
    assert "WHERE" not in index[0]
