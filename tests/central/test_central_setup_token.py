"""Issue 13, item 13: the central's first set-up page needs the one-time token printed on the server."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT, TEST_PASSWORD, csrf_from
from figures import report

from sync.central import setup_token


def _setup_app(tmp_path):
    from sync.central.web.app import create_central_app

    app = create_central_app(tmp_path / "c.db", tmp_path / "data")
    app.testing = True
    return app


def _post(client, **fields):
    token = csrf_from(client.get("/setup").get_data(as_text=True))
    data = {"csrf_token": token, "username": "mallory", "password": TEST_PASSWORD, "confirm": TEST_PASSWORD}
    data.update(fields)
    return client.post("/setup", data=data)


def test_setup_without_the_servers_token_creates_no_admin(tmp_path):
    from device.store.records import User

    app = _setup_app(tmp_path)
    client = app.test_client()
    assert 'name="setup_token"' in client.get("/setup").get_data(as_text=True)
    missing = _post(client)
    assert missing.status_code == 400 and "Enter the set-up token." in missing.get_data(as_text=True)
    none_yet = _post(client, setup_token="guess")
    assert none_yet.status_code == 400
    assert ("No set-up token exists yet: run allscope central setup-token on the server, then enter it here."
            in none_yet.get_data(as_text=True))
    real = setup_token.issue(app.central.data.root)
    tried = 0
    for guess in ["guess", real[:-1], real + "x", real.upper() if real.upper() != real else real.lower(), " "]:
        wrong = _post(client, setup_token=guess)
        assert wrong.status_code == 400, guess
        assert "Wrong set-up token: run allscope central setup-token on the server to see it." in \
            wrong.get_data(as_text=True) or "Enter the set-up token." in wrong.get_data(as_text=True)
        tried += 1
    with app.app_context():
        assert User.select().count() == 0
    assert _post(client, setup_token=f"  {real}\n").status_code == 302  # pasted with blanks: still the token
    with app.app_context():
        assert [u.username for u in User.select()] == ["mallory"]
    report("set-up attempts without the server's token refused", tried + 2)
    app.central.database.close()


def _cli(*args, data_dir):
    return subprocess.run([sys.executable, "-m", "device.cli", "central", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=dict(os.environ), input=TEST_PASSWORD + "\n",
                          timeout=120)


def test_setup_token_command_prints_one_private_token_until_an_account_exists(tmp_path):
    data_dir = tmp_path / "central"
    first = _cli("setup-token", data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert len(token) >= 20 and setup_token.current(data_dir) == token
    assert (data_dir / "setup-token").stat().st_mode & 0o777 == 0o600
    assert _cli("setup-token", data_dir=data_dir).stdout.strip() == token  # the same until used
    assert _cli("users", "create", "root", data_dir=data_dir).returncode == 0
    closed = _cli("setup-token", data_dir=data_dir)
    assert closed.returncode == 1
    assert closed.stdout.strip() == ("set-up is closed: an account exists (add administrators with allscope central "
                                     "users create)")
    assert not (data_dir / "setup-token").exists()
