"""A consistent copy of a live SQLite database, checked: the one step the device and central backups share."""

from __future__ import annotations

import os
from pathlib import Path


def copy_checked(source_connection, target_connection, target: Path) -> str | None:
    """Copy with SQLite's online backup API (other connections keep writing), run ``integrity_check`` on the
    copy and make it private (0600). Returns None when the copy is sound, else the first integrity problem.
    Both connections are closed."""
    try:
        try:
            source_connection.backup(target_connection)
            rows = target_connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            target_connection.close()
    finally:
        source_connection.close()
    os.chmod(target, 0o600)
    return None if rows == [("ok",)] else str(rows[0][0])
