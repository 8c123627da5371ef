"""A throw-away PostgreSQL server for ``allscope bench fleet``: initdb in a temporary directory, one database.

    with TempPostgres() as server:
        url = server.url   # postgresql://allscope@127.0.0.1:PORT/allscope

Uses the Debian server binaries (``/usr/lib/postgresql/<N>/bin``). initdb and postgres refuse to
run as root, so as root they run as the ``postgres`` (else ``nobody``) user. Durability settings
are PostgreSQL's defaults (fsync on): the figures are what a real server on this disk gives.
:func:`unavailable` says in one line why there is none.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from device.errors import AllscopeError
from sync.fleet.broker import free_port


def _bindir() -> Path | None:
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]),
                            reverse=True):
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return Path(directory)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def unavailable() -> str | None:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "needs psycopg2 (pip install 'allscope[central]')"
    if _bindir() is None:
        return "needs the PostgreSQL server binaries (Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and _user() is None:
        return "running as root without a postgres or nobody user to run PostgreSQL as"
    return None


class TempPostgres:
    def __init__(self, max_connections: int = 100):
        self.bindir, self.user = _bindir(), _user()
        self.root = Path(tempfile.mkdtemp(prefix="allscope-bench-pg-"))
        self.port = free_port()
        self.max_connections = max_connections
        self.process: subprocess.Popen | None = None
        self.url = f"postgresql://allscope@127.0.0.1:{self.port}/allscope"

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> "TempPostgres":
        sockets = self.root / "run"
        sockets.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        init = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", "allscope",
                               "-A", "trust", "-E", "UTF8", "--locale=C"], capture_output=True, text=True,
                              timeout=180, cwd=self.root, **self._as_user())
        if init.returncode != 0:
            raise AllscopeError(f"initdb failed: {(init.stderr or init.stdout).strip()[-200:]}")
        with open(self.root / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port), "-k",
                 str(sockets), "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={self.max_connections}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root, **self._as_user())
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise AllscopeError(f"postgres exited at start: {(self.root / 'postgres.log').read_text()[-200:]}")
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="allscope", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise AllscopeError("postgres did not accept connections within 60 s") from None
                time.sleep(0.1)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE allscope")
        connection.close()
        return self

    def create_database(self, name: str) -> str:
        """A fresh database on this server; its URL."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="allscope", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return f"postgresql://allscope@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "TempPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
