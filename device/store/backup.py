"""Local backups of the data directory: create (with rotation), list, verify and restore.

A backup is one directory ``allscope-backup-<UTC time>/`` under the backup directory::

    allscope.db        the database, copied with SQLite's online backup API (consistent while the
                       device service keeps writing; encrypted with the same key when the data is)
    images/… crops/…   every other file of the data directory, hard-linked when the backup directory is
                       on the same file system (stored files are never changed in place: DataDir
                       replaces them by rename, so a link is a snapshot), copied otherwise
    manifest.json      size and SHA-256 of every file, written last

It is built under a temporary name and renamed into place, so a backup directory without the temporary
prefix is always complete. Restore verifies every hash before it touches the target, refuses a data
directory in use (the service must be stopped) and, unless ``force``, a non-empty one; with ``force`` the
old contents are moved aside into ``.before-restore-<time>/`` inside the data directory, never deleted.
After the restore the database must pass ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from device.errors import AllscopeError
from device.store import atrest
from device.store import manifest as backup_manifest
from device.store.atomic import fsync_dir, write_atomic
from device.store.datadir import DataDir
from device.store.online_copy import copy_checked

PREFIX = "allscope-backup-"
TEMP_PREFIX = ".partial-"
MANIFEST = backup_manifest.MANIFEST
DATABASE = "allscope.db"
FORMAT = 1


class BackupError(AllscopeError):
    """A backup that cannot be made, trusted or restored; one line."""


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    created_at: str
    files: int
    bytes: int
    encrypted: bool

    @property
    def name(self) -> str:
        return self.path.name


# --- create --------------------------------------------------------------------------------------------------
def default_backup_dir(data: DataDir) -> Path:
    """``backups/`` in the data directory (writable by the sandboxed service; itself never backed up).

    Better: ``storage.backup_dir`` on another disk or a USB stick, which survives the SD card.
    """
    return data.root / "backups"


def create_backup(data: DataDir, to: Path | None = None, keep: int | None = None,
                  now: dt.datetime | None = None) -> Path:
    """Make one complete backup of ``data`` under ``to``; then keep only the ``keep`` newest. Returns its path."""
    to = Path(to or default_backup_dir(data)).expanduser().resolve()
    if to == data.root:
        raise BackupError(f"backup directory {to} is the data directory itself: choose another")
    if not data.database.is_file():
        raise BackupError(f"no database at {data.database}: nothing to back up")
    to.mkdir(parents=True, exist_ok=True)
    _remove_partials(to)
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    final = to / f"{PREFIX}{stamp}"
    if final.exists():
        raise BackupError(f"{final} already exists")
    partial = to / f"{TEMP_PREFIX}{final.name}"
    partial.mkdir()
    try:
        previous = _latest_manifest(to)
        files = {DATABASE: _copy_database(data, partial / DATABASE)}
        for relative in _data_files(data.root, skip=to):
            files[relative] = _link_or_copy(data.root / relative, partial / relative, relative, previous)
        manifest = {"format": FORMAT, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "source": str(data.root), "encrypted": atrest.is_encrypted(data.root), "files": files}
        write_atomic(partial / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), mode=0o600)
        os.replace(partial, final)
        fsync_dir(to)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if keep:
        rotate(to, keep)
    return final


def _data_files(root: Path, skip: Path) -> list[str]:
    """Relative paths of the data directory's files to back up: all but the live database, temp files and
    the backup directory ``skip``."""
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and Path(directory, d) != skip)
        for name in sorted(names):
            if name.startswith(".") or name.startswith(DATABASE):  # temp files; db, -wal, -shm, .bak-vN
                continue
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def _copy_database(data: DataDir, target: Path) -> dict:
    """SQLite's online backup API: a consistent copy while other connections keep writing (same key)."""
    problem = copy_checked(atrest.connect(data.database, root=data.root), atrest.connect(target, root=data.root),
                           target)
    if problem:
        raise BackupError(f"the copy of {data.database} fails integrity_check ({problem}): run allscope doctor")
    return _describe(target)


def _link_or_copy(source: Path, target: Path, relative: str, previous: dict) -> dict:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)
        return _describe(target)
    # A hard link to the very file the previous backup linked holds the same bytes: reuse its hash.
    old = previous.get("files", {}).get(relative)
    old_path = previous.get("path")
    if old and old_path is not None:
        try:
            if os.path.samefile(old_path / relative, target):
                return old
        except OSError:
            pass
    return _describe(target)


_describe = backup_manifest.describe


def _latest_manifest(to: Path) -> dict:
    for path in reversed(_backup_dirs(to)):
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        return dict(manifest, path=path)
    return {}


def _remove_partials(to: Path) -> None:
    """Leftovers of a backup that was interrupted (power cut): never complete, never listed."""
    for path in to.glob(f"{TEMP_PREFIX}{PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)



# --- list, rotate, verify ------------------------------------------------------------------------------------
def _backup_dirs(to: Path) -> list[Path]:
    """Complete backups, oldest first (the names sort by time)."""
    if not Path(to).is_dir():
        return []
    return sorted(p for p in Path(to).iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / MANIFEST).is_file())


def list_backups(to: Path) -> list[BackupInfo]:
    found = []
    for path in _backup_dirs(to):
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            files = manifest["files"]
            found.append(BackupInfo(path, manifest.get("created_at", ""), len(files),
                                    sum(int(f["size"]) for f in files.values()), bool(manifest.get("encrypted"))))
        except (OSError, ValueError, KeyError, TypeError):
            found.append(BackupInfo(path, "unreadable manifest", 0, 0, False))
    return found


