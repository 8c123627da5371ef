"""``allscope central backup create|restore``: the central's SQLite database and data directory, verified.

A backup is one directory ``allscope-central-backup-<UTC time>/`` under the backup directory::

    central.db       the database, copied with SQLite's online backup API (consistent while the receivers
                     and the admin UI keep writing), then checked with PRAGMA integrity_check
    files/… pki/…    every other file of the central data directory (received images, the fleet PKI when it
                     lives there, the session key), hard-linked when on the same file system, else copied
    manifest.json    size and SHA-256 of every file, written last

Built under a temporary name and renamed into place: a directory without the temporary prefix is complete.
Restore checks every hash before touching anything, refuses a database in use (stop ``central run`` and
``central serve`` first) and, unless ``force``, a non-empty data directory; with ``force`` the old contents
are moved aside into ``.before-restore-<time>/``, never deleted. The same layout and rules as the device's
``allscope backup`` (``device/store/backup.py``). PostgreSQL is backed up with ``pg_dump`` (see the README).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
from pathlib import Path

from device.errors import AllscopeError
from device.store import manifest as backup_manifest
from device.store.atomic import fsync_dir, write_atomic
from device.store.online_copy import copy_checked

PREFIX = "allscope-central-backup-"
TEMP_PREFIX = ".partial-"
MANIFEST = backup_manifest.MANIFEST
DATABASE = "central.db"
FORMAT = 1


class CentralBackupError(AllscopeError):
    """A backup that cannot be made, trusted or restored; one line."""


def sqlite_path(database: str) -> Path:
    if "://" in database:
        raise CentralBackupError("allscope central backup works on a SQLite central database; for PostgreSQL "
                                 "use pg_dump and pg_restore (README, central server: backups)")
    return Path(database).expanduser().resolve()


_sha256 = backup_manifest.describe


def _data_files(root: Path, skip: tuple[Path, ...]) -> list[str]:
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and Path(directory, d) not in skip)
        for name in sorted(names):
            path = Path(directory) / name
            if name.startswith(".") or path in skip or any(path.name == s.name + x for s in skip
                                                             for x in ("-wal", "-shm", "-journal")):
                continue
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def _copy_database(source: Path, target: Path) -> dict:
    problem = copy_checked(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30), sqlite3.connect(target),
                           target)
    if problem:
        raise CentralBackupError(f"the copy of {source} fails integrity_check ({problem})")
    return _sha256(target)


def create_backup(database: str, data_root: Path, to: Path, now: dt.datetime | None = None) -> Path:
    source = sqlite_path(database)
    if not source.is_file():
        raise CentralBackupError(f"no central database at {source}: nothing to back up")
    root, to = Path(data_root).expanduser().resolve(), Path(to).expanduser().resolve()
    if to == root:
        raise CentralBackupError(f"backup directory {to} is the data directory itself: choose another")
    to.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    final = to / f"{PREFIX}{stamp}"
    partial = to / f"{TEMP_PREFIX}{final.name}"
    if final.exists():
        raise CentralBackupError(f"{final} already exists")
    partial.mkdir(mode=0o700)
    try:
        files = {DATABASE: _copy_database(source, partial / DATABASE)}
        for relative in (_data_files(root, skip=(to, source)) if root.is_dir() else []):
            target = partial / "data" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(root / relative, target)
            except OSError:
                shutil.copy2(root / relative, target)
            files[f"data/{relative}"] = _sha256(target)
        manifest = {"format": FORMAT, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "source": {"database": str(source), "data_dir": str(root)}, "files": files}
        write_atomic(partial / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), mode=0o600)
        os.replace(partial, final)
        fsync_dir(to)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def verify(backup: Path) -> dict:
    """The manifest, once every file it lists is present with its size and hash; CentralBackupError if not."""
    return backup_manifest.verify(backup, CentralBackupError, "central backup", DATABASE, FORMAT)


def in_use(database: Path) -> bool:
    if not database.exists():
        return False
    connection = sqlite3.connect(database, timeout=0)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        connection.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as error:
        return "locked" in str(error) or "busy" in str(error)
    finally:
        connection.close()


def _move_aside(root: Path, keep: Path) -> Path | None:
    existing = [p for p in root.iterdir() if not p.name.startswith(".") and p != keep and p not in keep.parents]
    if not existing:
        return None
    aside = root / f".before-restore-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    aside.mkdir()
    for path in existing:
        os.replace(path, aside / path.name)
    return aside


def restore_backup(backup: Path, database: str, data_root: Path, force: bool = False) -> Path | None:
    """Restore into ``data_root`` and ``database``; returns where the old contents went (``force``), or None."""
    backup = Path(backup).expanduser().resolve()
    manifest = verify(backup)
    target_db = sqlite_path(database)
    root = Path(data_root).expanduser().resolve()
    if in_use(target_db):
        raise CentralBackupError(f"the central database {target_db} is in use: stop allscope central run and "
                                 f"allscope central serve first")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    occupied = target_db.exists() or any(not p.name.startswith(".") and p != backup and p not in backup.parents
                                         for p in root.iterdir())
    if occupied and not force:
        raise CentralBackupError(f"{root} (or {target_db}) is not empty: restore into an empty place, or add "
                                 f"--force (the current contents are moved aside, not deleted)")
    aside = _move_aside(root, backup) if occupied else None
    for suffix in ("", "-wal", "-shm"):  # a database outside the data directory: kept beside itself
        old = target_db.with_name(target_db.name + suffix)
        if old.exists():
            os.replace(old, old.with_name(f".{old.name}.before-restore"))
    staging = root / f".restoring-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for relative in sorted(manifest["files"]):
            if relative.startswith("data/"):
                (staging / relative[5:]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(backup / relative, staging / relative[5:])
        for entry in sorted(staging.iterdir()):
            os.replace(entry, root / entry.name)
        target_db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(backup / DATABASE, target_db.with_name(f".{target_db.name}.restoring"))
        os.replace(target_db.with_name(f".{target_db.name}.restoring"), target_db)  # the database last
        fsync_dir(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    connection = sqlite3.connect(target_db)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    if rows != [("ok",)]:
        raise CentralBackupError(f"the restored database fails integrity_check ({rows[0][0]})")
    os.chmod(target_db, 0o600)
    return aside
