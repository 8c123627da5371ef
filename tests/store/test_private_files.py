"""Issue 13, item 13: outside systemd (umask 022) the data directory was created 0755 and the database 0644,
so every local user could read patient records. Now: directories created 0700, databases (and their WAL and
shared-memory files) 0600, an existing world-readable database tightened when opened."""

from __future__ import annotations

import os
import stat

import pytest
from figures import report


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_device_data_directory_and_database_are_private(tmp_path, umask_022):
    from device.store.datadir import DataDir
    from device.store.records import open_database

    data = DataDir.resolve(tmp_path / "new" / "var")
    assert _mode(data.root) == 0o700
    database = open_database(data.database)
    database.execute_sql("CREATE TABLE IF NOT EXISTS t (x)")
    database.execute_sql("INSERT INTO t VALUES (1)")
    files = [data.database, f"{data.database}-wal", f"{data.database}-shm"]
    assert {str(p): _mode(p) for p in files if os.path.exists(p)} == {str(p): 0o600 for p in files
                                                                      if os.path.exists(p)}
    assert os.path.exists(f"{data.database}-wal")
    database.close()
    report("data files checked private (device and central)", len(files) + 1)


def test_an_existing_world_readable_database_is_tightened_when_opened(tmp_path, umask_022):
    from device.store.records import open_database

    path = tmp_path / "allscope.db"
    open_database(path).close()
    os.chmod(path, 0o644)
    open_database(path).close()
    assert _mode(path) == 0o600


def test_central_data_directory_and_database_are_private(tmp_path, umask_022):
    from sync.central.db import open_central_database
    from sync.central.web.app import resolve_central_db, resolve_data_dir

    data = resolve_data_dir(tmp_path / "central")
    assert _mode(data.root) == 0o700
    database = open_central_database(resolve_central_db(None, data))
    database.close()
    assert _mode(data.root / "central.db") == 0o600
    report("data files checked private (device and central)", 2)


def test_an_existing_directory_keeps_the_mode_its_owner_chose(tmp_path, umask_022):
    from device.store.datadir import DataDir

    chosen = tmp_path / "shared"
    chosen.mkdir(mode=0o750)
    os.chmod(chosen, 0o750)
    DataDir.resolve(chosen)
    assert _mode(chosen) == 0o750
