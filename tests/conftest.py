"""Shared fixtures: where the real microscopy data lives, and skipping without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_conversion.data import find_shared_data

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


@pytest.fixture
def app(tmp_path):
    """A web UI app with its own data directory; no background threads unless a test starts them."""
    from webui import create_app

    application = create_app(tmp_path / "var", {"ALLSCOPE_START_WORKERS": False, "TESTING": True})
    with application.app_context():
        from device import accounts

        for username, roles in ROLE_USERS.items():
            accounts.create_user(username, TEST_PASSWORD, roles, actor="test")
    yield application
    stop = application.extensions.get("allscope_stop")
    if callable(stop):
        stop()


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