def rotate(to: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete backups; returns the deleted ones."""
    if keep < 1:
        raise BackupError(f"backup_keep must be at least 1 (got {keep})")
    old = _backup_dirs(to)[:-keep]
    for path in old:
        shutil.rmtree(path)
    return old


def verify(backup: Path) -> dict:
    """The manifest, after checking that every file it lists is there with its size and hash; BackupError if not."""
    return backup_manifest.verify(backup, BackupError, "backup", DATABASE, FORMAT)


# --- restore -------------------------------------------------------------------------------------------------
def in_use(database: Path) -> bool:
    """True when another process has the database open (the device service, the sync agent)."""
    if not database.exists():
        return False
    try:
        connection = atrest.connect(database, timeout=0)
    except atrest.AtRestError:
        return False  # not openable with this key: nothing of ours has it open either
    try:
        connection.execute("PRAGMA locking_mode=EXCLUSIVE")
        connection.execute("BEGIN EXCLUSIVE")
        connection.execute("ROLLBACK")
        return False
    except Exception as error:  # noqa: BLE001 - sqlite3 and sqlcipher3 have their own exception classes
        return "locked" in str(error) or "busy" in str(error)
    finally:
        connection.close()


def restore_backup(backup: Path, data_dir: Path, force: bool = False) -> Path | None:
    """Restore ``backup`` into ``data_dir``; returns where the old contents were moved (with ``force``), or None."""
    backup = Path(backup).expanduser().resolve()
    manifest = verify(backup)
    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    if in_use(root / DATABASE):
        raise BackupError(f"the database in {root} is in use: stop allscope-device and allscope-sync first")
    # Not moved aside: dot entries (earlier restores, temp files) and a folder holding the backup itself.
    existing = [p for p in root.iterdir() if not p.name.startswith(".") and p != backup and p not in backup.parents]
    aside = None
    if existing:
        if not force:
            raise BackupError(f"{root} is not empty: restore into an empty directory, or add --force "
                              f"(the current contents are moved aside, not deleted)")
        stamp = dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
        aside = root / f".before-restore-{stamp}"
        serial = 1
        while aside.exists():  # two restores within one second
            serial += 1
            aside = root / f".before-restore-{stamp}-{serial}"
        aside.mkdir()
        for path in existing:
            os.replace(path, aside / path.name)
    staging = root / f".restoring-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for relative in sorted(manifest["files"]):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(backup / relative, target)
        # Files first, the database last: a crash mid-restore leaves no database naming missing files.
        for entry in sorted(staging.iterdir(), key=lambda p: p.name == DATABASE):
            os.replace(entry, root / entry.name)
        fsync_dir(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atrest.forget(root)
    connection = atrest.connect(root / DATABASE)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    if rows != [("ok",)]:
        raise BackupError(f"the restored database fails integrity_check ({rows[0][0]})")
    rebase_sync_versions(root)
    return aside


# After a restore every sync version jumps this far above the highest one known, so that no change made after
# the restore reuses a (record, version) pair that the central may already hold from the lost changes; plus
# REBASE_PER_DAY for each day since 2024, so that the same backup restored twice (the copy moved aside by the
# first restore lost too) on different days numbers on from different bases. Versions stay far below 2^31
# (the central's version column may be a 32-bit integer on PostgreSQL).
REBASE_GAP = 100_000
REBASE_PER_DAY = 10_000
_REBASE_EPOCH = dt.date(2024, 1, 1)


def _highest_version(database: Path, root: Path | None = None) -> int:
    connection = atrest.connect(database, root)
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        highest = 0
        for table in ("sync_version", "outbox"):
            if table in tables:
                highest = max(highest, connection.execute(f"SELECT coalesce(max(version), 0) FROM {table}")
                              .fetchone()[0])
        return highest
    finally:
        connection.close()


def rebase_sync_versions(root: Path) -> int | None:
    """Re-base the sync versions of a restored data directory; returns the new base (None: no sync tables).

    A backup is older than the central's copy: the changes made after it were sent, then lost with the disk.
    Numbering on from the backup's versions would give the next change of a record a version the central
    already holds with other content (replay_conflict), and it would stay in the outbox for ever. So every
    record's version is set to one base above everything known here: the restored database and whatever an
    earlier restore moved aside (``.before-restore-*``), plus REBASE_GAP (and REBASE_PER_DAY a day) for the
    changes nobody here saw.
    Entries already in the restored outbox keep their versions (the central has them with the same content,
    or not at all).
    """
    root = Path(root)
    database = root / DATABASE
    highest = _highest_version(database)
    for older in sorted(root.glob(".before-restore-*/" + DATABASE)):
        try:
            highest = max(highest, _highest_version(older, older.parent))
        except Exception:  # noqa: BLE001 - an unreadable old copy (other key, damaged) only gives no figure
            continue
    connection = atrest.connect(database)
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "sync_version" not in tables:
            return None
        days = max(0, (dt.datetime.now(dt.timezone.utc).date() - _REBASE_EPOCH).days)
        base = highest + REBASE_GAP + REBASE_PER_DAY * days
        with connection:
            connection.execute("UPDATE sync_version SET version = ?", (base,))
            if "sync_state" in tables:
                connection.execute("INSERT OR REPLACE INTO sync_state (key, value, updated_at) VALUES "
                                   "('restored_version_base', ?, ?)",
                                   (str(base), dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")))
        return base
    finally:
        connection.close()
