"""Storage options of this process, and (when switched on) patient data encrypted at rest.

    atrest.configure(synchronous="full")     # once at start-up, from the config's [storage]
    atrest.database_for(path, pragmas)       # the peewee database open_database binds
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import peewee as pw

from device.errors import AllscopeError

SYNCHRONOUS = ("full", "normal")


class AtRestError(AllscopeError):
    """The data directory cannot be opened as configured (missing or wrong key, …); one line."""


@dataclass(frozen=True)
class StorageOptions:
    synchronous: str = "full"


_options = StorageOptions()


def options() -> StorageOptions:
    return _options


def configure(**changes) -> StorageOptions:
    """Set this process's storage options (the config's ``[storage]`` section); returns the new options."""
    global _options
    if "synchronous" in changes and str(changes["synchronous"]).lower() not in SYNCHRONOUS:
        raise AtRestError(f"storage.synchronous must be one of {', '.join(SYNCHRONOUS)} "
                          f"(got {changes['synchronous']!r})")
    _options = replace(_options, **changes)
    return _options


def database_for(path: Path, pragmas: dict) -> pw.SqliteDatabase:
    """The peewee database for ``path``."""
    return pw.SqliteDatabase(str(path), pragmas=pragmas)
