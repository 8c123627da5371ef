"""A backup's manifest: each file's size and SHA-256, and the check that a backup still holds them.

Shared by the device's backups (device/store/backup.py) and the central's (sync/central/backup.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"


def describe(path: Path) -> dict:
    """{"sha256", "size"} of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def verify(backup: Path, error: type[Exception], kind: str, database: str, version: int) -> dict:
    """The manifest, once every file it lists is in ``backup`` with its size and hash; ``error`` (one line) if not.

    ``kind`` names the backup in messages ("backup", "central backup"); ``database`` must be listed and the
    manifest's "format" must be ``version``; no listed path may leave the backup.
    """
    backup = Path(backup).expanduser().resolve()
    try:
        manifest = json.loads((backup / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != version or database not in files:
            raise ValueError("unknown format")
    except FileNotFoundError:
        raise error(f"{backup} is not a {kind} (no {MANIFEST})") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise error(f"{backup}: {MANIFEST} is damaged or of an unknown format") from None
    for relative, expected in sorted(files.items()):
        path = (backup / relative).resolve()
        if backup not in path.parents:
            raise error(f"{backup}: {MANIFEST} names a path outside the backup: {relative}")
        if not path.is_file():
            raise error(f"{backup} is damaged: {relative} is missing")
        if path.stat().st_size != expected.get("size") or describe(path)["sha256"] != expected.get("sha256"):
            raise error(f"{backup} is damaged: {relative} does not match its hash in {MANIFEST}")
    return manifest
