"""A throw-away PostgreSQL server for ``allscope bench fleet`` and the tests: initdb in a temporary directory.

    with TempPostgres() as server:
        url = server.create_database("fleet")   # postgresql://allscope@127.0.0.1:PORT/fleet

Uses the Debian server binaries (``/usr/lib/postgresql/<N>/bin``). initdb and postgres refuse to
run as root, so as root they run as the ``postgres`` (else ``nobody``) user. Durability settings
are PostgreSQL's defaults (fsync on) unless ``durable=False``: a benchmark's figures are what a real server on
this disk gives.
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
    """``superuser``: the role initdb creates ("allscope"; the admin walkthrough's test: "postgres", as Debian's).
    ``durable``: PostgreSQL's default durability (benchmarks); False turns fsync and full-page writes off (tests).
    """

    def __init__(self, max_connections: int = 100, *, superuser: str = "allscope", durable: bool = True):
        self.bindir, self.user = _bindir(), _user()
        self.superuser, self.durable = superuser, durable
        self.root = Path(tempfile.mkdtemp(prefix="allscope-pg-"))
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.max_connections = max_connections
        self.process: subprocess.Popen | None = None
        self.databases = 0

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
        fast = [] if self.durable else ["--no-sync"]
        init = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", self.superuser,
                               "-A", "trust", "-E", "UTF8", "--locale=C", *fast], capture_output=True, text=True,
                              timeout=180, cwd=self.root, **self._as_user())
        if init.returncode != 0:
            raise AllscopeError(f"initdb failed: {(init.stderr or init.stdout).strip()[-200:]}")
        fast = [] if self.durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port), "-k",
                 str(sockets), "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={self.max_connections}",
                 *fast], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                **self._as_user())
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise AllscopeError(f"postgres exited at start: {self.log.read_text(errors='replace')[-200:]}")
            try:
                psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname="postgres").close()
                return self
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise AllscopeError("postgres did not accept connections within 60 s") from None
                time.sleep(0.1)

    def create_database(self, name: str | None = None) -> str:
        """A fresh database on this server (``name``, else the next of allscope_1, allscope_2, ...); its URL."""
        import psycopg2

        self.databases += 1
        name = name or f"allscope_{self.databases}"
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{name}"

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
