"""``allscope central backup create|restore`` on a real SQLite central (online, hashed, atomic, refusing what it
must), and the README's pg_dump / pg_restore procedure run against the test PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from central_web_kit import device_row, patient_row, report_row
from conftest import REPO_ROOT


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "device.cli", "central", "backup", *map(str, args)], text=True,
                          capture_output=True, cwd=REPO_ROOT, timeout=120)


def _central(data):
    from sync.central.db import open_central_database

    database = open_central_database(data / "central.db")
    device = device_row("scope-kano-01")
    patient_row(device, 1, "P-1", "Ada Obi")
    report_row(device, 4, "P-1", status="signed", conclusion="blasts seen")
    (data / "files").mkdir(exist_ok=True)
    (data / "files" / "frame.png").write_bytes(b"\x89PNG not really" * 100)
    return database


def _counts(path) -> tuple:
    connection = sqlite3.connect(path)
    try:
        return tuple(connection.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                     for t in ("device", "received_record", "audit_event"))
    finally:
        connection.close()


def test_create_while_open_then_restore_elsewhere(tmp_path):
    data, backups = tmp_path / "central", tmp_path / "backups"
    data.mkdir()
    database = _central(data)  # left open, as by a running receiver: the online backup API copes
    try:
        made = _cli("create", "--data-dir", data, "--to", backups)
    finally:
        database.close()
    assert made.returncode == 0, made.stderr
    backup = next(backups.glob("allscope-central-backup-*"))
    assert made.stdout.strip() == f"backup written to {backup}"
    manifest = json.loads((backup / "manifest.json").read_text())
    assert set(manifest["files"]) == {"central.db", "data/files/frame.png"}  # not the live -wal / -shm
    assert not list(backups.glob(".partial-*"))

    target = tmp_path / "restored"
    restored = _cli("restore", backup, "--data-dir", target)
    assert restored.returncode == 0, restored.stderr
    assert _counts(target / "central.db")[:2] == _counts(data / "central.db")[:2] == (1, 2)
    assert (target / "files" / "frame.png").read_bytes() == (data / "files" / "frame.png").read_bytes()
    from device.store.records import AuditEvent
    from sync.central.db import open_central_database

    database = open_central_database(target / "central.db")
    try:
        assert AuditEvent.select().where(AuditEvent.action == "restore").count() == 1
        assert AuditEvent.select().where(AuditEvent.action == "backup").count() == 0  # made after the copy
    finally:
        database.close()

    again = _cli("restore", backup, "--data-dir", target)  # not empty any more
    assert again.returncode == 2 and "is not empty" in again.stderr and "Traceback" not in again.stderr
    forced = _cli("restore", backup, "--data-dir", target, "--force")
    assert forced.returncode == 0 and "previous contents in" in forced.stdout
    aside = next(target.glob(".before-restore-*"))
    assert (aside / "central.db").is_file()


def test_a_damaged_backup_is_refused_before_anything_changes(tmp_path):
    data, backups = tmp_path / "central", tmp_path / "backups"
    data.mkdir()
    _central(data).close()
    assert _cli("create", "--data-dir", data, "--to", backups).returncode == 0
    backup = next(backups.glob("allscope-central-backup-*"))
    (backup / "data" / "files" / "frame.png").write_bytes(b"tampered")
    target = tmp_path / "restored"
    refused = _cli("restore", backup, "--data-dir", target)
    assert refused.returncode == 2 and "does not match its hash" in refused.stderr
    assert not (target / "central.db").exists()
    assert _cli("restore", tmp_path, "--data-dir", target).stderr.strip().endswith("(no manifest.json)")


def test_restore_refuses_a_database_in_use(tmp_path):
    data, backups = tmp_path / "central", tmp_path / "backups"
    data.mkdir()
    _central(data).close()
    assert _cli("create", "--data-dir", data, "--to", backups).returncode == 0
    backup = next(backups.glob("allscope-central-backup-*"))
    holder = sqlite3.connect(data / "central.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        refused = _cli("restore", backup, "--data-dir", data, "--force")
    finally:
        holder.rollback()
        holder.close()
    assert refused.returncode == 2 and "is in use: stop allscope central run" in refused.stderr


def test_postgresql_is_refused_with_the_pg_dump_hint(tmp_path):
    run = _cli("create", "--data-dir", tmp_path, "--central-db", "postgresql://allscope@127.0.0.1:1/x")
    assert run.returncode == 2 and "use pg_dump and pg_restore" in run.stderr


def test_pg_dump_and_pg_restore_as_the_readme_says(postgres_server, tmp_path):
    """README, central server, backups: pg_dump --format=custom, then pg_restore --no-owner into an empty
    database; the central opens the copy, finds its records and keeps them append-only."""
    import peewee as pw

    from sync.central.db import open_central_database
    from sync.central.models import Device, ReceivedRecord

    pg_dump, pg_restore = postgres_server.bindir / "pg_dump", postgres_server.bindir / "pg_restore"
    if not pg_dump.exists() or not pg_restore.exists():
        pytest.skip(f"pg_dump or pg_restore not found beside {postgres_server.bindir}/initdb")
    source, copy = postgres_server.create_database(), postgres_server.create_database()
    database = open_central_database(source)
    device = device_row("scope-kano-01")
    patient_row(device, 1, "P-1", "Ada Obi")
    report_row(device, 4, "P-1", status="signed", conclusion="blasts seen")
    database.close()
    dump = tmp_path / "central.dump"
    run = subprocess.run([str(pg_dump), "--format=custom", "--file", str(dump), source], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([str(pg_restore), "--no-owner", "--exit-on-error", "--dbname", copy, str(dump)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    database = open_central_database(copy)
    try:
        assert Device.get().device_id == "scope-kano-01" and ReceivedRecord.select().count() == 2
        with pytest.raises(pw.DatabaseError, match="append-only"):
            with database.atomic():
                ReceivedRecord.delete().execute()
    finally:
        database.close()
