"""Opening the central database: SQLite by path, PostgreSQL by URL, with numbered migrations.

    open_central_database("var-central/central.db")
    open_central_database("postgresql://allscope@127.0.0.1:5432/allscope")
"""

from __future__ import annotations

from pathlib import Path

import peewee as pw

from device.errors import AllscopeError
from device.store.atomic import private_database_file, private_dir
from device.store.records import db_proxy


def _connect(url_or_path: str | Path) -> pw.Database:
    text = str(url_or_path)
    if "://" in text:
        from playhouse.db_url import connect

        try:
            return connect(text)
        except (RuntimeError, ValueError) as error:
            raise AllscopeError(f"central database URL {text.split('@')[-1]!r}: {error}") from None
    path = Path(text)
    private_dir(path.parent)
    return pw.SqliteDatabase(str(path), pragmas={"journal_mode": "wal", "foreign_keys": 1,
                                                 "synchronous": "normal", "busy_timeout": 10_000})


def open_central_database(url_or_path: str | Path) -> pw.Database:
    """Bind the central models (and the shared account/audit models) to the database and migrate it."""
    from sync.central.migrations import migrate

    database = _connect(url_or_path)
    try:
        db_proxy.initialize(database)
        database.connect(reuse_if_open=True)
    except pw.ImproperlyConfigured:  # peewee found no driver for the URL's scheme
        raise AllscopeError(f"no database driver for {str(url_or_path).split('://')[0]}:// URLs: install "
                            f"allscope[central] (pip install 'allscope[central]', or install.sh --role central)"
                            ) from None
    except pw.OperationalError as error:
        raise AllscopeError(f"cannot open the central database: {' '.join(str(error).split())}") from None
    migrate(database)
    if isinstance(database, pw.SqliteDatabase):
        private_database_file(database.database)  # 0600 (and its -wal, -shm), whatever the umask
    return database
