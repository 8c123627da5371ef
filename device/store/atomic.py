"""Crash-safe file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a partial one.

    Temp file in the same directory (os.replace is only atomic within one
    file system), fsync before the rename, fsync of the directory after it so
    the rename survives a power cut (the appliance is often just unplugged).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    # mkstemp creates 0600; the device service may run as another user. ``mode`` forces one (secrets: 0600).
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the entries of ``directory`` (a rename, a new file) durable across a power cut."""
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) if missing; a directory this call creates is 0700, whatever the umask.

    Under systemd the unit's StateDirectory= already makes the data directory private; run by hand (a demo, a
    workstation, the central server outside systemd), mkdir would give 0755 and every local user could read
    the patient records. An existing directory is left as it is: its owner chose its mode.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for created in missing[:1]:  # the leaf: parents (e.g. a new /srv) keep the usual mode
        os.chmod(created, 0o700)
    return path


def private_database_file(path: str | os.PathLike) -> Path:
    """Make an SQLite file and its -wal and -shm files 0600 when group or others can read them (call once the
    database is open: SQLite creates them with the umask's mode). Inside a directory made by private_dir
    nobody else could reach them meanwhile."""
    path = Path(path)
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if name.is_file() and name.stat().st_mode & 0o077 and name.stat().st_uid == os.geteuid():
                os.chmod(name, 0o600)
        except OSError:
            pass  # not ours to change: SQLite still opens it
    return path
