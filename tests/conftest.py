"""Shared fixtures: where the real microscopy data lives, and skipping without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_conversion.data import find_shared_data

pytest_plugins = ["sync_fixtures", "browser_kit"]  # browser_kit: the `browser` fixture (real chromium)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a clear reason when it is absent."""
    path = find_shared_data()
    if path is None:
        pytest.skip("real microscopy data not found (set ALLSCOPE_DATA or place it at ../shared/data)")
    return path


# --- web UI fixtures: each test gets its own data directory and SQLite file ---------------------------

ROLE_USERS = {  # username -> roles; one account per role plus a doctor who is both admin and pathologist
    "tech": "technician",
    "path": "pathologist",
    "admin": "admin",
    "chief": "admin,pathologist",
}
TEST_PASSWORD = "microscope-42!"


# A central admin and someone who is not one (the central admin UI's tests).
CENTRAL_USERS = {"boss": "admin", "tech": "technician"}


# The device test database signs with any number of white cells (the admin setting min_white_cells, default 100):
# the review fixtures' samples hold a few cells. Tests of the minimum set it themselves (test_differential_web.py).
TEST_SETTINGS = {"min_white_cells": 0}


def _users_database(path, open_db, users: dict, settings: dict | None = None) -> Path:
    """A migrated database holding ``users`` (password TEST_PASSWORD) and stored ``settings``, checkpointed so it
    can be copied."""
    from device.services import accounts

    database = open_db(path)
    for username, roles in users.items():
        accounts.create_user(username, TEST_PASSWORD, roles, actor="test")
    if settings:
        from device.store.records import Setting

        for key, value in settings.items():
            Setting.create(key=key, value=value, updated_by="test")
    database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    database.close()
    return path


@pytest.fixture(scope="session")
def users_database(tmp_path_factory):
    """The device database with the ROLE_USERS accounts, made once (Argon2 is slow on purpose); copied per test."""
    from device.store.records import open_database

    return _users_database(tmp_path_factory.mktemp("users-db") / "allscope.db", open_database, ROLE_USERS,
                           TEST_SETTINGS)


@pytest.fixture(scope="session")
def central_users_db(tmp_path_factory):
    """The central database with the CENTRAL_USERS accounts, made once; copied per test."""
    from sync.central.db import open_central_database

    return _users_database(tmp_path_factory.mktemp("central-users") / "central.db", open_central_database,
                           CENTRAL_USERS)


@pytest.fixture
def app(tmp_path, users_database):
    """A web UI app with its own data directory (a copy of the users database); no background threads."""
    import shutil

    from webui.app import create_app

    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copyfile(users_database, data_dir / "allscope.db")
    application = create_app(data_dir=data_dir, start_workers=False)
    application.testing = True
    yield application
    application.appliance.stop()


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_from(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html) or \
        re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


class Auth:
    """Log a test client in and out through the real login form (CSRF included)."""

    def __init__(self, client):
        self.client = client

    def csrf(self, path: str = "/login") -> str:
        return csrf_from(self.client.get(path).get_data(as_text=True))

    def login(self, username: str, password: str = TEST_PASSWORD, next_url: str = ""):
        token = self.csrf("/login")
        return self.client.post("/login", data={"csrf_token": token, "username": username,
                                                "password": password, "next": next_url})

    def logout(self):
        token = csrf_from(self.client.get("/").get_data(as_text=True))
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def auth(client):
    return Auth(client)


# --- a real server process on loopback (browser tests, web benchmark) -----------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(tmp_path):
    """`allscope serve` as a real subprocess (waitress) on a free loopback port, with one user per role.

    Polls until the login page answers, checks the process is alive, and always terminates it.
    Yields the base URL; the data directory is ``tmp_path / "var"``.
    """
    import subprocess
    import sys

    data_dir = tmp_path / "var"
    for username, roles in ROLE_USERS.items():
        subprocess.run([sys.executable, "-m", "device.cli", "users", "create", username, "--role", roles,
                        "--data-dir", str(data_dir)], input=TEST_PASSWORD + "\n", text=True, check=True,
                       capture_output=True, cwd=REPO_ROOT)
    yield from serve(data_dir, tmp_path / "server.log")


def serve(data_dir: Path, log_path: Path):
    """Run `allscope serve` on ``data_dir`` on a free loopback port; yields the base URL once the login page
    answers, and always stops the process (a generator for fixtures: ``yield from serve(...)``)."""
    import os
    import subprocess
    import sys

    port = free_port()
    env = dict(os.environ, ALLSCOPE_DATA_DIR=str(data_dir))
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "device.cli", "serve", "--data-dir", str(data_dir),
                                    "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log,
                                   cwd=REPO_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base + "/login", log_path)
        yield base
    finally:
        stop_process(process)


def wait_until_serving(process, url: str, log_path, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or never answers."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"allscope serve exited early:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"allscope serve did not answer within {timeout:.0f} s:\n{log_path.read_text()}")
        time.sleep(0.2)


def stop_process(process, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout`` seconds."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pytest_terminal_summary(terminalreporter):
    """Print the figures the hardening and fault tests reported (see tests/figures.py)."""
    from figures import terminal_summary

    terminal_summary(terminalreporter)
